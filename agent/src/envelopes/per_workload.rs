//! Envelopes resolved per workload identity, on a node agent whose `[[workloads]]` give
//! each workload its own roles: a `kms_envelope`, `vault_transit` or `vault_delegate`
//! envelope served to workload W is decrypted with W's own AWS role or Vault token, so
//! KMS key policies and Vault policies apply per workload and their audit logs name W.
//!
//! One registry per workload identity, started when one of its workloads first asks for
//! an envelope, resolving only the envelopes its workloads asked for (and `[[callers]]`
//! granted them), shared by all of its processes and streams, kept [`LINGER`] after a
//! workload of it last joined or left — so there is one decrypt per (envelope version, identity) per refresh
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
    spiffe_id: String,
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
    /// while the result is held, and [`LINGER`] after it was taken or given back.
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
        self.linger(envelopes.clone());
        envelopes
    }

    /// Keeps `envelopes` resolved for [`LINGER`] from now: a workload of its identity
    /// joined or left.
    pub fn linger(&self, envelopes: Arc<IdentityEnvelopes>) {
        let mut lingering = self
            .lingering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        lingering.retain(|_, (_, until)| *until > now);
        lingering.insert(envelopes.spiffe_id.clone(), (envelopes, now + LINGER));
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
            spiffe_id: spiffe_id.to_owned(),
            store,
            wanted,
            known,
            stop,
            _holds: holds,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use steeple_plugin_api::{
        BoxFuture, EnvelopeRow, Provider, ResolveError, Resolved, SealedEnvelope, SecretBytes,
    };

    use super::*;
    use crate::store::Secret;

    /// Decrypts any KMS row to the identity it was built for, counting calls (unit tests
    /// need no peer).
    #[derive(Debug)]
    struct PerIdentityKms {
        identity: String,
        calls: Arc<AtomicUsize>,
    }

    impl EnvelopeResolver for PerIdentityKms {
        fn provider(&self) -> Provider {
            Provider::KmsEnvelope
        }
        fn resolve<'a>(
            &'a self,
            _: &'a SealedEnvelope,
        ) -> BoxFuture<'a, Result<Resolved, ResolveError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let plaintext = SecretBytes::copy_from(self.identity.as_bytes());
            Box::pin(async move {
                Ok(Resolved {
                    plaintext,
                    key_id: "arn".into(),
                })
            })
        }
    }

    #[derive(Debug, Default)]
    struct Side(Arc<AtomicUsize>);

    impl IdentityResolvers for Side {
        fn for_identity(&self, spiffe_id: &str) -> IdentityProviders {
            let kms = PerIdentityKms {
                identity: spiffe_id.to_owned(),
                calls: self.0.clone(),
            };
            IdentityProviders {
                resolvers: vec![Arc::new(kms)],
                holds: Vec::new(),
            }
        }
    }

    fn settings() -> RegistrySettings {
        RegistrySettings {
            refresh_interval: Duration::from_secs(3600),
            provider_refresh: HashMap::new(),
            max_ciphertext_bytes: 4096,
            aliases: std::collections::BTreeMap::new(),
            reserved: crate::store::names::ClaimedNames::default(),
            require_path_binding: false,
            how_to_enable: |_| "enable it",
        }
    }

    fn kms_row(path: &str) -> EnvelopeRow {
        EnvelopeRow {
            logical_path: path.into(),
            provider: "kms_envelope".into(),
            key_id: "arn:aws:kms:us-east-1:1:key/k".into(),
            ciphertext_ref: "AQID".into(),
            ..EnvelopeRow::default()
        }
    }

    async fn resolved(store: &SecretStore, name: &str) -> Vec<u8> {
        let mut snapshots = store.subscribe();
        let served = snapshots.wait_for(|s| s.get(name).is_some());
        let snapshot = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("resolved in time")
            .expect("store open")
            .clone();
        match &snapshot.get(name).expect("served").secret {
            Secret::Generic(bytes) => bytes.expose().to_vec(),
            other => panic!("not generic: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_identity_resolves_what_it_asked_for_once_with_its_own_providers() {
        let rows = RowSink::default();
        rows.publish("files", vec![kms_row("team/db"), kms_row("team/other")]);
        let shutdown = CancellationToken::new();
        let all = WorkloadEnvelopes::new(settings(), rows, &shutdown);
        let calls = Arc::new(AtomicUsize::new(0));
        all.provide(Arc::new(Side(calls.clone())));

        let a = all.acquire("spiffe://td/a");
        assert!(a.serves("team/db") && !a.serves("not-a-row"));
        a.want(&["team/db", "not-a-row"]).unwrap();
        assert_eq!(resolved(a.store(), "team/db").await, b"spiffe://td/a");
        let again = all.acquire("spiffe://td/a");
        assert!(Arc::ptr_eq(&a, &again), "one registry per identity");
        again.want(&["team/db"]).unwrap();
        let b = all.acquire("spiffe://td/b");
        b.want(&["team/db"]).unwrap();
        assert_eq!(resolved(b.store(), "team/db").await, b"spiffe://td/b");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "once per identity");
        assert!(
            a.store().snapshot().get("team/other").is_none(),
            "not asked for"
        );

        let stop = a.stop.clone();
        drop((a, again));
        all.linger(all.acquire("spiffe://td/a"));
        tokio::time::sleep(LINGER - Duration::from_secs(1)).await;
        assert!(
            !stop.is_cancelled(),
            "kept a while after its last workload left"
        );
        // The next acquire (of another identity) drops the lingering ones past their time.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(all.acquire("spiffe://td/c"));
        assert!(stop.is_cancelled(), "stopped after the linger");
        shutdown.cancel();
    }
}
