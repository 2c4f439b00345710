//! What the supervisor hands the AWS and Vault sides at start. Defined once, outside
//! their modules, so a build without the `aws` or `vault` feature (whose stand-ins take
//! the same context and refuse `enabled = true`) keeps the supervisor feature-agnostic.

use std::sync::Arc;

use steeple_plugin_api::JwtSvidSource;
use tokio_util::sync::CancellationToken;

use crate::envelopes::RowSink;
use crate::lifecycle::FatalSignal;
use crate::store::SecretStore;

/// Everything `aws::start` needs from the supervisor.
#[derive(Debug)]
pub struct AwsContext<'a> {
    /// Fresh JWT-SVIDs for the exchange.
    pub jwt: Arc<dyn JwtSvidSource>,
    /// Where the credentials are published as a generic secret.
    pub store: Arc<SecretStore>,
    /// The envelope rows, for the key probe (`None` when envelopes are off).
    pub rows: Option<RowSink>,
    /// Who may fetch the credentials from the container endpoint (by the resource name
    /// `credentials_resource_name`, as over SDS).
    pub policy: crate::authz::SharedPolicy,
    /// Set when a start-time probe finds a bad key.
    pub fatal: FatalSignal,
    /// Stops everything.
    pub shutdown: &'a CancellationToken,
}

/// Everything `vault::start` needs from the supervisor.
#[derive(Debug)]
pub struct VaultContext<'a> {
    /// Fresh JWT-SVIDs for the login.
    pub jwt: Arc<dyn JwtSvidSource>,
    /// Where the token is published when `token_resource_name` is set.
    pub store: Arc<SecretStore>,
    /// Stops everything.
    pub shutdown: &'a CancellationToken,
}
