//! The dev trust domain's CA: a self-signed P-256 root that issues X.509-SVIDs.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use steeple_plugin_api::SecretBytes;

use super::DevError;

/// How long the dev CA is valid. It lives only as long as the process, but a dev agent
/// left running over a weekend must not find its root expired under it.
pub(super) const CA_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The CA is backdated so peers whose clocks lag a little still accept it.
const CA_BACKDATE: Duration = Duration::from_secs(60);
/// Leaves are backdated for the same reason, a little less so they sit inside the CA.
const LEAF_BACKDATE: Duration = Duration::from_secs(30);
/// Organisation name on every dev certificate, so nobody mistakes one for a real one.
const ORGANIZATION: &str = "Steeple dev (never for production)";

/// An X.509-SVID with its private key.
#[derive(Debug, Clone)]
pub(super) struct IssuedSvid {
    /// The SPIFFE ID in the leaf's only URI SAN.
    pub spiffe_id: String,
    /// The leaf certificate, DER (no intermediates: the root signs leaves directly).
    pub leaf_der: Vec<u8>,
    /// The leaf's private key, PKCS#8 DER.
    pub key_pkcs8: SecretBytes,
}

/// The dev CA: its certificate and the key that signs leaves.
pub(super) struct DevCa {
    cert_der: Vec<u8>,
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("cert_der_len", &self.cert_der.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// A fresh CA for `trust_domain` (a bare name, no scheme).
    pub fn new(trust_domain: &str) -> Result<Self, DevError> {
        let key = KeyPair::generate()?;
        let mut params = base_params();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{trust_domain} dev CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        let not_after = now.checked_add(CA_LIFETIME).ok_or(DevError::Clock)?;
        set_validity(&mut params, now, CA_BACKDATE, not_after)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Issues an X.509-SVID for `spiffe_id` valid for `ttl` (never past the CA's own
    /// expiry), with a fresh P-256 key and a random serial.
    pub fn issue(&self, spiffe_id: &str, ttl: Duration) -> Result<IssuedSvid, DevError> {
        let key = KeyPair::generate()?;
        let mut params = base_params();
        params.subject_alt_names = vec![uri_san(spiffe_id)?];
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        let not_after = now
            .checked_add(ttl)
            .ok_or(DevError::Clock)?
            .min(self.not_after);
        set_validity(&mut params, now, LEAF_BACKDATE, not_after)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedSvid {
            spiffe_id: spiffe_id.to_owned(),
            leaf_der: cert.der().to_vec(),
            key_pkcs8: SecretBytes::new(key.serialize_der()),
        })
    }
}

/// Parameters with only the dev organisation in the subject (rcgen's default adds a CN).
fn base_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params
}

fn uri_san(text: &str) -> Result<SanType, DevError> {
    let uri = text
        .try_into()
        .map_err(|_| DevError::InvalidId(text.to_owned()))?;
    Ok(SanType::URI(uri))
}

/// A positive 128-bit serial: the top bit is cleared so DER needs no sign byte, and the
/// next one set so the encoding always has its full length.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    backdate: Duration,
    not_after: SystemTime,
) -> Result<(), DevError> {
    let not_before = now.checked_sub(backdate).ok_or(DevError::Clock)?;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(())
}
