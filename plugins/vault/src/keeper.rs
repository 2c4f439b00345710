//! The token keeper: a [`lease`] that logs in with a fresh JWT-SVID, renews the token at
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

use steeple_plugin_api::lease::{self, LeaseSettings, Obtained, RefreshWindow, Upstream};
use steeple_plugin_api::{BoxFuture, ExchangeError, ExchangeErrorKind, JwtSvidSource, SecretBytes};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::denial::{DenialChecks, KeptToken, Report, TokenDenials, VERDICT_WAIT, answer_all};
use crate::login::{RenewError, VaultJwtLogin};
use crate::token::{TokenVerdict, VaultToken};

/// Renew or log in again within this part of a lease: about two thirds, as Vault Agent
/// does, jittered so a fleet does not renew in lockstep.
pub const RENEW_WINDOW: RefreshWindow = RefreshWindow::between(0.62, 0.72);
/// After a refused login (role, audience, subject): wait this long, as every lease does
/// for `Fatal` errors.
pub const FATAL_RETRY: Duration = lease::FATAL_RETRY;
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
    let at = RENEW_WINDOW
        .refresh_at(token.issued_at, token.expires_at, jitter)
        .max(now);
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

    /// Runs until `shutdown`, publishing the current token (or `None`) into `tx`: the
    /// token's lease, and beside it the checks of reported denials, which drop a token
    /// Vault no longer accepts and have the lease log in at once.
    pub async fn run(mut self, tx: watch::Sender<Option<VaultToken>>, shutdown: CancellationToken) {
        let tokens = Arc::new(tx);
        let refresh_now = Arc::new(Notify::new());
        let mut settings = LeaseSettings::new("vault-token", "vault token upkeep", RENEW_WINDOW);
        settings.refresh_now = Some(refresh_now.clone());
        let upkeep = TokenUpkeep {
            login: self.login.clone(),
            jwt: self.jwt.clone(),
            tokens: tokens.clone(),
        };
        let checker = DenialChecker {
            login: self.login.clone(),
            tokens: tokens.clone(),
        };
        let inbox = self.inbox.take();
        tokio::join!(
            lease::run(upkeep, settings, shutdown.clone()),
            checker.run(inbox, refresh_now, shutdown.clone()),
        );
        self.finish(&tokens).await;
    }

    async fn finish(&self, tokens: &watch::Sender<Option<VaultToken>>) {
        let Some(token) = tokens.borrow().clone() else {
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
        tokens.send_replace(None);
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

/// The token as a lease's upstream: renewed while renewable, else a new login.
struct TokenUpkeep {
    login: Arc<VaultJwtLogin>,
    jwt: Arc<dyn JwtSvidSource>,
    tokens: Arc<watch::Sender<Option<VaultToken>>>,
}

impl Upstream for TokenUpkeep {
    type Credential = VaultToken;

    fn obtain(&self) -> BoxFuture<'_, Result<Obtained<VaultToken>, ExchangeError>> {
        Box::pin(async move {
            let current = self.tokens.borrow().clone();
            let renew = current.filter(|t| {
                matches!(
                    next_action(t, SystemTime::now(), 0.0),
                    TokenAction::Renew { .. }
                )
            });
            if let Some(token) = renew
                && let Some(renewed) = self.renew(&token).await?
            {
                return Ok(obtained(renewed));
            }
            let jwt = self
                .jwt
                .fetch(self.login.config().audience.as_str())
                .await?;
            let token = self.login.login(&jwt).await?;
            tracing::info!(
                accessor = %token.accessor,
                ttl_s = token.lease.as_secs(),
                renewable = token.renewable,
                namespace = token.namespace.as_deref().unwrap_or(""),
                "logged in to vault"
            );
            Ok(obtained(token))
        })
    }

    fn publish(&self, token: Option<VaultToken>) {
        let valid = token.filter(|t| t.is_valid_at(SystemTime::now()));
        self.tokens.send_replace(valid);
    }

    fn advice(&self, kind: ExchangeErrorKind) -> Option<&'static str> {
        (kind != ExchangeErrorKind::Transient).then_some(
            "vault refused the login; fix the role, its bound audience and subject, or the JWT auth keys",
        )
    }
}

impl TokenUpkeep {
    /// `renew-self`: the renewed token, or `None` when a new login is due (the token is
    /// revoked, expired or cannot be renewed).
    async fn renew(&self, token: &VaultToken) -> Result<Option<VaultToken>, ExchangeError> {
        match self.login.renew_self(token).await {
            Ok(renewed) => {
                if renewed.max_ttl_reached {
                    tracing::info!(accessor = %renewed.accessor, ttl_s = renewed.lease.as_secs(), "vault token reached its max TTL; logging in again before it expires");
                } else {
                    tracing::debug!(accessor = %renewed.accessor, ttl_s = renewed.lease.as_secs(), "vault token renewed");
                }
                Ok(Some(renewed))
            }
            Err(RenewError::TokenInvalid(message)) => {
                tracing::warn!(accessor = %token.accessor, error = %message, "vault refused the token (revoked or expired); logging in again");
                self.tokens.send_replace(None);
                Ok(None)
            }
            Err(RenewError::Refused(message)) => {
                tracing::info!(accessor = %token.accessor, error = %message, "vault token cannot be renewed; logging in again");
                Ok(None)
            }
            Err(e @ RenewError::Unavailable(_)) => Err(ExchangeError::new(
                ExchangeErrorKind::Transient,
                "VaultRenew",
                e.to_string(),
            )),
        }
    }
}

/// A token as the lease holds it.
fn obtained(token: VaultToken) -> Obtained<VaultToken> {
    Obtained {
        issued_at: Some(token.issued_at),
        expires_at: token.expires_at,
        credential: token,
    }
}

/// Answers the denials resolvers report: one `lookup-self` for the reports pending on
/// the current token (coalesced, spaced); a token Vault no longer accepts is dropped and
/// the lease told to log in now.
struct DenialChecker {
    login: Arc<VaultJwtLogin>,
    tokens: Arc<watch::Sender<Option<VaultToken>>>,
}

impl DenialChecker {
    async fn run(
        &self,
        mut inbox: Option<mpsc::Receiver<Report>>,
        refresh_now: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        let mut checks = DenialChecks::default();
        let mut tokens = self.tokens.subscribe();
        loop {
            let check_at = checks.check_at(tokio::time::Instant::now());
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(report) = next_report(&mut inbox) => {
                    checks.accept(report, self.current_secret().as_ref());
                }
                () = sleep_until_instant(check_at) => {
                    if self.check(&mut checks).await {
                        refresh_now.notify_one();
                    }
                }
                changed = tokens.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    checks.answer_stale(self.current_secret().as_ref());
                }
            }
        }
    }

    /// The token resolvers are sent right now, to match reports against.
    fn current_secret(&self) -> Option<SecretBytes> {
        self.tokens.borrow().as_ref().map(|t| t.token.clone())
    }

    /// One `lookup-self` for the reports pending on the current token. Returns whether
    /// the token was found dead and dropped (so: log in now).
    async fn check(&self, checks: &mut DenialChecks) -> bool {
        let now = tokio::time::Instant::now();
        let reports = checks.start_lookup(now);
        let Some(token) = self.tokens.borrow().clone() else {
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
                self.tokens.send_replace(None);
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

#[cfg(test)]
#[path = "keeper_tests.rs"]
mod tests;
