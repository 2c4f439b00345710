//! The token keeper: one task that logs in with a fresh JWT-SVID, renews the token at
//! about two thirds of each lease, logs in again when renewal is over (not renewable, max
//! TTL reached, token revoked, renewal refused), and publishes the current token in a
//! `watch` channel the resolvers read.
//!
//! While Vault is unreachable it backs off (1 s doubling to 30 s, jittered) and keeps
//! serving the last token until it expires — never after. Only the keeper logs in. A 403
//! a resolver gets on a secret path is reported to it ([`TokenDenials`]); it checks the
//! token with one `lookup-self` (reports coalesced, lookups spaced) and logs in again at
//! once only if Vault no longer accepts the token — otherwise the 403 was the policy's
//! answer for that path, so a denied path cannot turn into a login storm.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng as _;
use steeple_plugin_api::wall_clock::{self, Deadline};
use steeple_plugin_api::{ExchangeErrorKind, JwtSvidSource, SecretBytes};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::denial::{DenialChecks, KeptToken, Report, TokenDenials, VERDICT_WAIT, answer_all};
use crate::login::{RenewError, VaultJwtLogin};
use crate::token::{TokenVerdict, VaultToken};

/// Renew or log in again at this fraction of a lease (jittered up to [`LATEST`]): about
/// two thirds, as Vault Agent does.
const EARLIEST: f64 = 0.62;
const LATEST: f64 = 0.72;
/// After a refused login (role, audience, subject): wait this long, as the agent's
/// exchange loop does for `Fatal` errors.
pub const FATAL_RETRY: Duration = Duration::from_secs(60);
/// How long revoking on shutdown may take.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the keeper does next with a token, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    /// `renew-self` at `at`.
    Renew {
        /// When.
        at: SystemTime,
    },
    /// Log in again with a fresh JWT-SVID at `at` (keeping the token until then).
    Relogin {
        /// When.
        at: SystemTime,
    },
}

impl TokenAction {
    /// When to act.
    pub fn at(&self) -> SystemTime {
        match *self {
            Self::Renew { at } | Self::Relogin { at } => at,
        }
    }
}

/// The next step for `token` at `now`: renew at 62–72 % of its lease (`jitter` in
/// `[0, 1)` picks the point) while it is renewable and below its max TTL; otherwise log in
/// again at that point. Never earlier than `now`.
pub fn next_action(token: &VaultToken, now: SystemTime, jitter: f64) -> TokenAction {
    let fraction = EARLIEST + (LATEST - EARLIEST) * jitter.clamp(0.0, 1.0);
    let at = (token.issued_at + token.lease.mul_f64(fraction)).max(now);
    if token.renewable && !token.max_ttl_reached {
        TokenAction::Renew { at }
    } else {
        TokenAction::Relogin { at }
    }
}

/// Keeps one Vault token alive for the resolvers (see the module docs).
#[derive(Debug)]
pub struct VaultTokenKeeper {
    login: Arc<VaultJwtLogin>,
    jwt: Arc<dyn JwtSvidSource>,
    revoke_on_shutdown: bool,
    denials: TokenDenials,
    inbox: Option<mpsc::Receiver<Report>>,
}

/// What to do next and when.
#[derive(Debug, Clone, Copy)]
enum Op {
    Login,
    Renew,
}

/// The keeper's mutable state: the current token, retry pacing, log-noise control.
struct State {
    tx: watch::Sender<Option<VaultToken>>,
    current: Option<VaultToken>,
    backoff: Backoff,
    last_error: Option<String>,
}

/// What woke the keeper's loop.
enum Wake {
    Shutdown,
    Due,
    Expired,
    Denied(Report),
    Check,
}

impl VaultTokenKeeper {
    /// A keeper logging in through `login` with JWT-SVIDs from `jwt`; it does not revoke
    /// on shutdown unless told to.
    pub fn new(login: Arc<VaultJwtLogin>, jwt: Arc<dyn JwtSvidSource>) -> Self {
        let (denials, inbox) = TokenDenials::channel();
        Self {
            login,
            jwt,
            revoke_on_shutdown: false,
            denials,
            inbox: Some(inbox),
        }
    }

    /// Where resolvers report a token Vault denied; the keeper answers while it runs.
    pub fn denials(&self) -> TokenDenials {
        self.denials.clone()
    }

    /// Revoke the token (`revoke-self`) on shutdown, so it dies with the agent.
    pub fn revoke_on_shutdown(mut self, revoke: bool) -> Self {
        self.revoke_on_shutdown = revoke;
        self
    }

