//! What consumers derive from an entry's secret, made once and kept with the entry: an
//! entry never changes (a new secret is a new entry with a new version), so neither does
//! its encoding, and every reader of the same entry and variant shares one copy. For SDS
//! that is the protobuf `Any` of each client variant, shared by all the streams sending it.

use std::fmt;
use std::sync::{Arc, OnceLock};

use steeple_plugin_api::SecretBytes;

/// Variants of one entry's encoding kept at most (SDS: with and without the SPIFFE
/// certificate validator).
const VARIANTS: usize = 2;

/// Encoded bytes shared by every reader. They may hold key material (an encoded TLS
/// certificate carries its private key), so they zeroize when the last holder drops them.
pub type Encoded = Arc<SecretBytes>;

/// One entry's encodings, each made the first time it is asked for.
#[derive(Default)]
pub struct Encodings([OnceLock<Encoded>; VARIANTS]);

impl Encodings {
    /// The encoding `variant` (below 2) of the entry, made by `encode` if it is the first
    /// time. A variant out of range is encoded anew every time, never cached.
    pub fn get_or_encode(&self, variant: usize, encode: impl FnOnce() -> SecretBytes) -> Encoded {
        match self.0.get(variant) {
            Some(slot) => slot.get_or_init(|| Arc::new(encode())).clone(),
            None => Arc::new(encode()),
        }
    }
}

impl fmt::Debug for Encodings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lengths: Vec<Option<usize>> = self.0.iter().map(|s| s.get().map(|e| e.len())).collect();
        write!(f, "Encodings(lengths {lengths:?})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_is_encoded_once_and_shared() {
        let encodings = Encodings::default();
        let mut calls = 0;
        let mut encode = |b: &[u8]| {
            calls += 1;
            SecretBytes::copy_from(b)
        };
        let first = encodings.get_or_encode(0, || encode(b"plain"));
        let again = encodings.get_or_encode(0, || encode(b"other"));
        assert!(Arc::ptr_eq(&first, &again));
        let other = encodings.get_or_encode(1, || encode(b"spiffe"));
        assert_eq!(other.expose(), b"spiffe");
        let uncached = encodings.get_or_encode(VARIANTS, || encode(b"x"));
        assert_eq!(uncached.expose(), b"x");
        assert_eq!(calls, 3);
        let printed = format!("{encodings:?}");
        assert!(!printed.contains("plain"), "{printed}");
    }
}
