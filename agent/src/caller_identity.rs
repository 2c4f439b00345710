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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use steeple_plugin_api::SecretBytes;

    use super::*;
    use crate::store::{Certificate, Source};

    /// Records every start: for which identity, and whether it is still running.
    #[derive(Debug, Default)]
    struct Recorded(Mutex<Vec<(String, CancellationToken)>>);

    impl WorkloadResource for Recorded {
        fn name(&self) -> &str {
            "aws-credentials"
        }
        fn start(
            &self,
            spiffe_id: &str,
            _: Arc<SecretStore>,
            stop: CancellationToken,
        ) -> Result<(), String> {
            self.0.lock().unwrap().push((spiffe_id.to_owned(), stop));
            Ok(())
        }
    }

    fn svid(id: &str) -> Secret {
        Secret::Certificate(std::sync::Arc::new(Certificate {
            spiffe_id: id.into(),
            chain_der: Vec::new(),
            key_pkcs8: SecretBytes::copy_from(b"key"),
            not_before: SystemTime::now(),
            not_after: SystemTime::now() + Duration::from_secs(3600),
        }))
    }

    #[tokio::test]
    async fn in_self_mode_the_agents_own_identity_picks_and_a_new_one_restarts() {
        let store = Arc::new(SecretStore::new());
        let identities = CallerIdentities::Own {
            store: store.clone(),
            default_name: "default".into(),
            workload_api: crate::identity::client(std::path::Path::new("/nonexistent.sock")),
        };
        let caller = Arc::new(Caller::from_peer(0, 0, None));
        assert_eq!(identities.of(&caller).await, None, "no SVID yet");
        let recorded = Arc::new(Recorded::default());
        let (shutdown, mut tasks) = (CancellationToken::new(), JoinSet::new());
        identities.offer(recorded.clone(), &shutdown, &mut tasks);
        let serve = |id: &str| {
            let entries = vec![("default".to_owned(), svid(id)), (id.to_owned(), svid(id))];
            store.sync_source(&Source::X509Identity, entries);
        };
        serve("spiffe://td/a");
        let started = || recorded.0.lock().unwrap().len();
        let until_started = |n: usize| {
            tokio::time::timeout(Duration::from_secs(5), async move {
                while started() < n {
                    tokio::task::yield_now().await;
                }
            })
        };
        until_started(1)
            .await
            .expect("started for the agent's identity");
        let identity = identities.of(&caller).await.expect("known now");
        assert_eq!(identity.default, "spiffe://td/a");
        assert_eq!(identity.all, ["spiffe://td/a"]);
        serve("spiffe://td/b");
        until_started(2)
            .await
            .expect("restarted for its new identity");
        let runs = recorded.0.lock().unwrap();
        assert_eq!(runs[0].0, "spiffe://td/a");
        assert!(runs[0].1.is_cancelled(), "the old identity's stopped");
        assert_eq!(runs[1].0, "spiffe://td/b");
        assert!(!runs[1].1.is_cancelled());
        shutdown.cancel();
    }
}
