//! Whose identity a local caller has, for what is chosen per workload (its roles): in
//! `self` mode every caller has the agent's own (one workload, one agent); a node agent
//! asks SPIRE about the caller's process (delegated mode). Also where per-workload
//! resources are offered: to every followed workload, or to the agent's own identity.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::authz::Caller;
use crate::delegated::Workloads;
use crate::delegated::jwt::WorkloadJwtSvids;
use crate::exchange::jwt_source::JwtSvidsById;
use crate::identity::WorkloadApiClient;
use crate::store::{Secret, SecretStore, Snapshot};
use crate::workload_roles::WorkloadResource;

/// A caller's identity as SPIRE attested it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The SPIFFE ID of its default X.509-SVID: the one its roles are chosen by.
    pub default: String,
    /// Every SPIFFE ID it holds an X.509-SVID for (for `[[callers]] spiffe_ids`).
    pub all: Vec<String>,
}

/// How callers' identities are found.
#[derive(Debug, Clone)]
pub enum CallerIdentities {
    /// `self` mode: the agent's own identity, from its store, for every caller.
    Own {
        /// The agent's store.
        store: Arc<SecretStore>,
        /// The name its default SVID is served under.
        default_name: String,
        /// The Workload API, for JWT-SVIDs of the agent's identities.
        workload_api: WorkloadApiClient,
    },
    /// Delegated mode: each caller's own, from SPIRE through the followed workloads.
    Delegated {
        /// The followed workloads.
        workloads: Arc<Workloads>,
        /// The name a workload's default SVID is served under.
        default_name: String,
    },
}

impl CallerIdentities {
    /// `caller`'s identity, once SPIRE answered about it (a node agent waits a few
    /// seconds for that); `None` when it holds no SVID.
    pub async fn of(&self, caller: &Arc<Caller>) -> Option<CallerIdentity> {
        match self {
            Self::Own {
                store,
                default_name,
                ..
            } => identity_in(&store.snapshot(), default_name),
            Self::Delegated {
                workloads,
                default_name,
            } => {
                let workload = workloads.acquire_for_fetch(caller);
                identity_in(&*workload.first_answer().await, default_name)
            }
        }
    }

    /// JWT-SVIDs by SPIFFE ID, for the exchanges of per-workload roles.
    pub fn jwt_by_id(&self) -> Arc<dyn JwtSvidsById> {
        match self {
            Self::Own { workload_api, .. } => Arc::new(workload_api.clone()),
            Self::Delegated { workloads, .. } => Arc::new(WorkloadJwtSvids::new(workloads)),
        }
    }

    /// Serves `resource` per identity: to every followed workload that asks for it, or
    /// (`self` mode) into the agent's store for its own identity, restarted if that
    /// identity changes.
    pub fn offer(
        &self,
        resource: Arc<dyn WorkloadResource>,
        shutdown: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) {
        match self {
            Self::Delegated { workloads, .. } => workloads.offer(resource),
            Self::Own {
                store,
                default_name,
                ..
            } => {
                tasks.spawn(serve_own(
                    resource,
                    store.clone(),
                    default_name.clone(),
                    shutdown.clone(),
                ));
            }
        }
    }
}

/// The identity whose default SVID `snapshot` serves as `default_name`.
fn identity_in(snapshot: &Snapshot, default_name: &str) -> Option<CallerIdentity> {
    let default = snapshot.default_identity(default_name)?.to_owned();
    let mut all: Vec<String> = snapshot
        .iter()
        .filter_map(|(_, e)| match &e.secret {
            Secret::Certificate(c) => Some(c.spiffe_id.clone()),
            _ => None,
        })
        .collect();
    all.sort_unstable();
    all.dedup();
    Some(CallerIdentity { default, all })
}

/// `self` mode: `resource` served for the agent's own default identity, started when it
/// is first known and restarted when it changes.
async fn serve_own(
    resource: Arc<dyn WorkloadResource>,
    store: Arc<SecretStore>,
    default_name: String,
    shutdown: CancellationToken,
) {
    let mut snapshots: watch::Receiver<Arc<Snapshot>> = store.subscribe();
    let mut serving: Option<(String, CancellationToken)> = None;
    loop {
        let identity = snapshots
            .borrow_and_update()
            .default_identity(&default_name)
            .map(str::to_owned);
        if let Some(id) = identity.filter(|id| serving.as_ref().is_none_or(|(s, _)| s != id)) {
            if let Some((_, stop)) = serving.take() {
                stop.cancel();
            }
            let stop = shutdown.child_token();
            match resource.start(&id, store.clone(), stop.clone()) {
                Ok(()) => {
                    tracing::info!(spiffe_id = %id, resource = resource.name(), "serving the agent's own identity's role")
                }
                Err(why) => tracing::error!(error = %why, "not served"),
            }
            serving = Some((id, stop));
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
    }
}
