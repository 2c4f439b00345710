//! Checking what the Workload API hands us before it is served: DER parsing, the SPIFFE
//! ID in the leaf, the private key matching the leaf, and the chain to the bundle.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use steeple_plugin_api::SecretBytes;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::store::Certificate;

/// Why an X.509-SVID or bundle was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// The concatenated DER did not parse as certificates.
    #[error("certificate {index} is not valid DER: {reason}")]
    BadDer {
        /// Position in the concatenated list.
        index: usize,
        /// Parser message (about structure, never key material).
        reason: String,
    },
    /// No certificate at all.
    #[error("empty certificate list")]
    Empty,
    /// The leaf's URI SAN is missing, repeated, or not the SPIFFE ID announced.
    #[error("leaf URI SAN {found:?} does not match SPIFFE ID {expected}")]
    WrongId {
        /// The announced SPIFFE ID.
        expected: String,
        /// The URI SANs found.
        found: Vec<String>,
    },
    /// The private key is not PKCS#8 or does not belong to the leaf.
    #[error("private key does not match the leaf certificate")]
    KeyMismatch,
    /// The leaf does not chain to the trust bundle (or is expired / not yet valid).
    #[error("leaf does not chain to the trust bundle: {0}")]
    Untrusted(String),
}

/// Signature algorithms SPIRE and common CAs use for SVIDs and their chains.
static VERIFICATION_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Splits concatenated DER certificates, checking each parses.
pub fn split_der_certificates(mut der: &[u8]) -> Result<Vec<Vec<u8>>, SvidError> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let index = out.len();
        let (rest, _) = X509Certificate::from_der(der).map_err(|e| SvidError::BadDer {
            index,
            reason: e.to_string(),
        })?;
        let len = der.len() - rest.len();
        out.push(der[..len].to_vec());
        der = rest;
    }
    Ok(out)
}

/// Parses and checks one X.509-SVID against the roots of its trust domain.
pub fn validate_svid(
    spiffe_id: &str,
    chain_der: &[u8],
    key_pkcs8: &[u8],
    roots_der: &[Vec<u8>],
    now: SystemTime,
) -> Result<Certificate, SvidError> {
    let chain = split_der_certificates(chain_der)?;
    let leaf_der = chain.first().ok_or(SvidError::Empty)?;
    let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(|e| SvidError::BadDer {
        index: 0,
        reason: e.to_string(),
    })?;
    let uris = uri_sans(&leaf);
    if uris.len() != 1 || uris[0] != spiffe_id {
        return Err(SvidError::WrongId {
            expected: spiffe_id.to_owned(),
            found: uris,
        });
    }
    let key = rcgen::KeyPair::try_from(key_pkcs8).map_err(|_| SvidError::KeyMismatch)?;
    if key.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
        return Err(SvidError::KeyMismatch);
    }
    verify_chain(&chain, roots_der, now)?;
    let at = |time: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(time.timestamp().max(0).unsigned_abs())
    };
    let (not_before, not_after) = (
        at(leaf.validity().not_before),
        at(leaf.validity().not_after),
    );
    Ok(Certificate {
        spiffe_id: spiffe_id.to_owned(),
        chain_der: chain,
        key_pkcs8: SecretBytes::copy_from(key_pkcs8),
        not_before,
        not_after,
    })
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

fn verify_chain(
    chain: &[Vec<u8>],
    roots_der: &[Vec<u8>],
    now: SystemTime,
) -> Result<(), SvidError> {
    let untrusted = |e: &dyn std::fmt::Debug| SvidError::Untrusted(format!("{e:?}"));
    let root_ders: Vec<CertificateDer<'_>> = roots_der
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let anchors = root_ders
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map_err(|e| untrusted(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = CertificateDer::from(chain[0].as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf).map_err(|e| untrusted(&e))?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    leaf.verify_for_usage(
        VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        UnixTime::since_unix_epoch(Duration::from_secs(secs)),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| untrusted(&e))
}

/// PEM-encodes DER blocks under `label` (e.g. `CERTIFICATE`).
pub fn pem_encode(label: &str, blocks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pem_len(label, blocks));
    pem_encode_into(&mut out, label, blocks);
    out
}

/// PEM-encodes a private key into a buffer allocated once at its final size, so no
/// unzeroized copy is left behind by a reallocation.
pub fn pem_encode_key(key_pkcs8: &SecretBytes) -> SecretBytes {
    let blocks = [key_pkcs8.expose()];
    let mut out = Vec::with_capacity(pem_len("PRIVATE KEY", &blocks));
    pem_encode_into(&mut out, "PRIVATE KEY", &blocks);
    SecretBytes::new(out)
}

fn pem_len(label: &str, blocks: &[&[u8]]) -> usize {
    blocks
        .iter()
        .map(|b| {
            let b64 = b.len().div_ceil(3) * 4;
            b64 + b64.div_ceil(64) + 2 * (label.len() + 17)
        })
        .sum()
}

fn pem_encode_into(out: &mut Vec<u8>, label: &str, blocks: &[&[u8]]) {
    use base64::Engine as _;
    const TABLE: &base64::engine::GeneralPurpose = &base64::engine::general_purpose::STANDARD;
    for block in blocks {
        out.extend_from_slice(format!("-----BEGIN {label}-----\n").as_bytes());
        for chunk in block.chunks(48) {
            let mut line = [0u8; 64];
            let n = TABLE.encode_slice(chunk, &mut line).unwrap_or(0);
            out.extend_from_slice(&line[..n]);
            out.push(b'\n');
            zeroize::Zeroize::zeroize(&mut line);
        }
        out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
    }
}

#[cfg(test)]
#[path = "svid_tests.rs"]
mod tests;
