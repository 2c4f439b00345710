//! The `local` envelope provider, for development only: AES-256-GCM under a master key
//! taken from an environment variable. The key id is the SHA-256 of the master, so a
//! rotation shows in envelopes and audit without the key showing.
//!
//! Never use it in production: the master key lives in the agent's own environment, which
//! is exactly what a KMS exists to avoid. The agent warns whenever it is enabled outside
//! `steeple dev` and refuses it under `profile = "production"`.

use std::fmt;

use base64::Engine as _;
use ring::digest::{SHA256, digest};
use steeple_plugin_api::aead::{self, KEY_LEN};
use steeple_plugin_api::{
    BoxFuture, EncryptionContext, EnvelopeResolver, EnvelopeRow, Provider, ResolveError, Resolved,
    SealedEnvelope, SecretBytes, format_aad,
};
use zeroize::Zeroize;

/// Why the master key could not be loaded. Never carries the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// The variable is not set.
    #[error("{0} is not set (expected base64 of 32 random bytes, e.g. `openssl rand -base64 32`)")]
    Missing(String),
    /// Not base64 of exactly 32 bytes.
    #[error("{0} is not base64 of exactly 32 bytes")]
    Malformed(String),
}

/// The local master key and its id.
pub struct LocalKey {
    master: SecretBytes,
    key_id: String,
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl LocalKey {
    /// Decodes a base64 master key; `origin` names where it came from in errors.
    pub fn from_base64(encoded: &str, origin: &str) -> Result<Self, MasterKeyError> {
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| MasterKeyError::Malformed(origin.to_owned()))?;
        let key = if bytes.len() == KEY_LEN {
            Ok(Self::new(SecretBytes::copy_from(&bytes)))
        } else {
            Err(MasterKeyError::Malformed(origin.to_owned()))
        };
        bytes.zeroize();
        key
    }

    /// Reads the master key from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, MasterKeyError> {
        let mut value = std::env::var(var).map_err(|_| MasterKeyError::Missing(var.to_owned()))?;
        let key = Self::from_base64(&value, var);
        value.zeroize();
        key
    }

    fn new(master: SecretBytes) -> Self {
        let hash = digest(&SHA256, master.expose());
        let key_id = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Self { master, key_id }
    }

    /// The SHA-256 of the master key, lowercase hex.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `plaintext` as a `local` envelope row for `logical_path` and `context`.
    pub fn seal(
        &self,
        logical_path: &str,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<EnvelopeRow, aead::AeadError> {
        let aad = aead::associated_data(logical_path, context);
        let payload = aead::seal(self.master.expose(), &aad, plaintext)?;
        Ok(EnvelopeRow {
            logical_path: logical_path.to_owned(),
            provider: Provider::Local.as_str().to_owned(),
            key_id: self.key_id.clone(),
            ciphertext_ref: base64::engine::general_purpose::STANDARD.encode(payload),
            aad: format_aad(context),
            ..EnvelopeRow::default()
        })
    }
}

/// Resolves `local` envelopes with one master key.
#[derive(Debug)]
pub struct LocalResolver {
    key: LocalKey,
}

impl LocalResolver {
    /// A resolver for envelopes sealed under `key`.
    pub fn new(key: LocalKey) -> Self {
        Self { key }
    }

    fn open(&self, envelope: &SealedEnvelope) -> Result<Resolved, ResolveError> {
        if envelope.key_id != self.key.key_id {
            return Err(ResolveError::Undecryptable(format!(
                "sealed under local key {}, but the configured master key is {}",
                envelope.key_id, self.key.key_id
            )));
        }
        if envelope.data_key.is_some() {
            return Err(ResolveError::Undecryptable(
                "local envelopes carry no data_key_ciphertext".into(),
            ));
        }
        let aad = aead::associated_data(&envelope.logical_path, &envelope.context);
        let plaintext = aead::open(self.key.master.expose(), &aad, &envelope.ciphertext)
            .map_err(|e| ResolveError::Undecryptable(e.to_string()))?;
        Ok(Resolved {
            plaintext,
            key_id: self.key.key_id.clone(),
        })
    }
}

impl EnvelopeResolver for LocalResolver {
    fn provider(&self) -> Provider {
        Provider::Local
    }

    fn resolve<'a>(
        &'a self,
        envelope: &'a SealedEnvelope,
    ) -> BoxFuture<'a, Result<Resolved, ResolveError>> {
        Box::pin(async move { self.open(envelope) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn context() -> EncryptionContext {
        [("env".to_owned(), "dev".to_owned())].into_iter().collect()
    }

    fn resolve(resolver: &LocalResolver, row: &EnvelopeRow) -> Result<Resolved, ResolveError> {
        let sealed = row.validate(1 << 16).unwrap();
        tokio_free_block_on(resolver.resolve(&sealed))
    }

    /// The resolver's future never awaits anything, so one poll finishes it.
    fn tokio_free_block_on<T>(future: BoxFuture<'_, T>) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = future;
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("local resolve should not wait"),
        }
    }

    #[test]
    fn seals_and_resolves_with_key_id_the_sha256_of_the_master() {
        let key = LocalKey::from_base64(MASTER, "test").unwrap();
        assert_eq!(key.key_id().len(), 64);
        let row = key
            .seal("db/password", &context(), b"canary-plaintext")
            .unwrap();
        assert_eq!(row.key_id, key.key_id());
        assert_eq!(row.aad, "env=dev");
        let resolver = LocalResolver::new(LocalKey::from_base64(MASTER, "test").unwrap());
        assert_eq!(
            resolve(&resolver, &row).unwrap().plaintext.expose(),
            b"canary-plaintext"
        );
        assert!(!format!("{resolver:?} {row:?}").contains("AAECAwQF"));
    }

    #[test]
    fn refuses_another_master_another_path_or_another_context() {
        let key = LocalKey::from_base64(MASTER, "test").unwrap();
        let row = key.seal("db/password", &context(), b"x").unwrap();
        let other =
            LocalKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "o").unwrap();
        let err = resolve(&LocalResolver::new(other), &row).unwrap_err();
        assert!(err.to_string().contains("configured master key"), "{err}");

        let resolver = LocalResolver::new(key);
        let mut moved = row.clone();
        moved.logical_path = "db/other".into();
        let mut recontexted = row;
        recontexted.aad = "env=prod".into();
        for row in [moved, recontexted] {
            assert!(matches!(
                resolve(&resolver, &row),
                Err(ResolveError::Undecryptable(_))
            ));
        }
    }

    #[test]
    fn master_key_errors_name_the_variable_only() {
        let err = LocalKey::from_base64("c2hvcnQ=", "STEEPLE_LOCAL_MASTER_KEY").unwrap_err();
        assert_eq!(
            err,
            MasterKeyError::Malformed("STEEPLE_LOCAL_MASTER_KEY".into())
        );
        assert!(LocalKey::from_base64("!!", "V").is_err());
        assert!(matches!(
            LocalKey::from_env("STEEPLE_TEST_SURELY_UNSET_VAR"),
            Err(MasterKeyError::Missing(_))
        ));
    }
}
