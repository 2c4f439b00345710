//! The dev trust domain's CA: a self-signed P-256 root that issues X.509-SVIDs.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use steeple_plugin_api::SecretBytes;

use super::DevError;

/// How long the dev CA is valid; it lives as long as the process anyway.
const CA_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Backdating absorbs small clock differences between peers.
const BACKDATE: Duration = Duration::from_secs(30);

/// An X.509-SVID with its key.
#[derive(Debug, Clone)]
pub struct IssuedSvid {
    /// The SPIFFE ID in the URI SAN.
    pub spiffe_id: String,
    /// Leaf DER.
    pub leaf_der: Vec<u8>,
    /// PKCS#8 DER private key.
    pub key_pkcs8: SecretBytes,
}

/// The dev CA.
pub struct DevCa {
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

fn uri(text: &str) -> Result<SanType, DevError> {
    let uri = text
        .try_into()
        .map_err(|_| DevError::InvalidId(text.to_owned()))?;
    Ok(SanType::URI(uri))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lifetime).into();
}

impl DevCa {
    /// A fresh CA for `trust_domain` (no scheme).
    pub fn new(trust_domain: &str) -> Result<Self, DevError> {
        let key = KeyPair::generate().map_err(DevError::Crypto)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(DevError::Crypto)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Steeple dev");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{trust_domain} dev CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![uri(&format!("spiffe://{trust_domain}"))?];
        validity(&mut params, CA_LIFETIME);
        let cert = params.self_signed(&key).map_err(DevError::Crypto)?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Issues an X.509-SVID for `spiffe_id` living `ttl`, with a fresh key.
    pub fn issue(&self, spiffe_id: &str, ttl: Duration) -> Result<IssuedSvid, DevError> {
        let key = KeyPair::generate().map_err(DevError::Crypto)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(DevError::Crypto)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Steeple dev");
        params.subject_alt_names = vec![uri(spiffe_id)?];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        validity(&mut params, ttl);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(DevError::Crypto)?;
        Ok(IssuedSvid {
            spiffe_id: spiffe_id.to_owned(),
            leaf_der: cert.der().to_vec(),
            key_pkcs8: SecretBytes::new(key.serialize_der()),
        })
    }
}
