//! The workloads a node agent follows: one subscription per live caller process, shared
//! by all of its SDS streams and connections, stopped when its last stream ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::DelegatedClient;
use super::convert::BundleMap;
use super::envelopes::{EnvelopeLink, OwnStore, SharedEnvelopes};
use super::holder_waits::HolderWaits;
use super::jwt::DelegatedJwt;
use super::workload::{WorkloadFollow, follow};
use crate::authz::Caller;
use crate::envelopes::per_workload::WorkloadEnvelopes;
use crate::identity::DefaultNames;
use crate::identity::x509::Follower;
use crate::store::names::JWT_SVID_PREFIX;
use crate::store::{DemandRefused, OnDemand, PublicEntries, SecretStore, Source};
use crate::workload_roles::WorkloadResource;

/// How long a workload stays followed after a `FetchSecrets` that needed it, so a client
/// polling with unary calls does not open a subscription per call.
const FETCH_LINGER: Duration = Duration::from_secs(30);
/// Most workloads kept followed after unary fetches; past it the one due first goes (so
/// short-lived processes fetching once cannot pile subscriptions up on SPIRE agent).
const MAX_LINGERING: usize = 1024;

/// Workloads followed now, for `steeple_delegated_workloads`.
static FOLLOWED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A process, as the kernel names it over time: its pid and its start time (a pid reused
/// by another process gets another key).
type ProcessKey = (i32, u64);

/// Most audiences one workload may have JWT-SVIDs fetched for.
const MAX_JWT_AUDIENCES: usize = 16;

/// One followed workload: its own store, followed while anything holds it.
#[derive(Debug)]
pub struct Workload {
    store: Arc<SecretStore>,
    stop: CancellationToken,
    /// How to fetch its JWT-SVIDs; `None` for a workload that cannot be attested.
    attested: Option<Attested>,
    /// The audiences whose JWT-SVIDs are kept fresh.
    audiences: Mutex<Vec<String>>,
    /// What it may get for its own identity on demand (its roles' credentials), and
    /// what became of each asked for.
    resources: Resources,
}

/// What workloads are offered on demand.
type Offered = Arc<Mutex<Vec<Arc<dyn WorkloadResource>>>>;

/// A workload's per-identity resources.
#[derive(Debug, Default)]
struct Resources {
    /// The registry's list (shared: sides offer theirs while the first callers come).
    offered: Offered,
    /// The name its default SVID is served under (whose SPIFFE ID picks the roles).
    default_name: String,
    /// Names started (`Ok`) or refused (`Err`, the reason), so a refusal is audited once.
    asked: Mutex<Vec<(String, Result<(), String>)>>,
    /// Its envelopes, when they are resolved with its own roles.
    envelopes: EnvelopeLink,
}

/// What fetching for an attested workload takes.
#[derive(Debug)]
struct Attested {
    client: DelegatedClient,
    caller: Arc<Caller>,
    pid: i32,
    default_hint: Option<String>,
}

impl Workload {
    /// The workload's own store (its SVIDs and the bundles they federate with).
    pub fn store(&self) -> &SecretStore {
        &self.store
    }

    /// Starts keeping the JWT-SVID for `audience` fresh, unless it is kept already.
    fn want_jwt(&self, attested: &Attested, audience: &str) -> Result<(), String> {
        let mut audiences = self
            .audiences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if audiences.iter().any(|a| a == audience) {
            return Ok(());
        }
        if audiences.len() >= MAX_JWT_AUDIENCES {
            return Err(format!(
                "a workload may have JWT-SVIDs for at most {MAX_JWT_AUDIENCES} audiences"
            ));
        }
        audiences.push(audience.to_owned());
        let jwt = DelegatedJwt {
            client: attested.client.clone(),
            caller: attested.caller.clone(),
            pid: attested.pid,
            store: self.store.clone(),
            audience: audience.to_owned(),
            name: format!("{JWT_SVID_PREFIX}{audience}"),
            default_hint: attested.default_hint.clone(),
        };
        tokio::spawn(super::jwt::run(jwt, self.stop.clone()));
        Ok(())
    }

    /// Whether `name` is one this workload gets on demand, for its own identity.
    pub fn serves_on_demand(&self, name: &str) -> bool {
        name.strip_prefix(JWT_SVID_PREFIX)
            .is_some_and(|a| !a.is_empty())
            || self.offered(name).is_some()
            || self.resources.envelopes.serves(name)
    }

    /// Where its envelopes go.
    fn own_store(&self) -> OwnStore<'_> {
        OwnStore {
            store: &self.store,
            default_name: &self.resources.default_name,
            stop: &self.stop,
        }
    }

    /// The resource offered under `name`, if any.
    fn offered(&self, name: &str) -> Option<Arc<dyn WorkloadResource>> {
        let offered = self
            .resources
            .offered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        offered.iter().find(|r| r.name() == name).cloned()
    }

    /// Starts `resource` for the workload's default identity unless asked before; the
    /// outcome of the first ask stands (an identity no role maps stays refused).
    fn want_resource(&self, resource: &Arc<dyn WorkloadResource>) -> Result<(), DemandRefused> {
        let mut asked = self
            .resources
            .asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, outcome)) = asked.iter().find(|(n, _)| n == resource.name()) {
            return outcome.clone().map_err(DemandRefused::Denied);
        }
        let snapshot = self.store.snapshot();
        let Some(identity) = snapshot.default_identity(&self.resources.default_name) else {
            // No SVID (yet): nothing to pick a role by, and nothing served.
            return Ok(());
        };
        let outcome = resource.start(identity, self.store.clone(), self.stop.clone());
        asked.push((resource.name().to_owned(), outcome.clone()));
        outcome.map_err(DemandRefused::Denied)
    }
}

