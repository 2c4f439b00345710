//! The two small traits providers implement: [`EnvelopeResolver`] turns an envelope into
//! plaintext, [`CredentialExchanger`] trades a JWT-SVID for upstream credentials, which a
//! [`JwtSvidSource`] fetches.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use crate::{Provider, SealedEnvelope, SecretBytes};

/// A boxed future, so the traits stay object-safe (`Arc<dyn EnvelopeResolver>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A resolved envelope.
#[derive(Debug)]
pub struct Resolved {
    /// The plaintext.
    pub plaintext: SecretBytes,
    /// The key that actually decrypted it (e.g. the key ARN KMS reports), for audit.
    pub key_id: String,
}

/// Why an envelope could not be resolved. Messages name keys and error codes, never
/// plaintext, ciphertext or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// Refused by local policy before any upstream call (key outside the allowlist,
    /// provider not allowed in this profile).
    #[error("refused: {0}")]
    Refused(String),
    /// The upstream or the payload says this ciphertext cannot be decrypted as given
    /// (wrong encryption context, wrong key, tampered data). Retrying will not help.
    #[error("cannot decrypt: {0}")]
    Undecryptable(String),
    /// The upstream answered with a permanent error (access denied, key disabled).
    #[error("upstream refused: {0}")]
    Upstream(String),
    /// The upstream or the credentials it needs are unavailable right now; retry later.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
}

impl ResolveError {
    /// Whether trying again later may succeed (the last good value stays served).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Resolves envelopes of one provider.
pub trait EnvelopeResolver: Send + Sync + fmt::Debug {
    /// The provider this resolver handles.
    fn provider(&self) -> Provider;

    /// Decrypts or fetches `envelope`'s plaintext.
    fn resolve<'a>(
        &'a self,
        envelope: &'a SealedEnvelope,
    ) -> BoxFuture<'a, Result<Resolved, ResolveError>>;
}

/// Fetches a fresh JWT-SVID for an audience: the agent's Workload API client in
/// production, a test signer in tests. Exchanges and logins take one through this trait
/// so a token is never reused across them.
pub trait JwtSvidSource: Send + Sync + fmt::Debug {
    /// A freshly fetched token for `audience`, never one reused from an earlier call.
    fn fetch<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<SecretBytes, ExchangeError>>;
}

/// Something that expires.
pub trait Expiring {
    /// When it stops being valid.
    fn expires_at(&self) -> SystemTime;
}

/// How an exchange failed, which decides how the caller retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeErrorKind {
    /// Transient (throttling, 5xx, IdP unreachable): back off and retry.
    Transient,
    /// The token was refused (invalid, expired): fetch a fresh JWT-SVID and retry with
    /// backoff; reported as an error event.
    TokenRejected,
    /// Configuration or policy (access denied, malformed role): reported as an error
    /// event, retried slowly so a fix upstream recovers without a restart.
    Fatal,
}

/// Why a credential exchange failed. Never carries the token or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ExchangeError {
    /// How to retry.
    pub kind: ExchangeErrorKind,
    /// The upstream's error code (e.g. `InvalidIdentityToken`) or a local one.
    pub code: String,
    /// A human explanation, free of secrets.
    pub message: String,
}

impl ExchangeError {
    /// An error of `kind` with `code` and `message`.
    pub fn new(
        kind: ExchangeErrorKind,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Trades a JWT-SVID for credentials of some upstream.
pub trait CredentialExchanger: Send + Sync + fmt::Debug + 'static {
    /// What the exchange yields.
    type Credentials: Expiring + Clone + Send + Sync + fmt::Debug + 'static;

    /// The JWT-SVID audience this exchanger needs.
    fn audience(&self) -> &str;

    /// One exchange with a freshly fetched `jwt_svid`.
    fn exchange<'a>(
        &'a self,
        jwt_svid: &'a SecretBytes,
    ) -> BoxFuture<'a, Result<Self::Credentials, ExchangeError>>;
}

/// Short-lived AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// Access key id (not secret on its own; shown in logs as AWS does).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretBytes,
    /// Session token.
    pub session_token: SecretBytes,
    /// Expiry.
    pub expiration: SystemTime,
    /// The account of the assumed role (from STS's `AssumedRoleUser.Arn`), when known;
    /// SDKs read it as `AccountId` for account-based endpoints.
    pub account_id: Option<String>,
}

impl Expiring for AwsCredentials {
    fn expires_at(&self) -> SystemTime {
        self.expiration
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("expiration", &self.expiration)
            .field("account_id", &self.account_id)
            .finish()
    }
}
