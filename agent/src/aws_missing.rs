//! A build without the `aws` cargo feature: `[aws] enabled = true` is refused at start,
//! naming the missing feature, and nothing else changes.

use std::sync::Arc;

use steeple_plugin_api::{EnvelopeResolver, JwtSvidSource};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::AwsConfig;
use crate::envelopes::RowSink;
use crate::store::SecretStore;
use crate::supervisor::FatalSignal;

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

/// Same shape as the real context so the supervisor is feature-agnostic.
#[derive(Debug)]
pub struct AwsContext<'a> {
    /// Unused here.
    pub jwt: Arc<dyn JwtSvidSource>,
    /// Unused here.
    pub store: Arc<SecretStore>,
    /// Unused here.
    pub rows: Option<RowSink>,
    /// Unused here.
    pub policy: crate::authz::SharedPolicy,
    /// Unused here.
    pub fatal: FatalSignal,
    /// Unused here.
    pub shutdown: &'a CancellationToken,
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
