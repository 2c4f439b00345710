//! Exchanges per (workload identity, role): each workload's *own* JWT-SVIDs traded for
//! *its* role's credentials, one lease per pair however many consumers share it, started
//! by the first consumer and stopped [`ROLE_LEASE_LINGER`] after the last one left.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use steeple_plugin_api::CredentialExchanger;
use steeple_plugin_api::lease::{LeaseHandle, LeaseSet, LeaseSettings};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::jwt_source::JwtSvidsById;
use super::{Exchange, REFRESH_WINDOW};
use crate::workload_roles::resource::no_role;

/// How long a role's lease outlives its last consumer: long enough that a consumer
/// polling over HTTP (an SDK refreshing container or IMDS credentials) or a workload
/// restarting finds it warm, short enough that a gone workload's role stops being
/// refreshed soon.
pub const ROLE_LEASE_LINGER: Duration = Duration::from_secs(10 * 60);

/// One lease's key: whose identity, which role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleKey {
    /// The workload's SPIFFE ID (its JWT-SVID's `sub`).
    pub spiffe_id: String,
    /// The role (an IAM role ARN, a Vault JWT role).
    pub role: String,
}

/// A hold on one (identity, role) lease.
pub type RoleLease<C> = LeaseHandle<RoleKey, C>;

/// The exchanges of one side (AWS STS, Vault login), by identity and role.
pub struct RoleExchanges<E: CredentialExchanger> {
    side: &'static str,
    exchangers: HashMap<String, Arc<E>>,
    jwt: Arc<dyn JwtSvidsById>,
    leases: LeaseSet<RoleKey, E::Credentials>,
}

impl<E: CredentialExchanger> std::fmt::Debug for RoleExchanges<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleExchanges")
            .field("side", &self.side)
            .field("roles", &self.exchangers.keys().collect::<Vec<_>>())
            .field("running", &self.leases.running())
            .finish_non_exhaustive()
    }
}

impl<E: CredentialExchanger> RoleExchanges<E>
where
    E::Credentials: Sync,
{
    /// Exchanges for `side` (`aws-sts`, `vault`) with one exchanger per configured role,
    /// fed by `jwt`; every lease stops with `shutdown`.
    pub fn new(
        side: &'static str,
        exchangers: HashMap<String, Arc<E>>,
        jwt: Arc<dyn JwtSvidsById>,
        shutdown: &CancellationToken,
    ) -> Self {
        Self {
            side,
            exchangers,
            jwt,
            leases: LeaseSet::new(shutdown).with_linger(ROLE_LEASE_LINGER),
        }
    }

    /// A hold on `spiffe_id`'s lease for `role`, started now if none runs; `None` when
    /// `role` is not one this side was configured with.
    pub fn acquire(&self, spiffe_id: &str, role: &str) -> Option<RoleLease<E::Credentials>> {
        let exchanger = self.exchangers.get(role)?;
        let key = RoleKey {
            spiffe_id: spiffe_id.to_owned(),
            role: role.to_owned(),
        };
        Some(self.leases.acquire(key, || {
            let name = format!("{} {role} for {spiffe_id}", self.side);
            let mut settings =
                LeaseSettings::new(name.clone(), "credential exchange", REFRESH_WINDOW);
            let retry_now = Arc::new(Notify::new());
            settings.refresh_now = Some(retry_now.clone());
            let exchange = Exchange {
                name,
                label: format!("{} {role}", self.side),
                exchanger: exchanger.clone(),
                jwt: self.jwt.for_id(spiffe_id, &retry_now),
                subject: Some(spiffe_id.to_owned()),
            };
            (exchange, settings)
        }))
    }

    /// The lease of `role` — the role `spiffe_id` maps to on this side (`kind`: `AWS`,
    /// `Vault`), if any — for serving `resource`; `Err`, audited, when it maps to none.
    pub fn lease_for(
        &self,
        kind: &str,
        spiffe_id: &str,
        role: Option<&str>,
        resource: &str,
    ) -> Result<RoleLease<E::Credentials>, String> {
        let role = role.ok_or_else(|| no_role(kind, resource, spiffe_id))?;
        self.acquire(spiffe_id, role)
            .ok_or_else(|| format!("{kind} role {role} is not configured"))
    }

    /// How many (identity, role) leases run now.
    pub fn running(&self) -> usize {
        self.leases.running()
    }
}

#[cfg(test)]
#[path = "roles_tests.rs"]
mod tests;
