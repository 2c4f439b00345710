//! A build without the `aws` cargo feature: `[aws] enabled = true` is refused at start,
//! naming the missing feature, and nothing else changes.

use std::sync::Arc;

use steeple_plugin_api::EnvelopeResolver;
use tokio::task::JoinSet;

use crate::config::AwsConfig;
pub use crate::start_context::AwsContext;

/// Why the AWS side could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsStartError {
    /// This binary was built without AWS support.
    #[error("aws.enabled: this steeple was built without the `aws` cargo feature")]
    NotCompiled,
}

/// Never built without the feature.
#[derive(Debug)]
pub struct AwsRuntime {
    /// Resolves `kms_envelope` envelopes.
    pub kms: Arc<dyn EnvelopeResolver>,
}

/// Refuses `[aws] enabled = true`.
pub fn start(
    config: &AwsConfig,
    _context: AwsContext<'_>,
    _tasks: &mut JoinSet<()>,
) -> Result<Option<AwsRuntime>, AwsStartError> {
    if config.enabled {
        return Err(AwsStartError::NotCompiled);
    }
    Ok(None)
}
