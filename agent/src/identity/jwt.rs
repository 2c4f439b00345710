//! JWT-SVIDs per configured audience: fetched from the Workload API, served as generic
//! secrets, and re-fetched well before they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use steeple_plugin_api::lease::{self, LeaseSettings, Obtained, RefreshWindow, Upstream};
use steeple_plugin_api::{BoxFuture, ExchangeError, ExchangeErrorKind, SecretBytes};
use steeple_proto::workload::JwtsvidRequest;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

use super::{WorkloadApiClient, request};
use crate::config::JwtSvidConfig;
use crate::store::{Secret, SecretStore, Source};

/// When a fresh token is fetched: at 60 % of its lifetime, without jitter. SPIRE agent
/// hands out its cached token until half the lifetime is gone, so asking later than half
/// gets a new one; 0.6 leaves 40 % of the lifetime to absorb an outage. (No jitter: the
/// agent, not a fleet, decides when the token changes.)
pub const REFRESH_WINDOW: RefreshWindow = RefreshWindow::at(0.6);

/// The times a JWT-SVID carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtTimes {
    /// `iat`, or the fetch time when absent.
    pub issued_at: SystemTime,
    /// `exp`.
    pub expires_at: SystemTime,
}

/// Why a JWT-SVID from the Workload API was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts with a JSON payload.
    #[error("not a JWS compact token")]
    Malformed,
    /// No numeric `exp` claim.
    #[error("no exp claim")]
    NoExpiry,
    /// Already expired.
    #[error("already expired")]
    Expired,
}

/// A JWS compact token's payload claims (unverified).
fn claims(token: &str) -> Result<serde_json::Value, JwtError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bytes = engine
        .decode(payload.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// A token's `sub` claim (unverified: the token came from SPIRE, and the upstream it is
/// sent to verifies it), to check it is the identity it was fetched for.
pub fn token_subject(token: &[u8]) -> Option<String> {
    let claims = claims(std::str::from_utf8(token).ok()?).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

/// Reads `iat`/`exp` from a token's payload (the signature is the Workload API's
/// business; Steeple only needs to know when to refresh).
pub fn token_times(token: &str, now: SystemTime) -> Result<JwtTimes, JwtError> {
    let claims = claims(token)?;
    let at = |claim: &str| {
        claims
            .get(claim)
            .and_then(serde_json::Value::as_u64)
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
    };
    let expires_at = at("exp").ok_or(JwtError::NoExpiry)?;
    if expires_at <= now {
        return Err(JwtError::Expired);
    }
    let issued_at = at("iat").filter(|t| *t <= now).unwrap_or(now);
    Ok(JwtTimes {
        issued_at,
        expires_at,
    })
}

/// A fetched JWT-SVID as a lease's credential, its times read from its claims; `token`
/// is zeroized either way.
pub fn take_token(token: &mut String) -> Result<Obtained<SecretBytes>, JwtError> {
    let obtained = token_times(token, SystemTime::now()).map(|times| Obtained {
        credential: SecretBytes::copy_from(token.as_bytes()),
        issued_at: Some(times.issued_at),
        expires_at: times.expires_at,
    });
    token.zeroize();
    obtained
}

/// How long one FetchJWTSVID may take before it counts as failed (and is retried).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One audience's JWT-SVID from the Workload API, kept in the store under its resource
/// name by a [`lease`].
struct JwtSvidUpstream {
    client: WorkloadApiClient,
    store: Arc<SecretStore>,
    source: Source,
    config: JwtSvidConfig,
}

impl Upstream for JwtSvidUpstream {
    type Credential = SecretBytes;

    fn obtain(&self) -> BoxFuture<'_, Result<Obtained<SecretBytes>, ExchangeError>> {
        Box::pin(async move {
            let req = JwtsvidRequest {
                audience: vec![self.config.audience.clone()],
                spiffe_id: self.config.spiffe_id.clone().unwrap_or_default(),
            };
            let mut client = self.client.clone();
            let response = tokio::time::timeout(FETCH_TIMEOUT, client.fetch_jwtsvid(request(req)))
                .await
                .map_err(|_| fetch_error(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())))?
                .map_err(|status| fetch_error(status.message().to_owned()))?;
            let Some(mut svid) = response.into_inner().svids.into_iter().next() else {
                return Err(fetch_error("response carried no JWT-SVID".into()));
            };
            take_token(&mut svid.svid).map_err(|e| fetch_error(format!("JWT-SVID refused: {e}")))
        })
    }

    fn publish(&self, token: Option<SecretBytes>) {
        let Some(token) = token else {
            self.store.sync_source(&self.source, Vec::new());
            return;
        };
        let entry = (self.config.resource_name.clone(), Secret::Generic(token));
        if self.store.sync_source(&self.source, vec![entry]) {
            tracing::info!(audience = %self.config.audience, name = %self.config.resource_name, "JWT-SVID refreshed");
        }
    }
}

/// A failed FetchJWTSVID: always worth retrying (the Workload API may be restarting, or
/// the entry not yet synced).
fn fetch_error(message: String) -> ExchangeError {
    ExchangeError::new(ExchangeErrorKind::Transient, "FetchJWTSVID", message)
}

/// Keeps one audience's JWT-SVID in the store until `shutdown`.
pub async fn run(
    client: WorkloadApiClient,
    store: Arc<SecretStore>,
    config: JwtSvidConfig,
    shutdown: CancellationToken,
) {
    let settings = LeaseSettings::new(
        format!("jwt-svid/{}", config.resource_name),
        "FetchJWTSVID",
        REFRESH_WINDOW,
    );
    let upstream = JwtSvidUpstream {
        client,
        store,
        source: Source::JwtSvid(config.resource_name.clone()),
        config,
    };
    lease::run(upstream, settings, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("e30.{}.sig", engine.encode(claims))
    }

    #[test]
    fn reads_times_and_refreshes_past_half_life() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let times = token_times(&token(r#"{"iat":1000,"exp":1100}"#), now).unwrap();
        let delay = REFRESH_WINDOW.delay(times.issued_at, times.expires_at, now, 0.5);
        assert_eq!(delay, Duration::from_secs(60));
    }

    #[test]
    fn reads_the_subject_of_a_well_formed_token_only() {
        let token = token(r#"{"sub":"spiffe://td/a","exp":1}"#);
        assert_eq!(
            token_subject(token.as_bytes()).as_deref(),
            Some("spiffe://td/a")
        );
        assert_eq!(token_subject(b"not.a.jwt"), None);
        assert_eq!(token_subject(&[0xff, b'.', b'.']), None);
    }

    #[test]
    fn refuses_malformed_and_expired_tokens() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(matches!(token_times("abc", now), Err(JwtError::Malformed)));
        assert!(matches!(
            token_times("a.!!.c", now),
            Err(JwtError::Malformed)
        ));
        assert!(matches!(
            token_times(&token(r#"{"iat":1}"#), now),
            Err(JwtError::NoExpiry)
        ));
        assert!(matches!(
            token_times(&token(r#"{"exp":999}"#), now),
            Err(JwtError::Expired)
        ));
    }
}
