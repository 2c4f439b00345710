//! One role's AWS credentials as the local endpoints serve them: read from the
//! exchange's (or a workload's role lease's) watch channel, never expired ones, with the
//! time they were first served (IMDS `LastUpdated`).

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use steeple_plugin_api::AwsCredentials;

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
