//! What "ready" means, for `/readyz` and systemd's `READY=1` alike: every output the
//! configuration asks for is held — an X.509-SVID, each `[[jwt_svids]]` entry, every
//! configured envelope, and what the enabled sides produce (AWS credentials, the Vault
//! token). When something is missing, [`Readiness::missing`] names it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::config::JwtSvidConfig;
use crate::metrics::metrics;
use crate::store::{Secret, SecretStore, Snapshot};

/// An output held outside the store (a side's credentials or token), as readiness sees it.
pub trait Held: Send + Sync {
    /// Whether a valid value is held right now.
    fn held(&self) -> bool;
}

/// The channels the sides publish their latest valid value in: `None` before the first
/// success and after expiry.
impl<T: Send + Sync> Held for watch::Receiver<Option<T>> {
    fn held(&self) -> bool {
        self.borrow().is_some()
    }
}

/// The agent's readiness: cheap to clone, shared by the admin listener, the systemd
/// notifier, the supervisor (which updates the JWT-SVIDs on reload) and the sides (which
/// register what they produce).
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<SecretStore>,
    /// SDS names of the configured JWT-SVIDs (replaced on reload).
    jwt_svids: Mutex<Vec<String>>,
    /// Side outputs: what to call it when missing, and how to tell it is held.
    outputs: Mutex<Vec<(String, Box<dyn Held>)>>,
    /// How many configured envelopes are not served (the process-wide gauge).
    envelopes_unserved: fn() -> i64,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outputs = lock(&self.inner.outputs);
        f.debug_struct("Readiness")
            .field("jwt_svids", &*lock(&self.inner.jwt_svids))
            .field(
                "outputs",
                &outputs.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Readiness {
    /// Readiness over `store`, with the JWT-SVIDs of `jwt_svids` required.
    pub fn new(store: Arc<SecretStore>, jwt_svids: &[JwtSvidConfig]) -> Self {
        let inner = Inner {
            store,
            jwt_svids: Mutex::new(Vec::new()),
            outputs: Mutex::new(Vec::new()),
            envelopes_unserved: || metrics().envelopes_unserved(),
        };
        let readiness = Self {
            inner: Arc::new(inner),
        };
        readiness.set_jwt_svids(jwt_svids);
        readiness
    }

    /// Readiness over `store` alone, blind to the process-wide envelope gauge (which the
    /// envelope tests running alongside set).
    #[cfg(test)]
    pub(crate) fn of_store(store: Arc<SecretStore>) -> Self {
        let inner = Inner {
            store,
            jwt_svids: Mutex::new(Vec::new()),
            outputs: Mutex::new(Vec::new()),
            envelopes_unserved: || 0,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Requires the JWT-SVIDs of `jwt_svids` (a reload's new `[[jwt_svids]]`) instead.
    pub fn set_jwt_svids(&self, jwt_svids: &[JwtSvidConfig]) {
        *lock(&self.inner.jwt_svids) = jwt_svids.iter().map(|j| j.resource_name.clone()).collect();
    }

    /// Requires `output`, called `what` when it is missing (e.g. `AWS credentials`).
    pub fn require(&self, what: impl Into<String>, output: impl Held + 'static) {
        lock(&self.inner.outputs).push((what.into(), Box::new(output)));
    }

    /// What is missing, in a fixed order; empty when ready.
    pub fn missing(&self) -> Vec<String> {
        let jwt_svids = lock(&self.inner.jwt_svids).clone();
        let outputs: Vec<(String, bool)> = lock(&self.inner.outputs)
            .iter()
            .map(|(what, output)| (what.clone(), output.held()))
            .collect();
        missing_from(
            &self.inner.store.snapshot(),
            &jwt_svids,
            &outputs,
            (self.inner.envelopes_unserved)(),
        )
    }
}

/// What is missing given a store `snapshot`, the JWT-SVID names required, the side
/// `outputs` (name, held) and the count of configured envelopes not served.
pub fn missing_from(
    snapshot: &Snapshot,
    jwt_svids: &[String],
    outputs: &[(String, bool)],
    envelopes_unserved: i64,
) -> Vec<String> {
    let has_svid = snapshot
        .iter()
        .any(|(_, entry)| matches!(entry.secret, Secret::Certificate(_)));
    let mut missing = Vec::new();
    if !has_svid {
        missing.push("no X.509-SVID yet".to_owned());
    }
    for name in jwt_svids.iter().filter(|n| snapshot.get(n).is_none()) {
        missing.push(format!("JWT-SVID {name:?} not held"));
    }
    if envelopes_unserved > 0 {
        missing.push(format!(
            "{envelopes_unserved} configured envelope(s) not served"
        ));
    }
    for (what, _) in outputs.iter().filter(|(_, held)| !held) {
        missing.push(format!("{what} not held"));
    }
    missing
}

/// The data behind `mutex`, also after a panic elsewhere poisoned it (what it guards is
/// always whole: every write replaces or pushes one value).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "readiness_tests.rs"]
mod tests;
