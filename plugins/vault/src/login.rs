//! JWT auth: a JWT-SVID is traded for a Vault token at `auth/<mount>/login`, which is then
//! renewed with `renew-self` and revoked with `revoke-self`.

use std::time::SystemTime;

use serde::Serialize;
use steeple_plugin_api::{
    BoxFuture, CredentialExchanger, ExchangeError, ExchangeErrorKind, SecretBytes,
};

use crate::client::{Call, VaultClient, VaultError, encode_path, json_body};
use crate::token::{VaultToken, token_from_answer};

/// Where and as whom to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultJwtLoginConfig {
    /// The JWT auth method's mount. Default `jwt`.
    pub auth_mount: String,
    /// The role to log in as (its `bound_audiences` and `bound_subject` must match the
    /// JWT-SVID). Required.
    pub role: String,
    /// The audience of the JWT-SVIDs fetched for the login. Required; by convention
    /// `vault` or Vault's address.
    pub audience: String,
    /// The namespace the auth mount lives in (`None`: the client's default).
    pub namespace: Option<String>,
}

impl Default for VaultJwtLoginConfig {
    fn default() -> Self {
        Self {
            auth_mount: "jwt".to_owned(),
            role: String::new(),
            audience: String::new(),
            namespace: None,
        }
    }
}

/// Why a renewal or revocation failed, which decides what the token keeper does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// Vault is unreachable, sealed or overloaded: keep the token, retry with backoff.
    #[error("vault unavailable: {0}")]
    Unavailable(String),
    /// Vault refused the token itself (403: revoked, expired, unknown): it is useless
    /// now; log in again.
    #[error("token refused: {0}")]
    TokenInvalid(String),
    /// Vault refused the renewal but not the token (not renewable, odd answer): it still
    /// works until it expires; log in again before then.
    #[error("renewal refused: {0}")]
    Refused(String),
}

impl From<VaultError> for RenewError {
    fn from(e: VaultError) -> Self {
        match e.status() {
            _ if e.is_transient() => Self::Unavailable(e.to_string()),
            Some(403) => Self::TokenInvalid(e.to_string()),
            Some(400) if e.vault_errors().contains("bad token") => {
                Self::TokenInvalid(e.to_string())
            }
            _ => Self::Refused(e.to_string()),
        }
    }
}

/// Logs in to Vault with JWT-SVIDs: the [`CredentialExchanger`] for Vault tokens.
#[derive(Debug, Clone)]
pub struct VaultJwtLogin {
    client: VaultClient,
    config: VaultJwtLoginConfig,
}

#[derive(Serialize)]
struct LoginBody<'a> {
    role: &'a str,
    jwt: &'a str,
}

#[derive(Serialize)]
struct RenewBody {
    increment: String,
}

impl VaultJwtLogin {
    /// A login through `client` as described by `config`.
    pub fn new(client: VaultClient, config: VaultJwtLoginConfig) -> Self {
        Self { client, config }
    }

    /// The client logins, renewals and revocations go through.
    pub fn client(&self) -> &VaultClient {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &VaultJwtLoginConfig {
        &self.config
    }

    fn namespace(&self) -> Option<&str> {
        self.config
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(self.client.namespace())
    }

    /// `POST auth/<mount>/login {"role","jwt"}`. Errors carry Vault's messages, never
    /// the JWT.
    pub async fn login(&self, jwt: &SecretBytes) -> Result<VaultToken, ExchangeError> {
        let jwt = std::str::from_utf8(jwt.expose()).map_err(|_| {
            ExchangeError::new(
                ExchangeErrorKind::TokenRejected,
                "JwtNotUtf8",
                "the JWT-SVID is not UTF-8 text",
            )
        })?;
        let path = format!(
            "auth/{}/login",
            encode_path(self.config.auth_mount.trim_matches('/'))
        );
        let body = json_body(&LoginBody {
            role: &self.config.role,
            jwt,
        });
        let namespace = self.namespace();
        let issued_at = SystemTime::now();
        let answer = self
            .client
            .send(Call {
                method: reqwest::Method::POST,
                path: &path,
                namespace,
                token: None,
                body: Some(body),
            })
            .await
            .map_err(|e| login_error(&e, &self.config.role))?;
        token_from_answer(&answer.body, &path, issued_at, namespace)
            .map_err(|e| login_error(&e, &self.config.role))
    }

    /// `POST auth/token/renew-self`, asking for the token's current lease again. A
    /// shorter grant means the token reached its max TTL (see
    /// [`VaultToken::max_ttl_reached`]).
    pub async fn renew_self(&self, token: &VaultToken) -> Result<VaultToken, RenewError> {
        let path = "auth/token/renew-self";
        let body = json_body(&RenewBody {
            increment: format!("{}s", token.lease.as_secs()),
        });
        let issued_at = SystemTime::now();
        let answer = self
            .client
            .send(Call {
                method: reqwest::Method::POST,
                path,
                namespace: token.namespace.as_deref(),
                token: Some(&token.token),
                body: Some(body),
            })
            .await?;
        let mut renewed = token_from_answer(&answer.body, path, issued_at, None)?;
        if renewed.token != token.token {
            return Err(RenewError::Refused(
                "renew-self answered for another token".to_owned(),
            ));
        }
        renewed.max_ttl_reached = renewed.lease < token.lease;
        renewed.namespace.clone_from(&token.namespace);
        Ok(renewed)
    }

    /// `GET auth/token/lookup-self`: whether Vault still accepts `token` at all
    /// ([`RenewError::TokenInvalid`] when revoked or expired).
    pub async fn lookup_self(&self, token: &VaultToken) -> Result<(), RenewError> {
        self.client
            .send(Call {
                method: reqwest::Method::GET,
                path: "auth/token/lookup-self",
                namespace: token.namespace.as_deref(),
                token: Some(&token.token),
                body: None,
            })
            .await?;
        Ok(())
    }

    /// `POST auth/token/revoke-self` (on shutdown, when configured).
    pub async fn revoke_self(&self, token: &VaultToken) -> Result<(), RenewError> {
        self.client
            .send(Call {
                method: reqwest::Method::POST,
                path: "auth/token/revoke-self",
                namespace: token.namespace.as_deref(),
                token: Some(&token.token),
                body: None,
            })
            .await?;
        Ok(())
    }
}

impl CredentialExchanger for VaultJwtLogin {
    type Credentials = VaultToken;