impl OnDemand for Workload {
    fn wanted(&self, names: &[&str]) -> Result<(), DemandRefused> {
        let Some(attested) = &self.attested else {
            return Ok(());
        };
        let mut others = Vec::new();
        for name in names {
            match name.strip_prefix(JWT_SVID_PREFIX) {
                Some(audience) if !audience.is_empty() => self
                    .want_jwt(attested, audience)
                    .map_err(DemandRefused::Limit)?,
                _ => match self.offered(name) {
                    Some(resource) => self.want_resource(&resource)?,
                    None => others.push(*name),
                },
            }
        }
        self.resources.envelopes.want(&self.own_store(), &others)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.attested.is_some() {
            let left = FOLLOWED.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) - 1;
            crate::metrics::metrics().set_delegated_workloads(left);
        }
    }
}

/// The registry of followed workloads.
#[derive(Debug)]
pub struct Workloads {
    client: DelegatedClient,
    bundles: watch::Receiver<Arc<BundleMap>>,
    names: DefaultNames,
    default_hint: Option<String>,
    live: Mutex<HashMap<ProcessKey, Weak<Workload>>>,
    /// Workloads kept followed after a unary fetch, until the instant given.
    lingering: Mutex<HashMap<ProcessKey, (Arc<Workload>, Instant)>>,
    /// What every workload may get for its own identity on demand.
    resources: Offered,
    /// Envelopes resolved per workload identity, when they are.
    envelopes: SharedEnvelopes,
    /// The bundle entries every workload's store shares.
    public: Arc<PublicEntries>,
    /// Role leases waiting for a workload of their identity to be followed again.
    holder_waits: Arc<HolderWaits>,
    shutdown: CancellationToken,
}

