//! A build without the `vault` cargo feature: `[vault] enabled = true` is refused at
//! start, naming the missing feature, and nothing else changes.

use std::sync::Arc;

use steeple_plugin_api::EnvelopeResolver;
use tokio::task::JoinSet;

use crate::config::VaultConfig;
pub use crate::start_context::VaultContext;

/// Why the Vault side could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultStartError {
    /// This binary was built without Vault support.
    #[error("vault.enabled: this steeple was built without the `vault` cargo feature")]
    NotCompiled,
}

/// Never built without the feature.
#[derive(Debug)]
pub struct VaultRuntime {
    /// Resolves `vault_delegate` envelopes.
    pub kv: Arc<dyn EnvelopeResolver>,
    /// Resolves `vault_transit` envelopes.
    pub transit: Arc<dyn EnvelopeResolver>,
}

/// Refuses `[vault] enabled = true`.
pub fn start(
    config: &VaultConfig,
    _context: VaultContext<'_>,
    _tasks: &mut JoinSet<()>,
) -> Result<Option<VaultRuntime>, VaultStartError> {
    if config.enabled {
        return Err(VaultStartError::NotCompiled);
    }
    Ok(None)
}
