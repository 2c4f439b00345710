//! Builds the envelope resolvers the configuration asks for.

use std::sync::Arc;

use steeple_plugin_api::EnvelopeResolver;
use steeple_plugin_local::{LocalKey, LocalResolver, MasterKeyError};

use crate::config::EnvelopesConfig;

/// How the agent was started, which decides whether dev-only providers warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// `steeple run`.
    Production,
    /// `steeple dev`.
    Dev,
}

/// Why a provider could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The local provider's master key is missing or malformed.
    #[error("envelopes.local_master_key_env: {0}")]
    LocalKey(#[from] MasterKeyError),
}

/// The resolvers `[envelopes]` enables, plus those already running (`kms_envelope` once
/// the AWS exchange runs, `vault_delegate` and `vault_transit` once the Vault keeper
/// runs).
pub fn resolvers(
    envelopes: &EnvelopesConfig,
    mode: RunMode,
    running: impl IntoIterator<Item = Arc<dyn EnvelopeResolver>>,
) -> Result<Vec<Arc<dyn EnvelopeResolver>>, ProviderError> {
    let mut resolvers: Vec<Arc<dyn EnvelopeResolver>> = Vec::new();
    if !envelopes.enabled {
        return Ok(resolvers);
    }
    resolvers.extend(running);
    let var = &envelopes.local_master_key_env;
    if !var.is_empty() {
        let key = LocalKey::from_env(var)?;
        if mode != RunMode::Dev {
            tracing::warn!(
                key_id = key.key_id(),
                "the local envelope provider is enabled outside `steeple dev`: its master key \
                 sits in this process's environment; use KMS or Vault in production"
            );
        }
        resolvers.push(Arc::new(LocalResolver::new(key)));
    }
    Ok(resolvers)
}
