//! X.509-SVIDs as the Workload API hands them over: concatenated DER certificates, a
//! PKCS#8 key, and the trust bundle's roots.

use std::time::{Duration, UNIX_EPOCH};

use steeple::svid::{split_der_certificates, validate_svid};

/// The SPIFFE ID the seeds are issued for.
pub const SPIFFE_ID: &str = "spiffe://example.org/workload";
/// A fixed "now" (2030-01-01) inside the seeds' validity, so a run is reproducible.
pub const NOW_UNIX_SECS: u64 = 1_893_456_000;

/// How far one input got.
#[derive(Debug, PartialEq, Eq)]
pub enum SvidOutcome {
    /// Too short for the framing.
    Unframed,
    /// `validate_svid` refused it.
    Refused,
    /// A valid SVID.
    Valid,
}

/// `data` is `u16 BE key length ‖ key ‖ u16 BE chain length ‖ chain ‖ roots`, the roots
/// being concatenated DER (or, when they do not split, one arbitrary root). The whole
/// input is also split as concatenated DER.
pub fn run(data: &[u8]) -> SvidOutcome {
    let _ = split_der_certificates(data);
    let Some((key, rest)) = take_prefixed(data) else {
        return SvidOutcome::Unframed;
    };
    let Some((chain, roots)) = take_prefixed(rest) else {
        return SvidOutcome::Unframed;
    };
    let roots = match split_der_certificates(roots) {
        Ok(split) => split,
        Err(_) => vec![roots.to_vec()],
    };
    let now = UNIX_EPOCH + Duration::from_secs(NOW_UNIX_SECS);
    match validate_svid(SPIFFE_ID, chain, key, &roots, now) {
        Ok(cert) => {
            assert_eq!(cert.spiffe_id, SPIFFE_ID);
            assert_eq!(
                cert.chain_der.concat(),
                chain,
                "the chain was not kept as is"
            );
            assert_eq!(cert.key_pkcs8.expose(), key);
            assert!(cert.not_after >= now, "accepted an expired leaf");
            SvidOutcome::Valid
        }
        Err(error) => {
            let _ = error.to_string();
            SvidOutcome::Refused
        }
    }
}

/// Splits a `u16` big-endian length-prefixed field off `data`.
pub fn take_prefixed(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (len <= rest.len()).then(|| rest.split_at(len))
}
