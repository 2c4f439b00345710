//! [`SecretBytes`]: the one type plaintext and key material travel in.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Secret material (a private key, a token, a resolved plaintext).
///
/// The buffer is allocated once at its final size and zeroized on drop; `Debug` and
/// `Display` print only its length, so a secret cannot reach a log line by accident.
/// Equality is by content so the store can tell an unchanged secret from a new one.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Box<[u8]>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the vector's spare capacity is dropped unread.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes.into_boxed_slice())
    }

    /// Copies `bytes` into a fresh exactly-sized buffer.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self(Box::from(bytes))
    }

    /// The secret itself. Callers must not copy it into anything that outlives the call
    /// unless that thing zeroizes too.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = SecretBytes::copy_from(b"canary-value-1234");
        let printed = format!("{secret:?} {secret}");
        assert!(!printed.contains("canary"), "{printed}");
        assert!(printed.contains("17 bytes"), "{printed}");
    }

    #[test]
    fn equality_is_by_content() {
        assert_eq!(
            SecretBytes::copy_from(b"a"),
            SecretBytes::new(b"a".to_vec())
        );
        assert_ne!(SecretBytes::copy_from(b"a"), SecretBytes::copy_from(b"b"));
    }
}
