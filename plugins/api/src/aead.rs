//! The data-key layer: AES-256-GCM over a payload, with the additional authenticated data
//! bound to the envelope's logical path and encryption context, so a payload moved to
//! another path or context fails to open.
//!
//! Payload layout: 12-byte nonce ‖ ciphertext ‖ 16-byte tag.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroize;

use crate::{EncryptionContext, SecretBytes};

/// Length of an AES-256 key.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const DOMAIN: &[u8] = b"steeple-envelope-v1";

/// Why a payload could not be sealed or opened. Carries no key or plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AeadError {
    /// The data key is not 32 bytes.
    #[error("data key is not {KEY_LEN} bytes")]
    KeyLength,
    /// Shorter than nonce + tag.
    #[error("payload is too short to be nonce ‖ ciphertext ‖ tag")]
    Truncated,
    /// Wrong key, tampered payload, or a different logical path / context.
    #[error("payload does not authenticate under this key, logical path and context")]
    Unauthentic,
    /// The system random source failed.
    #[error("no randomness for a nonce")]
    Random,
}

/// The additional authenticated data for `logical_path` and `context`: each field
/// length-prefixed so no two inputs encode alike.
pub fn associated_data(logical_path: &str, context: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(DOMAIN);
    field(logical_path.as_bytes());
    for (key, value) in context {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    out
}

fn cipher(key: &[u8]) -> Result<LessSafeKey, AeadError> {
    if key.len() != KEY_LEN {
        return Err(AeadError::KeyLength);
    }
    let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| AeadError::KeyLength)?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypts `plaintext` under `key` with a random nonce.
pub fn seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
    let cipher = cipher(key)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| AeadError::Random)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| AeadError::Unauthentic)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypts a payload made by [`seal`]. The plaintext lands in an exactly-sized
/// [`SecretBytes`]; the working buffer is zeroized.
pub fn open(key: &[u8], aad: &[u8], payload: &[u8]) -> Result<SecretBytes, AeadError> {
    let cipher = cipher(key)?;
    if payload.len() < NONCE_LEN + TAG_LEN {
        return Err(AeadError::Truncated);
    }
    let (nonce, sealed) = payload.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AeadError::Truncated)?;
    let mut work = sealed.to_vec();
    let result = cipher
        .open_in_place(nonce, Aad::from(aad), &mut work)
        .map(|plain| SecretBytes::copy_from(plain))
        .map_err(|_| AeadError::Unauthentic);
    work.zeroize();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn round_trips_and_binds_path_and_context() {
        let key = [7u8; KEY_LEN];
        let aad = associated_data("a/b", &context(&[("env", "prod")]));
        let payload = seal(&key, &aad, b"canary").unwrap();
        assert_eq!(open(&key, &aad, &payload).unwrap().expose(), b"canary");

        let other_path = associated_data("a/c", &context(&[("env", "prod")]));
        let other_context = associated_data("a/b", &context(&[("env", "Prod")]));
        for aad in [other_path, other_context] {
            assert_eq!(open(&key, &aad, &payload), Err(AeadError::Unauthentic));
        }
        assert_eq!(
            open(&[8u8; KEY_LEN], &aad, &payload),
            Err(AeadError::Unauthentic)
        );
        assert_eq!(open(&key, &aad, &payload[..20]), Err(AeadError::Truncated));
        assert_eq!(open(&key[..16], &aad, &payload), Err(AeadError::KeyLength));
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        assert_ne!(
            associated_data("ab", &context(&[("c", "d")])),
            associated_data("a", &context(&[("bc", "d")]))
        );
    }

    #[test]
    fn nonces_differ_between_seals() {
        let key = [1u8; KEY_LEN];
        assert_ne!(
            seal(&key, b"", b"x").unwrap(),
            seal(&key, b"", b"x").unwrap()
        );
    }
}
