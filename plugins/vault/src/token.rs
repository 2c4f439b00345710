//! Vault tokens: what a login or renewal yields ([`VaultToken`]), and where resolvers take
//! the current one from — and report it denied to ([`TokenSource`]).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use steeple_plugin_api::{BoxFuture, Expiring, ResolveError, SecretBytes};
use tokio::sync::watch;
use zeroize::Zeroize as _;

use crate::client::VaultError;

/// The lease assumed for a token Vault reports without one (lease 0: no TTL), so it is
/// still re-checked now and then instead of being trusted forever.
pub const NO_TTL_LEASE: Duration = Duration::from_secs(3600);

/// What the keeper made of a token Vault denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenVerdict {
    /// `lookup-self` accepts the token: the 403 is the policy's answer for that path.
    Valid,
    /// The token is revoked or expired, or was already replaced: a new one is (being)
    /// fetched; try again shortly.
    Replaced,
    /// The keeper did not answer within [`VERDICT_WAIT`](crate::VERDICT_WAIT) (busy logging in or checking):
    /// try again shortly.
    Pending,
    /// Nobody could tell: nothing keeps this token (a fixed token, a stopped keeper), or
    /// the check itself failed. Treated like [`TokenVerdict::Valid`]: fail closed.
    Unknown,
}

impl TokenVerdict {
    /// Whether the denial should be retried soon with the last good value kept, rather
    /// than taken as the policy's final answer.
    pub fn retry_soon(self) -> bool {
        matches!(self, Self::Replaced | Self::Pending)
    }
}

/// A Vault token from a login or renewal.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultToken {
    /// The token itself (`X-Vault-Token`).
    pub token: SecretBytes,
    /// The token's accessor: names it for lookup and revocation, grants nothing on its own.
    pub accessor: String,
    /// The lease granted by the last login or renewal.
    pub lease: Duration,
    /// Whether Vault allows `renew-self` (batch tokens and some roles do not).
    pub renewable: bool,
    /// When the current lease started (login or last renewal).
    pub issued_at: SystemTime,
    /// When the current lease ends.
    pub expires_at: SystemTime,
    /// A renewal granted less than asked: the token is at its max TTL and only a new
    /// login extends access.
    pub max_ttl_reached: bool,
    /// The namespace the token was issued in (`None`: the client's default).
    pub namespace: Option<String>,
}

