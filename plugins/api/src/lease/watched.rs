//! A lease whose credential is published into a `watch` channel, for consumers that read
//! the latest (`None` before the first and after expiry).

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{Obtained, Upstream};
use crate::{BoxFuture, ExchangeError};

/// `upstream`, publishing into a `watch` channel instead of wherever it would.
pub struct Watched<U: Upstream> {
    upstream: U,
    tx: watch::Sender<Option<U::Credential>>,
}

impl<U: Upstream> Watched<U>
where
    U::Credential: Sync,
{
    /// `upstream` publishing into a new channel, and that channel's first receiver.
    pub fn new(upstream: U) -> (Self, watch::Receiver<Option<U::Credential>>) {
        let (tx, rx) = watch::channel(None);
        (Self { upstream, tx }, rx)
    }
}

impl<U: Upstream> Upstream for Watched<U>
where
    U::Credential: Sync,
{
    type Credential = U::Credential;

    fn obtain(&self) -> BoxFuture<'_, Result<Obtained<U::Credential>, ExchangeError>> {
        self.upstream.obtain()
    }

    fn publish(&self, credential: Option<U::Credential>) {
        self.tx.send_replace(credential);
    }

    fn attempted(&self, outcome: Result<SystemTime, &ExchangeError>, took: Duration) {
        self.upstream.attempted(outcome, took);
    }
}
