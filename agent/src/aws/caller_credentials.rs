//! Which AWS credentials a local caller gets, for every HTTP delivery path (the
//! container-credentials endpoint, the IMDSv2 emulation). Today the agent holds one role,
//! so every caller the policy lets through gets that role's credentials;
//! [`CallerCredentials::for_caller`] is the one place that answers the question, so that
//! per-workload roles change it alone.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use steeple_plugin_api::AwsCredentials;

use crate::authz::Caller;
use crate::exchange::CredentialWatch;

/// One role's credentials, as the exchange keeps them fresh.
#[derive(Debug)]
pub struct RoleCredentials {
    role_arn: String,
    credentials: CredentialWatch<AwsCredentials>,
    /// The access key id last served and when it was first served (IMDS `LastUpdated`).
    first_served: Mutex<Option<(String, SystemTime)>>,
}

impl RoleCredentials {
    /// The credentials of `role_arn`, read from the exchange's watch channel.
    pub fn new(role_arn: String, credentials: CredentialWatch<AwsCredentials>) -> Self {
        Self {
            role_arn,
            credentials,
            first_served: Mutex::new(None),
        }
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

/// Where the local endpoints look up the credentials for a caller.
#[derive(Debug, Clone)]
pub struct CallerCredentials {
    /// The agent's one role (`[aws] role_arn`).
    single: Arc<RoleCredentials>,
}

impl CallerCredentials {
    /// Every caller gets `role`'s credentials (one workload identity, one role).
    pub fn single(role: RoleCredentials) -> Self {
        Self {
            single: Arc::new(role),
        }
    }

    /// The role whose credentials `caller` gets, or `None` when it maps to no role. The
    /// policy check (may this caller have AWS credentials at all) comes first and is not
    /// repeated here. With one role, every caller maps to it.
    pub fn for_caller(&self, _caller: &Caller) -> Option<Arc<RoleCredentials>> {
        Some(self.single.clone())
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