impl Workloads {
    /// A registry following workloads through `client`, their bundles from `bundles`.
    pub fn new(
        client: DelegatedClient,
        bundles: watch::Receiver<Arc<BundleMap>>,
        names: DefaultNames,
        default_hint: Option<String>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            client,
            bundles,
            names,
            default_hint,
            live: Mutex::default(),
            lingering: Mutex::default(),
            resources: Offered::default(),
            envelopes: SharedEnvelopes::default(),
            public: Arc::default(),
            holder_waits: Arc::default(),
            shutdown,
        }
    }

    /// The role leases waiting for a holder of their identity.
    pub(super) fn holder_waits(&self) -> &HolderWaits {
        &self.holder_waits
    }

    /// How to fetch for a live workload holding an X.509-SVID for `spiffe_id` (any of
    /// them: they share the identity), if one is followed now.
    pub(crate) fn holder_of(&self, spiffe_id: &str) -> Option<(DelegatedClient, Arc<Caller>, i32)> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.values().filter_map(Weak::upgrade).find_map(|w| {
            let attested = w.attested.as_ref()?;
            let holds = w.store.snapshot().get(spiffe_id).is_some_and(|e| {
                matches!(&e.secret, crate::store::Secret::Certificate(c) if c.spiffe_id == spiffe_id)
            });
            (holds && attested.caller.still_running())
                .then(|| (attested.client.clone(), attested.caller.clone(), attested.pid))
        })
    }

    /// Resolves every workload's envelopes with its own identity's roles through
    /// `envelopes` (set once, at start).
    pub fn resolve_envelopes_with(&self, envelopes: Arc<WorkloadEnvelopes>) {
        if self.envelopes.set(envelopes).is_err() {
            tracing::error!("per-workload envelope registries were set twice; the first stay");
        }
    }

    /// Offers `resource` to every workload followed from now on (sides register theirs
    /// at start, before any caller is served).
    pub fn offer(&self, resource: Arc<dyn WorkloadResource>) {
        self.resources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(resource);
    }

    /// The workload behind `caller`, followed from now if it was not yet. A caller
    /// without a pid (another PID namespace) or a process gone already cannot be
    /// attested: it gets a workload with no identity, known as such.
    pub fn acquire(&self, caller: &Arc<Caller>) -> Arc<Workload> {
        let Some(key) = caller.process_key() else {
            tracing::warn!(caller = %caller.describe(), "delegated: this SDS caller's pid is not visible (another PID namespace?) so SPIRE cannot attest it; it gets no SVID");
            return Self::unattested();
        };
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(workload) = live.get(&key).and_then(Weak::upgrade) {
            return workload;
        }
        live.retain(|_, w| w.strong_count() > 0);
        let workload = Arc::new(self.start(caller.clone(), key.0));
        live.insert(key, Arc::downgrade(&workload));
        workload
    }

    /// Like [`Workloads::acquire`], for a unary request: the workload stays followed for
    /// [`FETCH_LINGER`] after it (while its process runs).
    pub fn acquire_for_fetch(&self, caller: &Arc<Caller>) -> Arc<Workload> {
        let workload = self.acquire(caller);
        let mut lingering = self
            .lingering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        lingering.retain(|_, (w, until)| *until > now && !w.stop.is_cancelled());
        if lingering.len() >= MAX_LINGERING
            && let Some(first) = lingering
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(k, _)| *k)
        {
            lingering.remove(&first);
        }
        if let Some(key) = caller.process_key().filter(|_| caller.still_running()) {
            lingering.insert(key, (workload.clone(), now + FETCH_LINGER));
        }
        workload
    }

    /// A workload with no identity, and known to have none (a caller SPIRE cannot be
    /// asked about, or one no rule grants anything).
    pub fn unattested() -> Arc<Workload> {
        Arc::new(unattested())
    }

    fn start(&self, caller: Arc<Caller>, pid: i32) -> Workload {
        let store = Arc::new(SecretStore::sharing(self.public.clone()));
        let stop = self.shutdown.child_token();
        let task = WorkloadFollow {
            client: self.client.clone(),
            caller: caller.clone(),
            pid,
            bundles: self.bundles.clone(),
            default_hint: self.default_hint.clone(),
            follower: Follower::new(store.clone(), self.names.clone(), "SubscribeToX509SVIDs"),
            holder_waits: self.holder_waits.clone(),
        };
        tokio::spawn(follow(task, stop.clone()));
        let now = FOLLOWED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        crate::metrics::metrics().set_delegated_workloads(now);
        let attested = Attested {
            client: self.client.clone(),
            caller,
            pid,
            default_hint: self.default_hint.clone(),
        };
        let offered = self.resources.clone();
        Workload {
            store,
            stop,
            attested: Some(attested),
            audiences: Mutex::default(),
            resources: Resources {
                offered,
                default_name: self.names.svid.clone(),
                asked: Mutex::default(),
                envelopes: EnvelopeLink::new(self.envelopes.clone()),
            },
        }
    }
}

/// A workload with no identity, and known to have none.
fn unattested() -> Workload {
    let store = Arc::new(SecretStore::new());
    store.sync_source(&Source::X509Identity, Vec::new());
    Workload {
        store,
        stop: CancellationToken::new(),
        attested: None,
        audiences: Mutex::default(),
        resources: Resources::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Workloads {
        let client = DelegatedClient::new(
            crate::uds::lazy_channel(std::path::Path::new("/nonexistent/admin.sock")),
            1,
        );
        let names = DefaultNames {
            svid: "default".into(),
            bundle: "ROOTCA".into(),
            all_bundles: "ALL".into(),
        };
        let (_, bundles) = watch::channel(Arc::default());
        Workloads::new(client, bundles, names, None, CancellationToken::new())
    }

    #[tokio::test]
    async fn one_subscription_per_process_stopped_with_its_last_holder() {
        let workloads = registry();
        let me = Arc::new(Caller::from_peer(0, 0, Some(std::process::id() as i32)));
        let first = workloads.acquire(&me);
        let again = workloads.acquire(&Arc::new(Caller::from_peer(
            0,
            0,
            Some(std::process::id() as i32),
        )));
        assert!(Arc::ptr_eq(&first, &again), "one workload per process");
        let stop = first.stop.clone();
        drop((first, again));
        assert!(stop.is_cancelled(), "followed only while held");
        let lingering = workloads.acquire_for_fetch(&me);
        let stop = lingering.stop.clone();
        drop(lingering);
        assert!(
            !stop.is_cancelled(),
            "a unary fetch keeps it followed for a while"
        );
    }

    #[tokio::test]
    async fn a_caller_without_a_pid_gets_a_known_empty_identity() {
        let workloads = registry();
        let nobody = workloads.acquire(&Arc::new(Caller::from_peer(0, 0, None)));
        assert!(nobody.attested.is_none());
        let own = nobody.store().snapshot();
        assert!(own.has_synced(&Source::X509Identity) && own.is_empty());
    }
}
