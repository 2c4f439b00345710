//! Which AWS credentials a local caller gets, for every HTTP delivery path (the
//! container-credentials endpoint, the IMDSv2 emulation): [`CallerCredentials::authorize`]
//! traces the caller, finds its identity when roles are chosen per workload, checks the
//! `[[callers]]` policy and picks its role — the one place that answers the question.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use steeple_plugin_api::AwsCredentials;

use super::per_workload::PerWorkloadRoles;
use crate::authz::tcp_peer::{self, Refusal};
use crate::authz::{Caller, SharedPolicy};
use crate::exchange::CredentialWatch;
use crate::exchange::roles::RoleLease;

/// How long a request waits for the first credentials of a workload's role lease (just
/// started by it, most likely): short, since SDKs time out credential requests in a
/// second or two and retry.
const FIRST_CREDENTIALS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One role's credentials, as the exchange keeps them fresh.
#[derive(Debug)]
pub struct RoleCredentials {
    role_arn: String,
    credentials: CredentialWatch<AwsCredentials>,
    /// The access key id last served and when it was first served (IMDS `LastUpdated`).
    first_served: Mutex<Option<(String, SystemTime)>>,
    /// The (workload, role) lease these come from, held while they are served.
    lease: Option<RoleLease<AwsCredentials>>,
}

impl RoleCredentials {
    /// The credentials of `role_arn`, read from the exchange's watch channel.
    pub fn new(role_arn: String, credentials: CredentialWatch<AwsCredentials>) -> Self {
        Self {
            role_arn,
            credentials,
            first_served: Mutex::new(None),
            lease: None,
        }
    }

    /// The credentials of one workload's role, from its lease (held as long as this is).
    pub fn leased(lease: RoleLease<AwsCredentials>) -> Self {
        Self {
            role_arn: lease.key().role.clone(),
            credentials: lease.credential().clone(),
            first_served: Mutex::new(None),
            lease: Some(lease),
        }
    }

    /// For a workload's role lease without credentials yet: waits (a second at most)
    /// for them. At once otherwise.
    pub async fn wait_first(&self) {
        if self.lease.is_none() || self.credentials.borrow().is_some() {
            return;
        }
        let mut credentials = self.credentials.clone();
        let _ = tokio::time::timeout(
            FIRST_CREDENTIALS_WAIT,
            credentials.wait_for(Option::is_some),
        )
        .await;
    }

    /// The role's ARN.
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }

    /// The role's name as IMDS lists it: the last path segment of the ARN
    /// (`arn:aws:iam::111122223333:role/team/app` → `app`).
    pub fn role_name(&self) -> &str {
        role_name(&self.role_arn)
    }

    /// `render` applied to the current credentials and the time this agent first served
    /// them, when they are valid now; `None` before the first exchange and after expiry
    /// (never expired credentials as if valid).
    pub fn render_valid<T>(
        &self,
        render: impl FnOnce(&AwsCredentials, SystemTime) -> T,
    ) -> Option<T> {
        let current = self.credentials.borrow();
        let now = SystemTime::now();
        let valid = current.as_ref().filter(|c| c.expiration > now)?;
        let first_served = {
            let mut seen = self
                .first_served
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match seen.as_ref() {
                Some((key, at)) if *key == valid.access_key_id => *at,
                _ => {
                    *seen = Some((valid.access_key_id.clone(), now));
                    now
                }
            }
        };
        Some(render(valid, first_served))
    }
}

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

/// The last `/`-separated segment of a role ARN (the whole text when it has none).
fn role_name(role_arn: &str) -> &str {
    role_arn.rsplit('/').next().unwrap_or(role_arn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use steeple_plugin_api::SecretBytes;
    use tokio::sync::watch;

    fn credentials(key: &str, lifetime: Duration) -> AwsCredentials {
        AwsCredentials {
            access_key_id: key.into(),
            secret_access_key: SecretBytes::copy_from(b"secret"),
            session_token: SecretBytes::copy_from(b"token"),
            expiration: SystemTime::now() + lifetime,
            account_id: None,
        }
    }

    #[test]
    fn role_names_are_the_last_path_segment() {
        assert_eq!(role_name("arn:aws:iam::123456789012:role/app"), "app");
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/team/x/app"),
            "app"
        );
        assert_eq!(role_name("no-slash"), "no-slash");
    }

    #[test]
    fn only_valid_credentials_render_and_last_updated_follows_the_key() {
        let (tx, rx) = watch::channel(None);
        let role = RoleCredentials::new("arn:aws:iam::1:role/app".into(), rx);
        assert!(role.render_valid(|_, _| ()).is_none(), "none yet");
        tx.send_replace(Some(credentials("AKIA1", Duration::from_secs(600))));
        let first = role.render_valid(|_, at| at).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            role.render_valid(|_, at| at),
            Some(first),
            "same key, same time"
        );
        tx.send_replace(Some(credentials("AKIA2", Duration::from_secs(600))));
        assert!(role.render_valid(|_, at| at).unwrap() > first, "new key");
        let expired = AwsCredentials {
            expiration: SystemTime::now() - Duration::from_secs(1),
            ..credentials("AKIA3", Duration::ZERO)
        };
        tx.send_replace(Some(expired));
        assert!(role.render_valid(|_, _| ()).is_none(), "expired");
    }
}
