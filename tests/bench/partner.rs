//! The partner.org bundle the SDS benchmarks rotate: a fresh self-signed CA set as a
//! federated bundle with `spire-server bundle set`, and the fingerprint streams compare
//! what they receive with.

use std::time::Instant;

use steeple_e2e::Spire;
use steeple_e2e::bench_support::pem_fingerprint;

/// The federated trust domain whose bundle the benchmarks rotate.
pub const PARTNER_TRUST_DOMAIN: &str = "partner.org";

/// The partner.org bundle currently set on a SPIRE server.
#[derive(Debug)]
pub struct PartnerBundle {
    fingerprint: u64,
}

impl PartnerBundle {
    /// Sets a fresh partner.org CA on `spire`.
    pub fn set(spire: &Spire) -> anyhow::Result<Self> {
        let mut bundle = Self { fingerprint: 0 };
        bundle.rotate(spire)?;
        Ok(bundle)
    }

    /// Sets a new partner.org CA and returns when `bundle set` returned.
    pub fn rotate(&mut self, spire: &Spire) -> anyhow::Result<Instant> {
        let pem = partner_ca_pem()?;
        spire.set_federated_bundle(PARTNER_TRUST_DOMAIN, &pem)?;
        let returned = Instant::now();
        self.fingerprint = pem_fingerprint(pem.as_bytes());
        Ok(returned)
    }

    /// Fingerprint of the bundle currently set.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// A fresh self-signed CA for partner.org, as PEM.
fn partner_ca_pem() -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let id = format!("spiffe://{PARTNER_TRUST_DOMAIN}");
    params.subject_alt_names = vec![rcgen::SanType::URI(id.as_str().try_into()?)];
    Ok(params.self_signed(&key)?.pem())
}
