//! A workload's envelopes on a node agent with roles per workload: resolved with its own
//! identity's roles by that identity's registry ([`WorkloadEnvelopes`]) — started the
//! first time it asks for one — and mirrored into its own store, where its SDS streams
//! see them.

use std::sync::{Arc, OnceLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::envelopes::per_workload::{IdentityEnvelopes, WorkloadEnvelopes};
use crate::envelopes::registry::SOURCE;
use crate::store::{DemandRefused, SecretStore, Snapshot};

/// The node agent's per-identity registries, once the supervisor set them (envelopes on,
/// roles per workload).
pub(crate) type SharedEnvelopes = Arc<OnceLock<Arc<WorkloadEnvelopes>>>;

/// One workload's link to its identity's envelopes.
#[derive(Debug, Default)]
pub(crate) struct EnvelopeLink {
    /// Every identity's registries.
    all: SharedEnvelopes,
    /// Its own identity's, once it asked.
    identity: OnceLock<Arc<IdentityEnvelopes>>,
}

/// Where the workload's envelopes go, and whose they are.
pub(crate) struct OwnStore<'a> {
    /// Its own store.
    pub(crate) store: &'a Arc<SecretStore>,
    /// The name its default SVID is served under (whose SPIFFE ID is its identity).
    pub(crate) default_name: &'a str,
    /// Stops the mirror with the workload.
    pub(crate) stop: &'a CancellationToken,
}

impl EnvelopeLink {
    /// A workload's link, not joined yet, to the registries `all` will hold.
    pub(crate) fn new(all: SharedEnvelopes) -> Self {
        Self {
            all,
            identity: OnceLock::new(),
        }
    }

    /// Starts resolving the envelopes among `names` for the workload's identity.
    pub(crate) fn want(&self, own: &OwnStore<'_>, names: &[&str]) -> Result<(), DemandRefused> {
        match self.identity(own) {
            Some(identity) => identity.want(names),
            None => Ok(()),
        }
    }

    /// Whether `name` is an envelope its identity's registry could serve.
    pub(crate) fn serves(&self, name: &str) -> bool {
        self.identity.get().is_some_and(|i| i.serves(name))
    }

    /// Its identity's envelopes, joined (and mirrored into its store) on the first call
    /// once its store names its identity; `None` before, or when envelopes are not
    /// resolved per workload.
    fn identity(&self, own: &OwnStore<'_>) -> Option<&Arc<IdentityEnvelopes>> {
        if let Some(joined) = self.identity.get() {
            return Some(joined);
        }
        let all = self.all.get()?;
        let spiffe_id = own
            .store
            .snapshot()
            .default_identity(own.default_name)?
            .to_owned();
        Some(self.identity.get_or_init(|| {
            let joined = all.acquire(&spiffe_id);
            let from = joined.store().subscribe();
            tokio::spawn(mirror(from, own.store.clone(), own.stop.clone()));
            joined
        }))
    }
}

impl Drop for EnvelopeLink {
    /// The workload left: its identity's envelopes stay resolved a while for the next.
    fn drop(&mut self) {
        if let (Some(all), Some(joined)) = (self.all.get(), self.identity.take()) {
            all.linger(joined);
        }
    }
}

/// Keeps the envelopes of `from` (an identity's registry store) in `to` (a workload's own
/// store) until `stop`.
async fn mirror(
    mut from: watch::Receiver<Arc<Snapshot>>,
    to: Arc<SecretStore>,
    stop: CancellationToken,
) {
    loop {
        let entries = from
            .borrow_and_update()
            .iter()
            .filter(|(_, e)| e.source == SOURCE)
            .map(|(name, e)| (name.clone(), e.secret.clone()))
            .collect();
        to.sync_source(&SOURCE, entries);
        tokio::select! {
            () = stop.cancelled() => return,
            changed = from.changed() => if changed.is_err() { return },
        }
    }
}
