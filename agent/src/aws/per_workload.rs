//! AWS roles per workload (`[[workloads]] aws_role_arn`): each workload's own JWT-SVID
//! exchanged for its own role (`RoleSessionName` from its SPIFFE ID, so CloudTrail names
//! it), one lease per (identity, role). Served over SDS into the workload's own store as
//! `aws.credentials_resource_name` (a [`WorkloadResource`]), and to the HTTP endpoints
//! through [`PerWorkloadRoles::credentials_for`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use steeple_plugin_api::AwsCredentials;
use steeple_plugin_aws::{KmsConfig, KmsEnvelopeResolver, StsExchanger};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::role_credentials::RoleCredentials;
use super::{AwsStartError, config_error, delivery, kms_config, sts_config};
use crate::authz::Caller;
use crate::caller_identity::{CallerIdentities, CallerIdentity};
use crate::config::AwsConfig;
use crate::envelopes::per_workload::{IdentityProviders, IdentityResolvers};
use crate::exchange::roles::{ROLE_LEASE_LINGER, RoleExchanges, RoleKey};
use crate::store::SecretStore;
use crate::workload_roles::resource::no_role;
use crate::workload_roles::{WorkloadResource, WorkloadRoles};

/// Most (identity, role) pairs the HTTP endpoints keep served at once; past it the one
/// asked for least recently goes (its lease lingers, then stops).
const MAX_SERVED: usize = 4096;

/// The AWS side's per-workload roles.
#[derive(Debug)]
pub struct PerWorkloadRoles {
    exchanges: RoleExchanges<StsExchanger>,
    roles: WorkloadRoles,
    identities: CallerIdentities,
    resource_name: String,
    /// How `kms_envelope` envelopes are decrypted with a workload's own role.
    kms: KmsConfig,
    /// What the HTTP endpoints served lately, by (identity, role), and when it was last
    /// asked for: keeps IMDS `LastUpdated` stable and the lease held while it is used.
    served: Mutex<HashMap<RoleKey, (Arc<RoleCredentials>, Instant)>>,
}

impl PerWorkloadRoles {
    /// One STS exchanger per role `roles` names (each checked now), with `[aws]`'s other
    /// settings; JWT-SVIDs of each identity from `identities`.
    pub fn new(
        config: &AwsConfig,
        roles: &WorkloadRoles,
        identities: CallerIdentities,
        shutdown: &CancellationToken,
    ) -> Result<Self, AwsStartError> {
        let mut exchangers = HashMap::new();
        for role in roles.aws_roles() {
            let sts = steeple_plugin_aws::StsConfig {
                role_arn: role.to_owned(),
                ..sts_config(config)
            };
            let exchanger = StsExchanger::new(sts).map_err(config_error)?;
            exchangers.insert(role.to_owned(), Arc::new(exchanger));
        }
        let exchanges = RoleExchanges::new("aws-sts", exchangers, identities.jwt_by_id(), shutdown);
        Ok(Self {
            exchanges,
            roles: roles.clone(),
            identities,
            resource_name: config.credentials_resource_name.clone(),
            kms: kms_config(config),
            served: Mutex::default(),
        })
    }

    /// `caller`'s identity (a node agent asks SPIRE about it).
    pub async fn identity_of(&self, caller: &Arc<Caller>) -> Option<CallerIdentity> {
        self.identities.of(caller).await
    }

    /// The credentials of `identity`'s role; `Err` (audited) when it has none: no SVID,
    /// or no `[[workloads]]` entry naming an AWS role for it.
    pub fn credentials_for(
        &self,
        identity: Option<&CallerIdentity>,
    ) -> Result<Arc<RoleCredentials>, String> {
        let Some(identity) = identity else {
            tracing::warn!(target: crate::audit::TARGET, resource = %self.resource_name, decision = "deny", reason = "the caller holds no SVID", "role");
            return Err("the calling workload holds no SVID, so it has no AWS role".into());
        };
        let id = identity.default.as_str();
        let role = self
            .roles
            .aws_role(id)
            .ok_or_else(|| no_role("AWS", &self.resource_name, id))?;
        let key = RoleKey {
            spiffe_id: id.to_owned(),
            role: role.to_owned(),
        };
        let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        served.retain(|_, (_, used)| now.duration_since(*used) < ROLE_LEASE_LINGER);
        if let Some((credentials, used)) = served.get_mut(&key) {
            *used = now;
            return Ok(credentials.clone());
        }
        if served.len() >= MAX_SERVED
            && let Some(oldest) = served
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            served.remove(&oldest);
        }
        let lease = self
            .exchanges
            .acquire(id, role)
            .ok_or_else(|| format!("AWS role {role} is not configured"))?;
        let credentials = Arc::new(RoleCredentials::leased(lease));
        served.insert(key, (credentials.clone(), now));
        Ok(credentials)
    }
}

impl WorkloadResource for PerWorkloadRoles {
    fn name(&self) -> &str {
        &self.resource_name
    }

    fn start(
        &self,
        spiffe_id: &str,
        store: Arc<SecretStore>,
        stop: CancellationToken,
    ) -> Result<(), String> {
        let role = self.roles.aws_role(spiffe_id);
        let lease = self
            .exchanges
            .lease_for("AWS", spiffe_id, role, &self.resource_name)?;
        let credentials: tokio::sync::watch::Receiver<Option<AwsCredentials>> =
            lease.credential().clone();
        let name = self.resource_name.clone();
        tokio::spawn(async move {
            delivery::publish_to_store(name, credentials, store, stop).await;
            drop(lease);
        });
        Ok(())
    }
}

impl IdentityResolvers for PerWorkloadRoles {
    /// `kms_envelope` decrypted with the credentials of `spiffe_id`'s own role.
    fn for_identity(&self, spiffe_id: &str) -> IdentityProviders {
        let lease = self
            .roles
            .aws_role(spiffe_id)
            .and_then(|role| self.exchanges.acquire(spiffe_id, role));
        let Some(lease) = lease else {
            return IdentityProviders::default();
        };
        let credentials = Arc::new(lease.credential().clone());
        match KmsEnvelopeResolver::new(self.kms.clone(), credentials) {
            Ok(kms) => IdentityProviders {
                resolvers: vec![Arc::new(kms)],
                holds: vec![Box::new(lease)],
            },
            Err(e) => {
                // Checked at start with the same settings: not expected.
                tracing::error!(error = %e.problem, spiffe_id, "KMS resolver not built for this workload");
                IdentityProviders::default()
            }
        }
    }
}
