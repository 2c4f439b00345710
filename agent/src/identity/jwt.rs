//! JWT-SVIDs per configured audience: fetched from the Workload API, served as generic
//! secrets, and re-fetched well before they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use steeple_plugin_api::SecretBytes;
use steeple_plugin_api::wall_clock::{self, Deadline};
use steeple_proto::workload::JwtsvidRequest;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

use super::backoff::{Backoff, RepeatFilter};
use super::{WorkloadApiClient, request};
use crate::config::JwtSvidConfig;
use crate::store::{Secret, SecretStore};

/// Fraction of a token's lifetime after which a fresh one is fetched. SPIRE agent hands
/// out its cached token until half the lifetime is gone, so asking later than half
/// gets a new one; 0.6 leaves 40 % of the lifetime to absorb an outage.
const REFRESH_AT: f64 = 0.6;

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

/// Reads `iat`/`exp` from a token's payload (the signature is the Workload API's
/// business; Steeple only needs to know when to refresh).
pub fn token_times(token: &str, now: SystemTime) -> Result<JwtTimes, JwtError> {
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
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
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

/// When to fetch again: `REFRESH_AT` of the way through the token's life, at least 1 s on.
pub fn refresh_delay(times: JwtTimes, now: SystemTime) -> Duration {
    let life = times
        .expires_at
        .duration_since(times.issued_at)
        .unwrap_or_default();
    let refresh_at = times.issued_at + life.mul_f64(REFRESH_AT);
    refresh_at
        .duration_since(now)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// How long one FetchJWTSVID may take before it counts as failed (and is retried).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The store source of the JWT-SVID served as `resource_name`.
pub fn source_name(resource_name: &str) -> String {
    format!("identity/jwt/{resource_name}")
}

/// Keeps one audience's JWT-SVID in the store until `shutdown`.
pub async fn run(
    mut client: WorkloadApiClient,
    store: Arc<SecretStore>,
    config: JwtSvidConfig,
    shutdown: CancellationToken,
) {
    let source = source_name(&config.resource_name);
    let what = format!("FetchJWTSVID audience={}", config.audience);
    let mut backoff = Backoff::default();
    let mut errors = RepeatFilter::default();
    let mut current_expiry: Option<Deadline> = None;
    loop {
        let req = JwtsvidRequest {
            audience: vec![config.audience.clone()],
            spiffe_id: config.spiffe_id.clone().unwrap_or_default(),
        };
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(FETCH_TIMEOUT, client.fetch_jwtsvid(request(req))) => {
                r.unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded(format!("no answer within {}s", FETCH_TIMEOUT.as_secs()))))
            }
        };
        let delay = match outcome.map(|r| r.into_inner().svids.into_iter().next()) {
            Ok(Some(mut svid)) => {
                let now = SystemTime::now();
                let times = token_times(&svid.svid, now);
                let delay = match times {
                    Ok(times) => {
                        errors.recovered(&what);
                        backoff.reset();
                        let token = Secret::Generic(SecretBytes::copy_from(svid.svid.as_bytes()));
                        if store.sync_source(&source, vec![(config.resource_name.clone(), token)]) {
                            tracing::info!(audience = %config.audience, name = %config.resource_name, "JWT-SVID refreshed");
                        }
                        current_expiry = Some(Deadline::at(times.expires_at));
                        refresh_delay(times, now)
                    }
                    Err(e) => {
                        errors.warn(&what, format!("JWT-SVID refused: {e}"));
                        backoff.next_delay()
                    }
                };
                svid.svid.zeroize();
                delay
            }
            Ok(None) => {
                errors.warn(&what, "response carried no JWT-SVID".into());
                backoff.next_delay()
            }
            Err(status) => {
                errors.warn(&what, status.message().to_owned());
                backoff.next_delay()
            }
        };
        // Both deadlines hold on the wall clock too, so a host waking from a suspend past
        // the token's expiry withdraws it at once.
        let refresh = Deadline::after(delay);
        loop {
            if current_expiry.is_some_and(|t| t.passed()) {
                tracing::warn!(audience = %config.audience, "JWT-SVID expired before a fresh one arrived; no longer served");
                store.sync_source(&source, Vec::new());
                current_expiry = None;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = refresh.reached() => break,
                () = wall_clock::reached(current_expiry) => {}
            }
        }
    }
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
        assert_eq!(refresh_delay(times, now), Duration::from_secs(60));
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
