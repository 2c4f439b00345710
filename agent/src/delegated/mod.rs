//! Delegated mode: a node agent. One Steeple per host serves every local SDS caller its
//! *own* identity, which SPIRE agent attests from the caller's pid through its Delegated
//! Identity API (`spire.api.agent.delegatedidentity.v1`, on the agent's
//! `admin_socket_path`; Steeple's own SPIFFE ID must be in the agent's
//! `authorized_delegates`). The proto and its client come from the `spire-api` crate.
//!
//! Bundles are followed once for all ([`bundles`]); each caller process gets one
//! subscription ([`registry`], [`workload`]) writing its own store, which its SDS streams
//! see over the shared store ([`crate::store::View`]).

mod answers;
pub mod bundles;
pub mod client;
pub mod convert;
pub mod doctor;
mod envelopes;
mod holder_waits;
pub mod jwt;
pub mod registry;
pub mod workload;

use std::sync::Arc;

use steeple_plugin_api::lease::RepeatFilter;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::DelegatedConfig;
use crate::identity::DefaultNames;
pub use client::DelegatedClient;
pub use registry::{Workload, Workloads};

/// What SPIRE says when Steeple's own SPIFFE ID is not an authorized delegate.
const NOT_A_DELEGATE: &str = "caller not configured as an authorized delegate";

/// Starts following the bundles and returns the registry SDS acquires workloads from.
pub fn start(
    settings: &DelegatedConfig,
    names: DefaultNames,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Arc<Workloads> {
    let client = DelegatedClient::new(
        crate::uds::lazy_channel(&settings.admin_socket),
        settings.max_concurrent_attestations,
    );
    let (tx, rx) = watch::channel(Arc::default());
    tasks.spawn(bundles::follow(client.clone(), tx, shutdown.clone()));
    tracing::info!(admin_socket = %settings.admin_socket.display(), "delegated mode: each SDS caller gets its own identity from SPIRE agent's Delegated Identity API");
    Arc::new(Workloads::new(
        client,
        rx,
        names,
        settings.default_svid_hint.clone(),
        shutdown.clone(),
    ))
}

/// A failed call's status, with the fix when SPIRE refused Steeple as a delegate.
pub fn explain(status: &tonic::Status) -> String {
    let message: String = status.message().chars().take(300).collect();
    if status.code() == tonic::Code::PermissionDenied && message.contains(NOT_A_DELEGATE) {
        return format!(
            "{message}: add Steeple's own SPIFFE ID to the SPIRE agent's authorized_delegates"
        );
    }
    format!("{:?}: {message}", status.code())
}

/// Logs a failure once (repeats at DEBUG); refusal as a delegate is an ERROR, since only
/// the SPIRE agent's configuration can fix it.
pub fn log_failure(errors: &mut RepeatFilter, what: &str, why: &str) {
    if !why.contains(NOT_A_DELEGATE) {
        errors.warn(what, why);
    } else if errors.repeats(why) {
        tracing::debug!(%what, error = %why, "still refused");
    } else {
        tracing::error!(%what, error = %why, "SPIRE agent refuses Steeple as a delegate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_as_a_delegate_names_the_agent_setting() {
        let status = tonic::Status::permission_denied(NOT_A_DELEGATE);
        assert!(explain(&status).contains("authorized_delegates"));
        let other = tonic::Status::unavailable("workload attestation failed");
        assert_eq!(explain(&other), "Unavailable: workload attestation failed");
    }
}
