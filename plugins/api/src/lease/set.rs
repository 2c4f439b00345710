//! One lease per key, for as long as someone holds it: the first [`LeaseSet::acquire`] of
//! a key starts its lease, later ones share it, and the lease stops when the last
//! [`LeaseHandle`] of its key is dropped — or, with [`LeaseSet::with_linger`], that long
//! after, unless the key is held again meanwhile. The node agent keys leases by workload
//! identity and role.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::watched::Watched;
use super::{LeaseSettings, Upstream};

type Leases<K, C> = Arc<Mutex<HashMap<K, Running<C>>>>;

/// The leases running now, by key.
pub struct LeaseSet<K, C> {
    leases: Leases<K, C>,
    shutdown: CancellationToken,
    linger: Duration,
}

/// One running lease.
struct Running<C> {
    credential: watch::Receiver<Option<C>>,
    holders: usize,
    /// Bumped by every acquire, so a linger timer knows whether the key was held again.
    acquired: u64,
    stop: CancellationToken,
}

/// A hold on one key's lease: its latest credential, and the lease kept running until
/// this (and every other handle of the key) is dropped.
pub struct LeaseHandle<K: Eq + Hash + Clone + Send + 'static, C: Send + Sync + 'static> {
    key: K,
    credential: watch::Receiver<Option<C>>,
    leases: Leases<K, C>,
    linger: Duration,
}

fn lock<K, C>(leases: &Leases<K, C>) -> MutexGuard<'_, HashMap<K, Running<C>>> {
    leases.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K, C> LeaseSet<K, C>
where
    K: Eq + Hash + Clone + Send + 'static,
    C: Send + Sync + 'static,
{
    /// An empty set whose leases all stop with `shutdown`.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            leases: Arc::default(),
            shutdown: shutdown.clone(),
            linger: Duration::ZERO,
        }
    }

    /// Keeps a lease running for `linger` after its last handle is dropped, so a
    /// consumer that comes back within it (an SDK polling for credentials) finds it warm.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// A hold on `key`'s lease, started now from `start()` if none runs (on the current
    /// tokio runtime).
    pub fn acquire<U>(
        &self,
        key: K,
        start: impl FnOnce() -> (U, LeaseSettings),
    ) -> LeaseHandle<K, C>
    where
        U: Upstream<Credential = C>,
    {
        let mut leases = lock(&self.leases);
        let running = leases.entry(key.clone()).or_insert_with(|| {
            let (upstream, settings) = start();
            let (watched, credential) = Watched::new(upstream);
            let stop = self.shutdown.child_token();
            tokio::spawn(super::run(watched, settings, stop.clone()));
            Running {
                credential,
                holders: 0,
                acquired: 0,
                stop,
            }
        });
        running.holders += 1;
        running.acquired += 1;
        LeaseHandle {
            key,
            credential: running.credential.clone(),
            leases: self.leases.clone(),
            linger: self.linger,
        }
    }

    /// How many leases run now.
    pub fn running(&self) -> usize {
        lock(&self.leases).len()
    }
}

impl<K: Eq + Hash + Clone + Send + 'static, C: Send + Sync + 'static> LeaseHandle<K, C> {
    /// The key held.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The lease's latest credential (`None` before the first and after expiry).
    pub fn credential(&self) -> &watch::Receiver<Option<C>> {
        &self.credential
    }
}

impl<K: Eq + Hash + Clone + Send + 'static, C: Send + Sync + 'static> Drop for LeaseHandle<K, C> {
    fn drop(&mut self) {
        let mut leases = lock(&self.leases);
        let Some(running) = leases.get_mut(&self.key) else {
            return;
        };
        running.holders = running.holders.saturating_sub(1);
        if running.holders > 0 {
            return;
        }
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(runtime) if !self.linger.is_zero() && !running.stop.is_cancelled() => {
                let timer = LingerTimer {
                    key: self.key.clone(),
                    acquired: running.acquired,
                    stop: running.stop.clone(),
                    leases: self.leases.clone(),
                };
                runtime.spawn(timer.run(self.linger));
            }
            _ => {
                running.stop.cancel();
                leases.remove(&self.key);
            }
        }
    }
}

impl<K, C> std::fmt::Debug for LeaseHandle<K, C>
where
    K: Eq + Hash + Clone + Send + std::fmt::Debug + 'static,
    C: Send + Sync + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHandle")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Stops a lease left without holders once its linger is over, unless it was held again.
struct LingerTimer<K, C> {
    key: K,
    acquired: u64,
    stop: CancellationToken,
    leases: Leases<K, C>,
}

impl<K: Eq + Hash, C> LingerTimer<K, C> {
    async fn run(self, linger: Duration) {
        tokio::select! {
            () = tokio::time::sleep(linger) => {}
            () = self.stop.cancelled() => {}
        }
        let mut leases = lock(&self.leases);
        let idle = leases
            .get(&self.key)
            .is_some_and(|r| r.holders == 0 && r.acquired == self.acquired);
        if idle {
            self.stop.cancel();
            leases.remove(&self.key);
        }
    }
}
