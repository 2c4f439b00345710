//! Envelopes resolved per workload identity, on a node agent whose `[[workloads]]` give
//! each workload its own roles: a `kms_envelope`, `vault_transit` or `vault_delegate`
//! envelope served to workload W is decrypted with W's own AWS role or Vault token, so
//! KMS key policies and Vault policies apply per workload and their audit logs name W.
//!
//! One registry per workload identity, started when one of its workloads first asks for
//! an envelope, resolving only the envelopes its workloads asked for (and `[[callers]]`
//! granted them), shared by all of its processes and streams, kept [`LINGER`] after the
//! last one left — so there is one decrypt per (envelope version, identity) per refresh
//! window, however many consumers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use steeple_plugin_api::EnvelopeResolver;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RowSink;
use super::registry::{Registry, RegistrySettings};
use super::scope::Scope;
use crate::store::{DemandRefused, SecretStore};

/// How long an identity's envelopes stay resolved after its last workload left.
pub const LINGER: Duration = Duration::from_secs(10 * 60);
/// Most envelope names one identity's workloads may ask for.
const MAX_WANTED: usize = 1024;

/// What decrypts with one identity's own roles (each side offers its providers).
pub trait IdentityResolvers: Send + Sync + std::fmt::Debug {
    /// Resolvers decrypting as `spiffe_id` (none when no role of this side maps it), and
    /// what must be held while they are used (its role leases).
    fn for_identity(&self, spiffe_id: &str) -> IdentityProviders;
}

/// One identity's resolvers of one side.
#[derive(Default)]
pub struct IdentityProviders {
    /// The resolvers.
    pub resolvers: Vec<Arc<dyn EnvelopeResolver>>,
    /// Held as long as they are (role leases).
    pub holds: Vec<Box<dyn Send + Sync>>,
}

/// The per-identity registries of a node agent.
#[derive(Debug)]
pub struct WorkloadEnvelopes {
    sides: Mutex<Vec<Arc<dyn IdentityResolvers>>>,
    settings: Mutex<RegistrySettings>,
    rows: RowSink,
    live: Mutex<HashMap<String, Weak<IdentityEnvelopes>>>,
    lingering: Mutex<HashMap<String, (Arc<IdentityEnvelopes>, Instant)>>,
    shutdown: CancellationToken,
}

/// One identity's envelopes, resolved while this is held.
pub struct IdentityEnvelopes {
    store: Arc<SecretStore>,
    wanted: watch::Sender<BTreeSet<String>>,
    known: watch::Receiver<BTreeSet<String>>,
    stop: CancellationToken,
    _holds: Vec<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for IdentityEnvelopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityEnvelopes")
            .field("wanted", &self.wanted.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Drop for IdentityEnvelopes {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl IdentityEnvelopes {
    /// Where its resolved envelopes are (source [`super::registry::SOURCE`]).
    pub fn store(&self) -> &Arc<SecretStore> {
        &self.store
    }

    /// Whether `name` is the SDS name of an envelope row (one this identity could get).
    pub fn serves(&self, name: &str) -> bool {
        self.known.borrow().contains(name)
    }

    /// Starts resolving the envelopes among `names` (others are ignored).
    pub fn want(&self, names: &[&str]) -> Result<(), DemandRefused> {
        let new: Vec<&str> = {
            let wanted = self.wanted.borrow();
            names
                .iter()
                .copied()
                .filter(|n| self.serves(n) && !wanted.contains(*n))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        if self.wanted.borrow().len() + new.len() > MAX_WANTED {
            return Err(DemandRefused::Limit(format!(
                "a workload identity may have at most {MAX_WANTED} envelopes resolved for it"
            )));
        }
        self.wanted.send_modify(|wanted| {
            wanted.extend(new.into_iter().map(str::to_owned));
        });
        Ok(())
    }
}

impl WorkloadEnvelopes {
    /// Per-identity registries resolving `rows` with `settings` (the shared registry's).
    pub fn new(settings: RegistrySettings, rows: RowSink, shutdown: &CancellationToken) -> Self {
        Self {
            sides: Mutex::default(),
            settings: Mutex::new(settings),
            rows,
            live: Mutex::default(),
            lingering: Mutex::default(),
            shutdown: shutdown.clone(),
        }
    }

    /// Adds a side's per-identity providers (at start, before any workload asks).
    pub fn provide(&self, side: Arc<dyn IdentityResolvers>) {
        self.sides
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(side);
    }

    /// The settings registries started from now on use (a reload changed them).
    pub fn set_settings(&self, settings: RegistrySettings) {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = settings;
    }

    /// `spiffe_id`'s envelopes, resolved from now if they were not; they stay resolved
    /// while the result is held, and [`LINGER`] after.
    pub fn acquire(&self, spiffe_id: &str) -> Arc<IdentityEnvelopes> {
        let envelopes = {
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            match live.get(spiffe_id).and_then(Weak::upgrade) {
                Some(running) => running,
                None => {
                    live.retain(|_, w| w.strong_count() > 0);
                    let started = Arc::new(self.start(spiffe_id));
                    live.insert(spiffe_id.to_owned(), Arc::downgrade(&started));
                    started
                }
            }
        };
        let mut lingering = self
            .lingering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        lingering.retain(|_, (_, until)| *until > now);
        lingering.insert(spiffe_id.to_owned(), (envelopes.clone(), now + LINGER));
        envelopes
    }

    fn start(&self, spiffe_id: &str) -> IdentityEnvelopes {
        let mut resolvers = Vec::new();
        let mut holds = Vec::new();
        for side in self
            .sides
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let providers = side.for_identity(spiffe_id);
            resolvers.extend(providers.resolvers);
            holds.extend(providers.holds);
        }
        let store = Arc::new(SecretStore::new());
        let (wanted, wanted_rx) = watch::channel(BTreeSet::new());
        let (known_tx, known) = watch::channel(BTreeSet::new());
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let scope = Scope::Wanted {
            names: wanted_rx,
            identity: spiffe_id.to_owned(),
        };
        let mut registry =
            Registry::new(resolvers, settings, store.clone()).scoped(scope, Some(known_tx));
        // Known names are there before the first ask is answered.
        let rows = self.rows.subscribe();
        registry.prime(&rows.borrow());
        let stop = self.shutdown.child_token();
        tokio::spawn(registry.run(rows, stop.clone()));
        IdentityEnvelopes {
            store,
            wanted,
            known,
            stop,
            _holds: holds,
        }
    }
}
