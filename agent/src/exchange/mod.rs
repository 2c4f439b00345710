//! Credential exchange: one task per exchanger trades a freshly fetched JWT-SVID for
//! upstream credentials, keeps the latest in a `watch` channel, and refreshes them ahead
//! of expiry. Every consumer reads the channel, so there is one upstream call per refresh
//! window however many consumers there are (single-flight by construction).

pub mod jwt_source;
pub mod roles;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use steeple_plugin_api::lease::{self, LeaseSettings, Obtained, RefreshWindow, Upstream, Watched};
use steeple_plugin_api::{
    BoxFuture, CredentialExchanger, ExchangeError, ExchangeErrorKind, Expiring, JwtSvidSource,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::metrics;

/// How long a `Fatal` exchange error waits before the next try (the lease default).
pub const FATAL_RETRY: Duration = lease::FATAL_RETRY;

/// When exchanged credentials are refreshed: at a random point between 60 % and 75 % of
/// their lifetime, so a fleet does not refresh in lockstep and an outage has a quarter of
/// the lifetime or more to heal (the AWS SDK's own cache refreshes only seconds before
/// expiry).
pub const REFRESH_WINDOW: RefreshWindow = RefreshWindow::between(0.60, 0.75);

/// The latest valid credentials of one exchanger (`None` before the first success and
/// after expiry).
pub type CredentialWatch<C> = watch::Receiver<Option<C>>;

/// Runs `exchanger` on a lease named `name` until `shutdown`, publishing into the
/// returned channel.
pub fn spawn<E: CredentialExchanger>(
    name: String,
    exchanger: Arc<E>,
    jwt: Arc<dyn JwtSvidSource>,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> CredentialWatch<E::Credentials> {
    let settings = LeaseSettings::new(name.clone(), "credential exchange", REFRESH_WINDOW);
    let (upstream, rx) = Watched::new(Exchange {
        label: name.clone(),
        name,
        exchanger,
        jwt,
        subject: None,
    });
    tasks.spawn(lease::run(upstream, settings, shutdown));
    rx
}

/// One exchanger fed JWT-SVIDs of its audience.
struct Exchange<E> {
    /// The lease's name in logs and audit events.
    name: String,
    /// Its `exchange` label in metrics (bounded: a side and a configured role, never a
    /// workload).
    label: String,
    exchanger: Arc<E>,
    jwt: Arc<dyn JwtSvidSource>,
    /// The SPIFFE ID whose role this is: a token naming another is never sent upstream.
    subject: Option<String>,
}

impl<E> Exchange<E> {
    /// `Err` when the token's `sub` is not the identity this exchange is for.
    fn check_subject(&self, token: &steeple_plugin_api::SecretBytes) -> Result<(), ExchangeError> {
        let Some(expected) = &self.subject else {
            return Ok(());
        };
        match crate::identity::jwt::token_subject(token.expose()) {
            Some(sub) if sub == *expected => Ok(()),
            sub => Err(ExchangeError::new(
                ExchangeErrorKind::Transient,
                "WrongJwtSvid",
                format!(
                    "the JWT-SVID fetched for {expected} names {}; not sent upstream",
                    sub.as_deref().unwrap_or("no subject")
                ),
            )),
        }
    }
}

impl<E: CredentialExchanger> Upstream for Exchange<E> {
    type Credential = E::Credentials;

    fn obtain(&self) -> BoxFuture<'_, Result<Obtained<E::Credentials>, ExchangeError>> {
        Box::pin(async move {
            let token = self.jwt.fetch(self.exchanger.audience()).await?;
            self.check_subject(&token)?;
            let credentials = self.exchanger.exchange(&token).await?;
            let expires_at = credentials.expires_at();
            tracing::info!(exchange = %self.name, expires_in_s = secs_until(expires_at), "credentials exchanged");
            Ok(Obtained {
                credential: credentials,
                issued_at: None,
                expires_at,
            })
        })
    }

    /// Unused: [`Watched`] publishes.
    fn publish(&self, _: Option<E::Credentials>) {}

    fn attempted(&self, outcome: Result<SystemTime, &ExchangeError>, took: Duration) {
        let label = match outcome {
            Ok(_) => "ok",
            Err(e) => match e.kind {
                ExchangeErrorKind::Transient => "transient",
                ExchangeErrorKind::TokenRejected => "token_rejected",
                ExchangeErrorKind::Fatal => "fatal",
            },
        };
        metrics().exchanged(&self.label, label, took);
        let expires_at = outcome.ok().map(unix_secs);
        let spiffe_id = self.subject.as_deref().unwrap_or("");
        tracing::info!(target: crate::audit::TARGET, exchange = %self.name, audience = self.exchanger.audience(), spiffe_id, outcome = label, expires_at, "exchange");
    }
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn secs_until(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
