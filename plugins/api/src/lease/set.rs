//! One lease per key, for as long as someone holds it: the first [`LeaseSet::acquire`] of
//! a key starts its lease, later ones share it, and the lease stops when the last
//! [`LeaseHandle`] of its key is dropped. The node agent keys leases by workload identity
//! and audience or role.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::watched::Watched;
use super::{LeaseSettings, Upstream};

type Leases<K, C> = Arc<Mutex<HashMap<K, Running<C>>>>;

/// The leases running now, by key.
pub struct LeaseSet<K, C> {
    leases: Leases<K, C>,
    shutdown: CancellationToken,
}

/// One running lease.
struct Running<C> {
    credential: watch::Receiver<Option<C>>,
    holders: usize,
    stop: CancellationToken,
}

/// A hold on one key's lease: its latest credential, and the lease kept running until
/// this (and every other handle of the key) is dropped.
pub struct LeaseHandle<K: Eq + Hash, C> {
    key: K,
    credential: watch::Receiver<Option<C>>,
    leases: Leases<K, C>,
}

fn lock<K, C>(leases: &Leases<K, C>) -> MutexGuard<'_, HashMap<K, Running<C>>> {
    leases.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K, C> LeaseSet<K, C>
where
    K: Eq + Hash + Clone,
    C: Send + Sync + 'static,
{
    /// An empty set whose leases all stop with `shutdown`.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            leases: Arc::default(),
            shutdown: shutdown.clone(),
        }
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
                stop,
            }
        });
        running.holders += 1;
        LeaseHandle {
            key,
            credential: running.credential.clone(),
            leases: self.leases.clone(),
        }
    }

    /// How many leases run now.
    pub fn running(&self) -> usize {
        lock(&self.leases).len()
    }
}

impl<K: Eq + Hash, C> LeaseHandle<K, C> {
    /// The key held.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The lease's latest credential (`None` before the first and after expiry).
    pub fn credential(&self) -> &watch::Receiver<Option<C>> {
        &self.credential
    }
}

impl<K: Eq + Hash, C> Drop for LeaseHandle<K, C> {
    fn drop(&mut self) {
        let mut leases = lock(&self.leases);
        if let Some(running) = leases.get_mut(&self.key) {
            running.holders = running.holders.saturating_sub(1);
            if running.holders == 0 {
                running.stop.cancel();
                leases.remove(&self.key);
            }
        }
    }
}
