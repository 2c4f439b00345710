//! Where the KMS client gets credentials: [`CredentialsSource`], the latest credentials the
//! exchange produced, read anew for every request through [`SourceCredentialsProvider`].

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, future};
use steeple_plugin_api::AwsCredentials;
use tokio::sync::watch;

/// The latest AWS credentials, as the agent's exchange loop holds them.
pub trait CredentialsSource: Send + Sync + fmt::Debug {
    /// The current credentials, or `None` before the first successful exchange.
    fn current(&self) -> Option<AwsCredentials>;
}

/// The exchange loop's watch channel (`steeple::exchange::CredentialWatch`).
impl CredentialsSource for watch::Receiver<Option<AwsCredentials>> {
    fn current(&self) -> Option<AwsCredentials> {
        self.borrow().clone()
    }
}

/// An SDK credentials provider over a [`CredentialsSource`]: every signed request reads
/// the source again (the client is built without an identity cache), so new credentials
/// are used as soon as the exchange publishes them. Expired or missing credentials are an
/// error, never a signature.
#[derive(Clone)]
pub struct SourceCredentialsProvider {
    source: Arc<dyn CredentialsSource>,
}

impl SourceCredentialsProvider {
    /// A provider reading `source`.
    pub fn new(source: Arc<dyn CredentialsSource>) -> Self {
        Self { source }
    }

    /// The credentials to sign with at `now`.
    fn load(&self, now: SystemTime) -> provider::Result {
        let Some(current) = self.source.current() else {
            return Err(CredentialsError::provider_error(
                "no valid AWS credentials yet (no STS exchange has succeeded)",
            ));
        };
        if current.expiration <= now {
            return Err(CredentialsError::provider_error(
                "no valid AWS credentials yet (the last exchanged credentials have expired)",
            ));
        }
        let text = |secret: &steeple_plugin_api::SecretBytes, what: &str| {
            std::str::from_utf8(secret.expose())
                .map(str::to_owned)
                .map_err(|_| {
                    CredentialsError::invalid_configuration(format!("{what} is not UTF-8"))
                })
        };
        // `Credentials` keeps these in zeroizing strings.
        Ok(Credentials::new(
            current.access_key_id.clone(),
            text(&current.secret_access_key, "the secret access key")?,
            Some(text(&current.session_token, "the session token")?),
            Some(current.expiration),
            "steeple-sts",
        ))
    }
}

impl fmt::Debug for SourceCredentialsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceCredentialsProvider")
            .field("source", &self.source)
            .finish()
    }
}

impl ProvideCredentials for SourceCredentialsProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(self.load(SystemTime::now()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use steeple_plugin_api::SecretBytes;

    use super::*;

    fn credentials(expiration: SystemTime) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretBytes::copy_from(b"secret-canary"),
            session_token: SecretBytes::copy_from(b"token-canary"),
            expiration,
            account_id: None,
        }
    }

    #[test]
    fn serves_the_latest_valid_credentials() {
        let now = SystemTime::now();
        let (tx, rx) = watch::channel(None);
        let provider = SourceCredentialsProvider::new(Arc::new(rx));
        let err = provider.load(now).unwrap_err();
        assert!(
            crate::sdk::error_chain(&err).contains("no valid AWS credentials yet"),
            "{err:?}"
        );

        tx.send_replace(Some(credentials(now + Duration::from_secs(60))));
        let loaded = provider.load(now).unwrap();
        assert_eq!(loaded.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(loaded.secret_access_key(), "secret-canary");
        assert_eq!(loaded.session_token(), Some("token-canary"));
        assert_eq!(loaded.expiry(), Some(now + Duration::from_secs(60)));

        tx.send_replace(Some(credentials(now)));
        assert!(
            provider.load(now).is_err(),
            "expired credentials are not served"
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let (_tx, rx) = watch::channel(Some(credentials(SystemTime::now())));
        let printed = format!("{:?}", SourceCredentialsProvider::new(Arc::new(rx)));
        assert!(!printed.contains("canary"), "{printed}");
    }
}