    fn audience(&self) -> &str {
        &self.config.audience
    }

    fn exchange<'a>(
        &'a self,
        jwt_svid: &'a SecretBytes,
    ) -> BoxFuture<'a, Result<VaultToken, ExchangeError>> {
        Box::pin(self.login(jwt_svid))
    }
}

/// Vault's messages for a JWT that may pass when fetched again (expired, not yet valid,
/// a signing key Vault has not seen yet). Everything else a login refuses is
/// configuration: a role, audience, subject or issuer that does not match.
const TOKEN_PROBLEMS: [&str; 7] = [
    "token is expired",
    "not yet valid",
    "issued in the future",
    "signature",
    "compact jws",
    "malformed",
    "failed to parse",
];

/// Maps a failed login to how the exchange loop retries it.
pub fn login_error(e: &VaultError, role: &str) -> ExchangeError {
    let message = format!("login as role {role:?}: {e}");
    if e.is_transient() {
        let code = match e {
            VaultError::Unreachable { .. } => "VaultUnreachable",
            _ => "VaultUnavailable",
        };
        return ExchangeError::new(ExchangeErrorKind::Transient, code, message);
    }
    let errors = e.vault_errors().to_lowercase();
    if matches!(e, VaultError::Api { status: 400, .. })
        && TOKEN_PROBLEMS.iter().any(|p| errors.contains(p))
    {
        return ExchangeError::new(
            ExchangeErrorKind::TokenRejected,
            "VaultJwtRejected",
            message,
        );
    }
    ExchangeError::new(ExchangeErrorKind::Fatal, "VaultLoginRefused", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, error: &str) -> VaultError {
        VaultError::Api {
            path: "auth/jwt/login".into(),
            status,
            errors: vec![error.into()],
        }
    }

    #[test]
    fn login_errors_map_to_retry_kinds() {
        use ExchangeErrorKind::*;
        let cases = [
            // Messages as OpenBao 2.4 sends them.
            (
                400,
                "error validating token: invalid audience (aud) claim: audience claim does not match any expected audience",
                Fatal,
            ),
            (
                400,
                "error validating token: invalid subject (sub) claim",
                Fatal,
            ),
            (
                400,
                "error validating token: invalid issuer (iss) claim",
                Fatal,
            ),
            (400, "role \"nope\" could not be found", Fatal),
            (403, "permission denied", Fatal),
            (
                404,
                "no handler for route \"auth/jwt/login\". route entry not found.",
                Fatal,
            ),
            (
                400,
                "error validating token: invalid expiration time (exp) claim: token is expired",
                TokenRejected,
            ),
            (
                400,
                "error validating token: error verifying token signature: no known key successfully validated the token signature",
                TokenRejected,
            ),
            (
                400,
                "error validating token: error verifying token signature: go-jose/go-jose: compact JWS format must have three parts",
                TokenRejected,
            ),
            (503, "Vault is sealed", Transient),
            (429, "rate limit", Transient),
            (500, "internal error", Transient),
        ];
        for (status, text, kind) in cases {
            let e = login_error(&api(status, text), "web");
            assert_eq!(e.kind, kind, "{status} {text}");
            assert!(e.message.contains(text), "{e}");
            assert!(e.message.contains("\"web\""), "{e}");
        }
        let down = VaultError::Unreachable {
            addr: "http://127.0.0.1:1".into(),
            message: "connection refused".into(),
        };
        let e = login_error(&down, "web");
        assert_eq!((e.kind, e.code.as_str()), (Transient, "VaultUnreachable"));
    }

    #[test]
    fn renew_errors_say_whether_the_token_is_gone() {
        assert!(matches!(
            RenewError::from(api(403, "permission denied")),
            RenewError::TokenInvalid(_)
        ));
        assert!(matches!(
            RenewError::from(api(400, "bad token")),
            RenewError::TokenInvalid(_)
        ));
        assert!(matches!(
            RenewError::from(api(400, "lease is not renewable")),
            RenewError::Refused(_)
        ));
        assert!(matches!(
            RenewError::from(api(503, "sealed")),
            RenewError::Unavailable(_)
        ));
    }

    #[test]
    fn login_body_carries_role_and_jwt_only() {
        let body = json_body(&LoginBody {
            role: "web",
            jwt: "a.b.c",
        });
        assert_eq!(&body[..], br#"{"role":"web","jwt":"a.b.c"}"#);
    }
}