    /// Spawns the keeper on `tasks` and returns its token for the resolvers (the channel
    /// it publishes into, with denials reported back to it).
    pub fn spawn(
        self,
        shutdown: CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> KeptToken {
        let (tx, rx) = watch::channel(None);
        let kept = KeptToken::new(rx, self.denials());
        tasks.spawn(self.run(tx, shutdown));
        kept
    }

    /// Runs until `shutdown`, publishing the current token (or `None`) into `tx`.
    pub async fn run(mut self, tx: watch::Sender<Option<VaultToken>>, shutdown: CancellationToken) {
        let mut state = State {
            tx,
            current: None,
            backoff: Backoff::default(),
            last_error: None,
        };
        let mut inbox = self.inbox.take();
        let mut checks = DenialChecks::default();
        let (mut op, mut at) = (Op::Login, SystemTime::now());
        loop {
            let expiry = state.current.as_ref().map(|t| t.expires_at);
            let check_at = checks.check_at(tokio::time::Instant::now());
            let wake = tokio::select! {
                () = shutdown.cancelled() => Wake::Shutdown,
                Some(report) = next_report(&mut inbox) => Wake::Denied(report),
                () = sleep_until_instant(check_at) => Wake::Check,
                () = sleep_until(Some(at)) => Wake::Due,
                () = sleep_until(expiry) => Wake::Expired,
            };
            match wake {
                Wake::Shutdown => break,
                Wake::Due => {}
                Wake::Expired => {
                    tracing::warn!(
                        "vault token expired before it was renewed or replaced; no longer served"
                    );
                    state.clear();
                    checks.answer_stale(None);
                    (op, at) = (Op::Login, SystemTime::now());
                    continue;
                }
                Wake::Denied(report) => {
                    checks.accept(report, state.current_secret());
                    continue;
                }
                Wake::Check => {
                    if self.check_denied(&mut state, &mut checks).await {
                        (op, at) = (Op::Login, SystemTime::now());
                    }
                    continue;
                }
            }
            let step = async {
                match op {
                    Op::Login => self.login_step(&mut state).await,
                    Op::Renew => self.renew_step(&mut state).await,
                }
            };
            (op, at) = tokio::select! {
                () = shutdown.cancelled() => break,
                next = step => next,
            };
            checks.answer_stale(state.current_secret());
        }
        drop(checks);
        self.finish(state).await;
    }

    /// One `lookup-self` for the reports pending on the current token. Returns whether
    /// the token was found dead and dropped (so: log in now).
    async fn check_denied(&self, state: &mut State, checks: &mut DenialChecks) -> bool {
        let now = tokio::time::Instant::now();
        let reports = checks.start_lookup(now);
        let Some(token) = state.current.clone() else {
            answer_all(reports, TokenVerdict::Replaced);
            return false;
        };
        let lookup = tokio::time::timeout(VERDICT_WAIT, self.login.lookup_self(&token)).await;
        let verdict = match lookup {
            Ok(Ok(())) => {
                tracing::debug!(accessor = %token.accessor, "vault denied a path but still accepts the token: a policy answer");
                TokenVerdict::Valid
            }
            Ok(Err(RenewError::TokenInvalid(message))) if checks.may_relogin(now) => {
                tracing::warn!(accessor = %token.accessor, error = %message, "vault denied a request and no longer accepts the token (revoked or expired); logging in again");
                state.clear();
                TokenVerdict::Replaced
            }
            Ok(Err(RenewError::TokenInvalid(message))) => {
                tracing::warn!(accessor = %token.accessor, error = %message, "vault denies lookup-self soon after a new login; not logging in again (does the policy grant read on auth/token/lookup-self?)");
                TokenVerdict::Unknown
            }
            Ok(Err(e)) => {
                tracing::debug!(accessor = %token.accessor, error = %e, "could not check a denied vault token");
                TokenVerdict::Unknown
            }
            Err(_) => {
                tracing::debug!(accessor = %token.accessor, "checking a denied vault token timed out");
                TokenVerdict::Unknown
            }
        };
        answer_all(reports, verdict);
        verdict == TokenVerdict::Replaced
    }

    async fn login_step(&self, state: &mut State) -> (Op, SystemTime) {
        let attempt = async {
            let jwt = self
                .jwt
                .fetch(self.login.config().audience.as_str())
                .await?;
            self.login.login(&jwt).await
        };
        match attempt.await {
            Ok(token) => {
                tracing::info!(
                    accessor = %token.accessor,
                    ttl_s = token.lease.as_secs(),
                    renewable = token.renewable,
                    namespace = token.namespace.as_deref().unwrap_or(""),
                    "logged in to vault"
                );
                state.succeeded(token)
            }
            Err(e) => {
                let delay = match e.kind {
                    ExchangeErrorKind::Fatal => FATAL_RETRY,
                    _ => state.backoff.next_delay(),
                };
                if e.kind == ExchangeErrorKind::Transient {
                    state.failed("vault login", &e.to_string(), delay);
                } else {
                    state.refused(&e.to_string(), delay);
                }
                (Op::Login, SystemTime::now() + delay)
            }
        }
    }

    async fn renew_step(&self, state: &mut State) -> (Op, SystemTime) {
        let Some(token) = state.current.clone() else {
            return (Op::Login, SystemTime::now());
        };
        match self.login.renew_self(&token).await {
            Ok(renewed) => {
                if renewed.max_ttl_reached {
                    tracing::info!(accessor = %renewed.accessor, ttl_s = renewed.lease.as_secs(), "vault token reached its max TTL; logging in again before it expires");
                } else {
                    tracing::debug!(accessor = %renewed.accessor, ttl_s = renewed.lease.as_secs(), "vault token renewed");
                }
                state.succeeded(renewed)
            }
            Err(RenewError::TokenInvalid(message)) => {
                tracing::warn!(accessor = %token.accessor, error = %message, "vault refused the token (revoked or expired); logging in again");
                state.clear();
                (Op::Login, SystemTime::now())
            }
            Err(RenewError::Refused(message)) => {
                tracing::info!(accessor = %token.accessor, error = %message, "vault token cannot be renewed; logging in again");
                (Op::Login, SystemTime::now())
            }
            Err(e @ RenewError::Unavailable(_)) => {
                let delay = state.backoff.next_delay();
                state.failed("vault token renewal", &e.to_string(), delay);
                (Op::Renew, SystemTime::now() + delay)
            }
        }
    }

    async fn finish(&self, mut state: State) {
        let Some(token) = state.current.take() else {
            return;
        };
        if !self.revoke_on_shutdown || !token.is_valid_at(SystemTime::now()) {
            return;
        }
        match tokio::time::timeout(REVOKE_TIMEOUT, self.login.revoke_self(&token)).await {
            Ok(Ok(())) => {
                tracing::info!(accessor = %token.accessor, "vault token revoked on shutdown")
            }
            Ok(Err(e)) => {
                tracing::warn!(accessor = %token.accessor, error = %e, "could not revoke the vault token on shutdown")
            }
            Err(_) => {
                tracing::warn!(accessor = %token.accessor, "revoking the vault token on shutdown timed out")
            }
        }
        state.tx.send_replace(None);
    }
}

/// Runs a [`VaultTokenKeeper`] until `shutdown` (the function form of
/// [`VaultTokenKeeper::run`]).
pub async fn keep_token(
    login: Arc<VaultJwtLogin>,
    jwt: Arc<dyn JwtSvidSource>,
    tx: watch::Sender<Option<VaultToken>>,
    shutdown: CancellationToken,
    revoke_on_shutdown: bool,
) {
    VaultTokenKeeper::new(login, jwt)
        .revoke_on_shutdown(revoke_on_shutdown)
        .run(tx, shutdown)
        .await;
}

impl State {
    /// Publishes `token` and schedules its upkeep.
    fn succeeded(&mut self, token: VaultToken) -> (Op, SystemTime) {
        if self.last_error.take().is_some() {
            tracing::info!("vault token upkeep recovered");
        }
        self.backoff.reset();
        let now = SystemTime::now();
        let action = next_action(&token, now, rand::rng().random::<f64>());
        if token.is_valid_at(now) {
            self.current = Some(token.clone());
            self.tx.send_replace(Some(token));
        } else {
            self.clear();
        }
        match action {
            TokenAction::Renew { at } => (Op::Renew, at),
            TokenAction::Relogin { at } => (Op::Login, at),
        }
    }

