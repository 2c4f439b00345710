//! Holding a credential that expires: one task per lease obtains it from its upstream,
//! publishes it, obtains a fresh one within a [`RefreshWindow`] of its lifetime, and
//! withdraws it the moment it expires without a successor. Everything reads what the
//! lease published, so there is one upstream call per refresh however many consumers
//! there are (single flight by construction).
//!
//! Failures are retried with [`Backoff`] (a [`Fatal`](ExchangeErrorKind::Fatal) one after
//! [`LeaseSettings::fatal_retry`], so a fix upstream recovers without a restart and
//! without a storm of attempts); the first of a kind is logged at its level, identical
//! repeats at DEBUG, the recovery once ([`RepeatFilter`]). Every wait holds on the wall
//! clock too ([`crate::wall_clock`]): after a host suspend an expired credential is
//! withdrawn and the refresh runs at once.
//!
//! [`LeaseSet`] runs one lease per key (a workload identity and audience, a role) for as
//! long as someone holds it.

mod backoff;
mod repeat;
mod set;
mod watched;
mod window;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use repeat::RepeatFilter;
pub use set::{LeaseHandle, LeaseSet};
pub use watched::Watched;
pub use window::{MIN_DELAY, RefreshWindow};

use crate::wall_clock::{self, Deadline};
use crate::{BoxFuture, ExchangeError, ExchangeErrorKind};

/// A credential as an upstream handed it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obtained<C> {
    /// The credential.
    pub credential: C,
    /// When its lifetime began, if the upstream says (else: when it was asked for).
    pub issued_at: Option<SystemTime>,
    /// When it stops being valid.
    pub expires_at: SystemTime,
}

/// Where a lease gets its credential from and where it puts it.
pub trait Upstream: Send + Sync + 'static {
    /// What the lease holds.
    type Credential: Send + 'static;

    /// One attempt at a fresh credential.
    fn obtain(&self) -> BoxFuture<'_, Result<Obtained<Self::Credential>, ExchangeError>>;

    /// Publishes a fresh credential (`Some`) or withdraws the expired one (`None`).
    fn publish(&self, credential: Option<Self::Credential>);

    /// Called after every attempt with its outcome (the expiry, or the error) and how
    /// long it took: for metrics and audit events. Nothing by default.
    fn attempted(&self, outcome: Result<SystemTime, &ExchangeError>, took: Duration) {
        let _ = (outcome, took);
    }

    /// What to tell the operator, as the event's message, the first time an attempt
    /// fails with `kind`; `None` for the lease's generic text ("… failed; retrying with
    /// backoff", "… refused; fix the configuration or policy").
    fn advice(&self, kind: ExchangeErrorKind) -> Option<&'static str> {
        let _ = kind;
        None
    }
}

/// How a lease paces itself and names itself in logs.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The lease's name in every event (e.g. `aws-sts`, `jwt-svid/<name>`).
    pub name: String,
    /// What the upstream call is, as logs say it (e.g. `credential exchange`).
    pub what: &'static str,
    /// When within a credential's lifetime the next one is obtained.
    pub window: RefreshWindow,
    /// Retry pacing after a transient or rejected attempt.
    pub backoff: Backoff,
    /// The wait after a [`Fatal`](ExchangeErrorKind::Fatal) error.
    pub fatal_retry: Duration,
    /// Notified to obtain a fresh credential now (e.g. the held one was found revoked),
    /// whatever the window or a backoff says.
    pub refresh_now: Option<Arc<Notify>>,
}

/// The wait after a `Fatal` error unless a lease says otherwise: long enough not to
/// hammer an upstream that refuses on policy, short enough that a fix applies soon.
pub const FATAL_RETRY: Duration = Duration::from_secs(60);

impl LeaseSettings {
    /// Settings named `name`, calling the upstream `what`, refreshing within `window`,
    /// with the default backoff (1 s doubling to 30 s) and [`FATAL_RETRY`].
    pub fn new(name: impl Into<String>, what: &'static str, window: RefreshWindow) -> Self {
        Self {
            name: name.into(),
            what,
            window,
            backoff: Backoff::default(),
            fatal_retry: FATAL_RETRY,
            refresh_now: None,
        }
    }
}

