//! Resources a workload gets for its *own* identity — its AWS role's credentials, its
//! Vault role's token — started the first time it asks for one and served into the store
//! of the workload (a node agent's caller) or of the agent (`self` mode), until stopped.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::store::SecretStore;

/// A per-identity resource, served under one name.
pub trait WorkloadResource: Send + Sync + std::fmt::Debug {
    /// The resource name it is served under.
    fn name(&self) -> &str;

    /// Starts serving it into `store`, for the workload holding SVIDs for `spiffe_id`,
    /// until `stop`. `Err` says why it is refused (no role maps that identity); the
    /// refusal is audited here, once per start.
    fn start(
        &self,
        spiffe_id: &str,
        store: Arc<SecretStore>,
        stop: CancellationToken,
    ) -> Result<(), String>;
}

/// The refusal of a resource to a workload whose SPIFFE ID no `[[workloads]]` entry gives
/// a role of `side`, audited.
pub fn no_role(side: &str, resource: &str, spiffe_id: &str) -> String {
    tracing::warn!(target: crate::audit::TARGET, spiffe_id, resource, decision = "deny", reason = "no [[workloads]] entry gives this SPIFFE ID a role", side, "role");
    format!(
        "no [[workloads]] entry gives {spiffe_id} a {side} role, so {resource:?} is not served to it"
    )
}