    /// Logs a failure: the first of its kind at WARN, identical repeats at DEBUG.
    fn failed(&mut self, what: &str, message: &str, retry: Duration) {
        let retry_in_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
        let serving = self.current.is_some();
        if self.last_error.as_deref() == Some(message) {
            tracing::debug!(%what, error = %message, retry_in_ms, serving_token = serving, "still failing");
        } else {
            tracing::warn!(%what, error = %message, retry_in_ms, serving_token = serving, "failed; retrying with backoff");
            self.last_error = Some(message.to_owned());
        }
    }

    /// Logs a login Vault refused (role, audience, subject, signature) as an ERROR event
    /// the first time, identical repeats at DEBUG.
    fn refused(&mut self, message: &str, retry: Duration) {
        let retry_in_s = retry.as_secs();
        let serving = self.current.is_some();
        if self.last_error.as_deref() == Some(message) {
            tracing::debug!(error = %message, retry_in_s, serving_token = serving, "vault login still refused");
        } else {
            tracing::error!(error = %message, retry_in_s, serving_token = serving, "vault refused the login; fix the role, its bound audience and subject, or the JWT auth keys");
            self.last_error = Some(message.to_owned());
        }
    }

    /// The token resolvers are sent right now, to match reports against.
    fn current_secret(&self) -> Option<&SecretBytes> {
        self.current.as_ref().map(|t| &t.token)
    }

    fn clear(&mut self) {
        self.current = None;
        self.tx.send_replace(None);
    }
}

/// The next denial report (never, without an inbox or once every sender is gone).
async fn next_report(inbox: &mut Option<mpsc::Receiver<Report>>) -> Option<Report> {
    match inbox {
        Some(rx) => match rx.recv().await {
            Some(report) => Some(report),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Sleeps until `at` (forever for `None`).
async fn sleep_until_instant(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until the wall-clock time `at` (forever for `None`), also across a host
/// suspend (see [`wall_clock`]).
async fn sleep_until(at: Option<SystemTime>) {
    wall_clock::reached(at.map(Deadline::at)).await;
}

#[cfg(test)]
#[path = "keeper_tests.rs"]
mod tests;