/// Runs the lease until `shutdown` (see the module docs).
pub async fn run<U: Upstream>(upstream: U, settings: LeaseSettings, shutdown: CancellationToken) {
    let mut state = State {
        backoff: settings.backoff.clone(),
        errors: RepeatFilter::default(),
        expiry: None,
    };
    loop {
        let started = (SystemTime::now(), tokio::time::Instant::now());
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = upstream.obtain() => outcome,
        };
        let took = started.1.elapsed();
        upstream.attempted(outcome.as_ref().map(|o| o.expires_at), took);
        let delay = match outcome {
            Ok(obtained) => state.obtained(&upstream, &settings, obtained, started.0),
            Err(e) => state.failed(&upstream, &settings, &e),
        };
        let retry = Deadline::after(delay);
        loop {
            if state.expiry.is_some_and(|at| at.passed()) {
                tracing::warn!(lease = %settings.name, "{}: credentials expired before a refresh succeeded; no longer served", settings.what);
                upstream.publish(None);
                state.expiry = None;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = retry.reached() => break,
                () = notified(settings.refresh_now.as_deref()) => break,
                () = wall_clock::reached(state.expiry) => {}
            }
        }
    }
}

/// Returns when `notify` is notified (never without one).
async fn notified(notify: Option<&Notify>) {
    match notify {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

/// A running lease's pacing and memory.
struct State {
    backoff: Backoff,
    errors: RepeatFilter,
    /// The published credential's expiry.
    expiry: Option<Deadline>,
}

impl State {
    /// Publishes `obtained`; returns the delay to its refresh.
    fn obtained<U: Upstream>(
        &mut self,
        upstream: &U,
        settings: &LeaseSettings,
        obtained: Obtained<U::Credential>,
        asked_at: SystemTime,
    ) -> Duration {
        if self.errors.clear() {
            tracing::info!(lease = %settings.name, "{} recovered", settings.what);
        }
        self.backoff.reset();
        let issued_at = obtained.issued_at.unwrap_or(asked_at);
        self.expiry = Some(Deadline::at(obtained.expires_at));
        upstream.publish(Some(obtained.credential));
        settings.window.delay(
            issued_at,
            obtained.expires_at,
            SystemTime::now(),
            rand::random(),
        )
    }

    /// Logs `e` (repeats at DEBUG); returns the delay to the next attempt.
    fn failed<U: Upstream>(
        &mut self,
        upstream: &U,
        settings: &LeaseSettings,
        e: &ExchangeError,
    ) -> Duration {
        let delay = match e.kind {
            ExchangeErrorKind::Fatal => settings.fatal_retry,
            _ => self.backoff.next_delay(),
        };
        let (lease, what) = (&settings.name, settings.what);
        let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let serving_cached = self.expiry.is_some();
        if self.errors.repeats(&e.to_string()) {
            tracing::debug!(%lease, code = %e.code, error = %e.message, retry_in_ms, serving_cached, "{what} still failing");
            return delay;
        }
        if let Some(advice) = upstream.advice(e.kind) {
            if e.kind == ExchangeErrorKind::Transient {
                tracing::warn!(%lease, code = %e.code, error = %e.message, retry_in_ms, serving_cached, "{advice}");
            } else {
                tracing::error!(%lease, code = %e.code, error = %e.message, retry_in_ms, serving_cached, "{advice}");
            }
            return delay;
        }
        match e.kind {
            ExchangeErrorKind::Transient => {
                tracing::warn!(%lease, code = %e.code, error = %e.message, retry_in_ms, serving_cached, "{what} failed; retrying with backoff")
            }
            ExchangeErrorKind::TokenRejected => {
                tracing::error!(%lease, code = %e.code, error = %e.message, retry_in_ms, serving_cached, "{what}: the JWT-SVID was rejected; retrying with a fresh one")
            }
            ExchangeErrorKind::Fatal => {
                tracing::error!(%lease, code = %e.code, error = %e.message, retry_in_ms, serving_cached, "{what} refused; fix the configuration or policy")
            }
        }
        delay
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
