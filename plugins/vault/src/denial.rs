//! Denied tokens: a resolver that gets HTTP 403 while using the keeper's token reports it
//! here, and the keeper — after one `lookup-self` — tells it whether the token itself is
//! dead (revoked out of band, expired early: log in again now, keep the last good values)
//! or the 403 was the policy's answer for that path (withdraw the secret).
//!
//! Reports for the same token are coalesced into one lookup, and lookups are at least
//! [`MIN_CHECK_INTERVAL`] apart, so a denied path cannot turn into a lookup or login storm.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use steeple_plugin_api::{BoxFuture, SecretBytes};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::token::{TokenSource, TokenVerdict, VaultToken};

/// Lookups of a denied token are at least this far apart.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// How long a resolver waits for the keeper's verdict before answering "try again soon".
pub const VERDICT_WAIT: Duration = Duration::from_secs(5);
/// A token found dead this soon after the previous lookup-driven login is not replaced
/// again: more likely the policy lacks `auth/token/lookup-self` than two revocations.
pub(crate) const RELOGIN_SPACING: Duration = Duration::from_secs(30);
/// Reports queued for the keeper at most (resolvers are few and each waits its verdict).
const INBOX: usize = 64;

/// One report: the denied token and where its verdict goes.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) token: SecretBytes,
    pub(crate) reply: oneshot::Sender<TokenVerdict>,
}

impl Report {
    /// Sends `verdict`; a resolver that stopped waiting is not an error.
    pub(crate) fn answer(self, verdict: TokenVerdict) {
        let _ = self.reply.send(verdict);
    }
}

/// The resolvers' side: reports a denied token to the keeper and waits for its verdict.
/// Cheap to clone.
#[derive(Clone)]
pub struct TokenDenials {
    tx: mpsc::Sender<Report>,
}

impl fmt::Debug for TokenDenials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenDenials")
            .field("keeper_running", &!self.tx.is_closed())
            .finish()
    }
}

impl TokenDenials {
    /// A reporting handle and the inbox the keeper reads.
    pub(crate) fn channel() -> (Self, mpsc::Receiver<Report>) {
        let (tx, rx) = mpsc::channel(INBOX);
        (Self { tx }, rx)
    }

    /// Tells the keeper Vault denied `token` and waits (at most [`VERDICT_WAIT`]) for
    /// its verdict.
    pub async fn report(&self, token: &SecretBytes) -> TokenVerdict {
        let (reply, verdict) = oneshot::channel();
        let ask = async {
            let report = Report {
                token: token.clone(),
                reply,
            };
            if self.tx.send(report).await.is_err() {
                return TokenVerdict::Unknown;
            }
            verdict.await.unwrap_or(TokenVerdict::Unknown)
        };
        tokio::time::timeout(VERDICT_WAIT, ask)
            .await
            .unwrap_or(TokenVerdict::Pending)
    }
}

/// The keeper's token as resolvers use it: the current token from its channel, with
/// denials reported back to it.
#[derive(Debug, Clone)]
pub struct KeptToken {
    tokens: watch::Receiver<Option<VaultToken>>,
    denials: TokenDenials,
}

impl KeptToken {
    /// The token published in `tokens`, denials reported through `denials` (both from
    /// the same [`VaultTokenKeeper`](crate::VaultTokenKeeper)).
    pub fn new(tokens: watch::Receiver<Option<VaultToken>>, denials: TokenDenials) -> Self {
        Self { tokens, denials }
    }

    /// The keeper's channel (for whoever also serves or watches the token).
    pub fn channel(&self) -> &watch::Receiver<Option<VaultToken>> {
        &self.tokens
    }

    /// As an `Arc<dyn TokenSource>` for the resolvers.
    pub fn shared(self) -> Arc<dyn TokenSource> {
        Arc::new(self)
    }
}

impl TokenSource for KeptToken {
    fn token(&self) -> Option<SecretBytes> {
        self.tokens.token()
    }

    fn denied<'a>(&'a self, token: &'a SecretBytes) -> BoxFuture<'a, TokenVerdict> {
        Box::pin(self.denials.report(token))
    }
}

/// The keeper's side: pending reports, and when the next lookup may run.
#[derive(Debug, Default)]
pub(crate) struct DenialChecks {
    pending: Vec<Report>,
    last_lookup: Option<Instant>,
    last_relogin: Option<Instant>,
}

impl DenialChecks {
    /// Takes `report`: a token other than `current` is already gone (answered
    /// [`TokenVerdict::Replaced`] at once); the current one waits for the next lookup.
    pub(crate) fn accept(&mut self, report: Report, current: Option<&SecretBytes>) {
        if current == Some(&report.token) {
            self.pending.push(report);
        } else {
            report.answer(TokenVerdict::Replaced);
        }
    }

    /// When the next lookup should run: `None` with nothing pending, else now or
    /// [`MIN_CHECK_INTERVAL`] after the previous one.
    pub(crate) fn check_at(&self, now: Instant) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        Some(
            self.last_lookup
                .map_or(now, |last| (last + MIN_CHECK_INTERVAL).max(now)),
        )
    }

    /// The reports one lookup starting at `now` answers.
    pub(crate) fn start_lookup(&mut self, now: Instant) -> Vec<Report> {
        self.last_lookup = Some(now);
        std::mem::take(&mut self.pending)
    }

    /// Answers [`TokenVerdict::Replaced`] to reports whose token is no longer `current`
    /// (after a renewal failure or a new login).
    pub(crate) fn answer_stale(&mut self, current: Option<&SecretBytes>) {
        let (keep, stale) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|r| current == Some(&r.token));
        self.pending = keep;
        answer_all(stale, TokenVerdict::Replaced);
    }

    /// Whether a lookup-driven login may happen at `now` (and records it if so).
    pub(crate) fn may_relogin(&mut self, now: Instant) -> bool {
        if self
            .last_relogin
            .is_some_and(|last| now.saturating_duration_since(last) < RELOGIN_SPACING)
        {
            return false;
        }
        self.last_relogin = Some(now);
        true
    }
}

/// Sends `verdict` to every report in `reports`.
pub(crate) fn answer_all(reports: Vec<Report>, verdict: TokenVerdict) {
    for report in reports {
        report.answer(verdict);
    }
}

#[cfg(test)]
#[path = "denial_tests.rs"]
mod tests;
