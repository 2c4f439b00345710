//! Which AWS credentials a local caller gets, for every HTTP delivery path (the
//! container-credentials endpoint, the IMDSv2 emulation): [`CallerCredentials::authorize`]
//! traces the caller, finds its identity when roles are chosen per workload, checks the
//! `[[callers]]` policy and picks its role — the one place that answers the question.

use std::net::SocketAddr;
use std::sync::Arc;

use super::per_workload::PerWorkloadRoles;
use super::role_credentials::RoleCredentials;
use crate::authz::tcp_peer::{self, Refusal};
use crate::authz::{Caller, SharedPolicy};

/// Where the local endpoints look up the credentials for a caller, and who may have them.
#[derive(Debug, Clone)]
pub struct CallerCredentials {
    lookup: Lookup,
    policy: SharedPolicy,
    resource_name: String,
}

/// How a caller's role is found.
#[derive(Debug, Clone)]
enum Lookup {
    /// The agent's one role (`[aws] role_arn`) for every caller.
    Single(Arc<RoleCredentials>),
    /// Each caller its own role, by its identity (`[[workloads]]`).
    PerWorkload(Arc<PerWorkloadRoles>),
}

/// A caller the policy let through, and the role credentials it gets.
#[derive(Debug)]
pub struct Authorized {
    /// The process behind the connection.
    pub caller: Arc<Caller>,
    /// Its role's credentials.
    pub role: Arc<RoleCredentials>,
}

impl CallerCredentials {
    /// Every caller `policy` grants `resource_name` gets `role`'s credentials (one
    /// workload identity, one role).
    pub fn single(role: RoleCredentials, policy: SharedPolicy, resource_name: String) -> Self {
        Self {
            lookup: Lookup::Single(Arc::new(role)),
            policy,
            resource_name,
        }
    }

    /// Every caller `policy` grants `resource_name` gets its own identity's role.
    pub fn per_workload(
        roles: Arc<PerWorkloadRoles>,
        policy: SharedPolicy,
        resource_name: String,
    ) -> Self {
        Self {
            lookup: Lookup::PerWorkload(roles),
            policy,
            resource_name,
        }
    }

    /// The resource name the policy must grant (`aws.credentials_resource_name`).
    pub fn resource_name(&self) -> &str {
        &self.resource_name
    }

    /// The caller behind `peer` → `local` and its role's credentials, when the policy
    /// grants it the credentials on `endpoint` and (per workload) its identity maps to a
    /// role. Every refusal is an audit event.
    pub async fn authorize(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        endpoint: &'static str,
    ) -> Result<Authorized, Refusal> {
        let resource = self.resource_name.as_str();
        let caller = tcp_peer::trace(peer, local, resource, endpoint).await?;
        let role = match &self.lookup {
            Lookup::Single(role) => {
                tcp_peer::grant(&caller, None, &self.policy, resource, endpoint)?;
                role.clone()
            }
            Lookup::PerWorkload(roles) => {
                // SPIRE is asked only about callers some rule may grant something.
                let identity = match self.policy.current().may_grant(&caller) {
                    true => roles.identity_of(&caller).await,
                    false => None,
                };
                let ids = identity.as_ref().map(|i| i.all.clone());
                tcp_peer::grant(&caller, ids, &self.policy, resource, endpoint)?;
                roles
                    .credentials_for(identity.as_ref())
                    .map_err(Refusal::NoRole)?
            }
        };
        Ok(Authorized { caller, role })
    }
}
