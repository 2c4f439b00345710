//! What the core hands an upstream side (AWS, Vault) when it starts: the contract every
//! side is built against, below both the sides and [`crate::sides`], which starts them.

use std::sync::Arc;

use steeple_plugin_api::JwtSvidSource;
use tokio_util::sync::CancellationToken;

use crate::authz::SharedPolicy;
use crate::caller_identity::CallerIdentities;
use crate::envelopes::RowSink;
use crate::envelopes::per_workload::WorkloadEnvelopes;
use crate::lifecycle::FatalSignal;
use crate::readiness::Readiness;
use crate::store::SecretStore;
use crate::workload_roles::WorkloadRoles;

/// Everything a side may use from the core when it starts.
#[derive(Debug)]
pub struct SideContext<'a> {
    /// Fresh JWT-SVIDs for exchanges and logins.
    pub jwt: Arc<dyn JwtSvidSource>,
    /// Where a side publishes what it serves (credentials, a token; it reads bundles).
    pub store: Arc<SecretStore>,
    /// The envelope rows (`None` when envelopes are off), e.g. for the AWS key probe.
    pub rows: Option<RowSink>,
    /// Who may fetch what, for a side's own endpoints (the container endpoint).
    pub policy: SharedPolicy,
    /// Raised when a side finds at start something the agent must not run with.
    pub fatal: FatalSignal,
    /// Where a side registers what it produces, so the agent is ready only once it is held.
    pub readiness: Readiness,
    /// Whose identity callers have, for roles chosen per workload.
    pub identities: CallerIdentities,
    /// `[[workloads]]`: the roles by workload identity.
    pub roles: WorkloadRoles,
    /// Where a side offers resolvers decrypting with each workload's own roles (a node
    /// agent with roles per workload and envelopes on).
    pub envelopes: Option<Arc<WorkloadEnvelopes>>,
    /// Stops everything.
    pub shutdown: &'a CancellationToken,
}
