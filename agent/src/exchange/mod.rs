//! Credential exchange: one task per exchanger trades a freshly fetched JWT-SVID for
//! upstream credentials, keeps the latest in a `watch` channel, and refreshes them ahead
//! of expiry. Every consumer reads the channel, so there is one upstream call per refresh
//! window however many consumers there are (single-flight by construction).

pub mod aws_delivery;
pub mod container_endpoint;
pub mod jwt_source;
pub mod refresh;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use steeple_plugin_api::wall_clock::{self, Deadline};
use steeple_plugin_api::{
    CredentialExchanger, ExchangeError, ExchangeErrorKind, Expiring, JwtSvidSource,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::identity::backoff::Backoff;
use crate::metrics::metrics;

/// How long a `Fatal` exchange error waits before the next try, so a fix upstream (a
/// trust policy, a role) recovers without a restart and without a login storm.
pub const FATAL_RETRY: Duration = Duration::from_secs(60);

/// The latest valid credentials of one exchanger (`None` before the first success and
/// after expiry).
pub type CredentialWatch<C> = watch::Receiver<Option<C>>;

/// Runs `exchanger` until `shutdown`, publishing into the returned channel.
pub fn spawn<E: CredentialExchanger>(
    name: String,
    exchanger: Arc<E>,
    jwt: Arc<dyn JwtSvidSource>,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> CredentialWatch<E::Credentials> {
    let (tx, rx) = watch::channel(None);
    tasks.spawn(run(name, exchanger, jwt, tx, shutdown));
    rx
}

/// The exchange loop (see the module docs).
pub async fn run<E: CredentialExchanger>(
    name: String,
    exchanger: Arc<E>,
    jwt: Arc<dyn JwtSvidSource>,
    tx: watch::Sender<Option<E::Credentials>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut last_error: Option<ExchangeError> = None;
    // The current credentials' expiry. Both waits below hold on the wall clock too: after
    // a host suspend, expired credentials are withdrawn and the refresh runs at once.
    let mut expiry: Option<Deadline> = None;
    loop {
        let started = SystemTime::now();
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            r = exchange_once(&*exchanger, &*jwt) => r,
        };
        let label = match &outcome {
            Ok(_) => "ok",
            Err(e) => match e.kind {
                ExchangeErrorKind::Transient => "transient",
                ExchangeErrorKind::TokenRejected => "token_rejected",
                ExchangeErrorKind::Fatal => "fatal",
            },
        };
        let elapsed = SystemTime::now()
            .duration_since(started)
            .unwrap_or_default();
        metrics().exchanged(&name, label, elapsed);
        let expires_at = outcome.as_ref().ok().map(|c| unix_secs(c.expires_at()));
        tracing::info!(target: crate::audit::TARGET, exchange = %name, audience = exchanger.audience(), outcome = label, expires_at, "exchange");
        let delay = match outcome {
            Ok(credentials) => {
                let expires_at = credentials.expires_at();
                if last_error.take().is_some() {
                    tracing::info!(exchange = %name, "credential exchange recovered");
                }
                tracing::info!(exchange = %name, expires_in_s = secs_until(expires_at), "credentials exchanged");
                tx.send_replace(Some(credentials));
                expiry = Some(Deadline::at(expires_at));
                backoff.reset();
                refresh::delay(started, expires_at, SystemTime::now(), rand::random())
            }
            Err(e) => {
                let delay = match e.kind {
                    ExchangeErrorKind::Fatal => FATAL_RETRY,
                    _ => backoff.next_delay(),
                };
                report(&name, &e, last_error.as_ref(), delay, tx.borrow().is_some());
                last_error = Some(e);
                delay
            }
        };
        let retry = Deadline::after(delay);
        loop {
            if expiry.is_some_and(|at| at.passed()) {
                tracing::warn!(exchange = %name, "credentials expired before a refresh succeeded; no longer served");
                tx.send_replace(None);
                expiry = None;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = retry.reached() => break,
                () = wall_clock::reached(expiry) => {}
            }
        }
    }
}

async fn exchange_once<E: CredentialExchanger>(
    exchanger: &E,
    jwt: &dyn JwtSvidSource,
) -> Result<E::Credentials, ExchangeError> {
    let token = jwt.fetch(exchanger.audience()).await?;
    exchanger.exchange(&token).await
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Error events: the first of a kind at its level, identical repeats at DEBUG.
fn report(
    name: &str,
    e: &ExchangeError,
    last: Option<&ExchangeError>,
    retry: Duration,
    serving: bool,
) {
    let retry_in_s = retry.as_secs();
    if last == Some(e) {
        tracing::debug!(exchange = %name, error = %e, retry_in_s, "credential exchange still failing");
        return;
    }
    match e.kind {
        ExchangeErrorKind::Transient => {
            tracing::warn!(exchange = %name, code = %e.code, error = %e.message, retry_in_s, serving_cached = serving, "credential exchange failed; retrying with backoff")
        }
        ExchangeErrorKind::TokenRejected => {
            tracing::error!(exchange = %name, code = %e.code, error = %e.message, retry_in_s, serving_cached = serving, "JWT-SVID rejected by the exchange; retrying with a fresh one")
        }
        ExchangeErrorKind::Fatal => {
            tracing::error!(exchange = %name, code = %e.code, error = %e.message, retry_in_s, serving_cached = serving, "credential exchange refused; fix the configuration or policy")
        }
    }
}

fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}

fn secs_until(at: SystemTime) -> u64 {
    until(at).as_secs()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