impl fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultToken")
            .field("token", &self.token)
            .field("accessor", &self.accessor)
            .field("lease", &self.lease)
            .field("renewable", &self.renewable)
            .field("expires_at", &self.expires_at)
            .field("max_ttl_reached", &self.max_ttl_reached)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Expiring for VaultToken {
    fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

impl VaultToken {
    /// Whether the token is still within its lease at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }
}

/// The `auth` block of a login or renewal answer.
#[derive(Deserialize)]
struct AuthAnswer {
    auth: Option<Auth>,
}

#[derive(Deserialize)]
struct Auth {
    client_token: String,
    #[serde(default)]
    accessor: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

impl Drop for Auth {
    fn drop(&mut self) {
        self.client_token.zeroize();
    }
}

/// Reads the token from a login or renewal `body`, whose lease started at `issued_at`.
pub(crate) fn token_from_answer(
    body: &[u8],
    path: &str,
    issued_at: SystemTime,
    namespace: Option<&str>,
) -> Result<VaultToken, VaultError> {
    let malformed = |problem: &str| VaultError::Malformed {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let answer: AuthAnswer =
        serde_json::from_slice(body).map_err(|_| malformed("not an auth answer"))?;
    let auth = answer.auth.ok_or_else(|| malformed("no auth block"))?;
    if auth.client_token.is_empty() {
        return Err(malformed("empty client_token"));
    }
    let lease = match auth.lease_duration {
        0 => NO_TTL_LEASE,
        seconds => Duration::from_secs(seconds),
    };
    Ok(VaultToken {
        token: SecretBytes::copy_from(auth.client_token.as_bytes()),
        accessor: auth.accessor.clone(),
        lease,
        renewable: auth.renewable && auth.lease_duration > 0,
        issued_at,
        expires_at: issued_at + lease,
        max_ttl_reached: false,
        namespace: namespace.map(str::to_owned),
    })
}

/// Where resolvers take the token to send: the token keeper's channel in the agent, a
/// fixed token in tests and one-shot tools.
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// The token to use now, or `None` while no valid token is held (before the first
    /// login, after expiry).
    fn token(&self) -> Option<SecretBytes>;

    /// Reports that Vault answered 403 to `token` on a secret path and returns, within
    /// [`VERDICT_WAIT`](crate::VERDICT_WAIT), what the token's keeper made of it.
    /// The default has no keeper to ask: [`TokenVerdict::Unknown`].
    fn denied<'a>(&'a self, token: &'a SecretBytes) -> BoxFuture<'a, TokenVerdict> {
        let _ = token;
        Box::pin(std::future::ready(TokenVerdict::Unknown))
    }
}

/// A 403 on `what` once the keeper's `verdict` is in: a token being replaced is
/// retried soon (the registry keeps the last good value); otherwise `policy_denial`
/// stands — the policy's answer, and the secret is withdrawn.
pub(crate) fn denial_error(
    verdict: TokenVerdict,
    what: &str,
    policy_denial: ResolveError,
) -> ResolveError {
    match verdict {
        TokenVerdict::Replaced => ResolveError::Unavailable(format!(
            "vault denied the token on {what}: it was revoked or expired and a new login is under way"
        )),
        TokenVerdict::Pending => ResolveError::Unavailable(format!(
            "vault denied the token on {what}; the token keeper is still checking it"
        )),
        _ => policy_denial,
    }
}

impl TokenSource for watch::Receiver<Option<VaultToken>> {
    fn token(&self) -> Option<SecretBytes> {
        let now = SystemTime::now();
        self.borrow()
            .as_ref()
            .filter(|t| t.is_valid_at(now))
            .map(|t| t.token.clone())
    }
}

/// A fixed token (a pre-issued token for a one-shot tool, or a test's).
#[derive(Debug, Clone)]
pub struct StaticToken(pub SecretBytes);

impl TokenSource for StaticToken {
    fn token(&self) -> Option<SecretBytes> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &[u8] = br#"{"auth":{"client_token":"s.canarytoken","accessor":"acc1",
        "lease_duration":60,"renewable":true,"policies":["default"]}}"#;

    #[test]
    fn parses_auth_and_redacts_the_token() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let token = token_from_answer(ANSWER, "auth/jwt/login", t0, Some("ns1")).unwrap();
        assert_eq!(token.token.expose(), b"s.canarytoken");
        assert_eq!(token.accessor, "acc1");
        assert_eq!(token.lease, Duration::from_secs(60));
        assert_eq!(token.expires_at, t0 + Duration::from_secs(60));
        assert!(token.renewable && !token.max_ttl_reached);
        assert_eq!(token.namespace.as_deref(), Some("ns1"));
        let printed = format!("{token:?}");
        assert!(!printed.contains("canary"), "{printed}");
        assert!(printed.contains("acc1"), "{printed}");
    }

    #[test]
    fn no_ttl_tokens_get_a_bounded_lease_and_bad_answers_fail() {
        let t0 = SystemTime::UNIX_EPOCH;
        let body = br#"{"auth":{"client_token":"s.x","lease_duration":0,"renewable":true}}"#;
        let token = token_from_answer(body, "p", t0, None).unwrap();
        assert_eq!(token.lease, NO_TTL_LEASE);
        assert!(!token.renewable);
        for body in [&b"{}"[..], b"nope", br#"{"auth":{"client_token":""}}"#] {
            let err = token_from_answer(body, "auth/jwt/login", t0, None).unwrap_err();
            assert!(matches!(err, VaultError::Malformed { .. }), "{err}");
        }
    }

    #[test]
    fn watch_source_serves_only_unexpired_tokens() {
        let now = SystemTime::now();
        let body = br#"{"auth":{"client_token":"s.x","lease_duration":60}}"#;
        let fresh = token_from_answer(body, "p", now, None).unwrap();
        let mut stale = fresh.clone();
        stale.expires_at = now - Duration::from_secs(1);
        let (tx, rx) = watch::channel(None);
        assert!(rx.token().is_none());
        tx.send_replace(Some(stale));
        assert!(rx.token().is_none());
        tx.send_replace(Some(fresh));
        assert_eq!(rx.token().unwrap().expose(), b"s.x");
    }
}
