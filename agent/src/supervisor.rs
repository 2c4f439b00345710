//! Builds the agent's components from a [`Config`], runs them under one cancellation
//! token, and drains them on shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use steeple_plugin_api::{EnvelopeResolver, JwtSvidSource};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::authz::{Policy, SharedPolicy};
use crate::config::Config;
use crate::envelopes::{self, EnvelopeTasks, RowSink};
use crate::exchange::jwt_source::WorkloadApiJwtFetcher;
use crate::identity::{self, DefaultNames, WorkloadApiClient};
use crate::lifecycle::{FatalSignal, TaskGroup};
use crate::providers::{self, ProviderError, RunMode};
use crate::reload::ConfigChange;
use crate::sds::{self, SdsService, SdsSettings};
use crate::store::SecretStore;
use crate::uds::{BindError, bind_socket};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The SDS socket could not be bound.
    #[error("sds.socket: {0}")]
    SdsSocket(#[from] BindError),
    /// The control-plane envelope source could not be built.
    #[error(transparent)]
    ControlPlane(#[from] envelopes::control_plane::PollError),
    /// An envelope provider could not be built.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The AWS side could not start.
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsStartError),
    /// The Vault side could not start.
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultStartError),
    /// The admin listener could not be bound (names `admin.listen`).
    #[error("{0}")]
    Admin(String),
}

/// The running agent.
#[derive(Debug)]
pub struct RunningAgent {
    tasks: JoinSet<()>,
    store: Arc<SecretStore>,
    sds_socket: PathBuf,
    fatal: FatalSignal,
    reloadable: Reloadable,
}

/// What a reload can restart, and what it needs to do so.
#[derive(Debug)]
struct Reloadable {
    config: Config,
    mode: RunMode,
    policy: SharedPolicy,
    workload_api: WorkloadApiClient,
    jwt_fetcher: Arc<dyn JwtSvidSource>,
    rows: RowSink,
    /// The KMS and Vault resolvers (their sections are read only at start).
    running: Vec<Arc<dyn EnvelopeResolver>>,
    jwt_svids: TaskGroup,
    envelopes: TaskGroup,
}

/// Why a new configuration was not applied (the running one stays).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// Sections read only at start changed.
    #[error("{} changed; these are read only at start, restart Steeple to apply them", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    /// An envelope provider of the new configuration could not be built.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The new control-plane envelope source could not be built.
    #[error(transparent)]
    ControlPlane(#[from] envelopes::control_plane::PollError),
}

/// Starts identity, envelopes and SDS; they stop when `shutdown` is cancelled.
pub fn start(
    config: &Config,
    mode: RunMode,
    shutdown: &CancellationToken,
) -> Result<RunningAgent, StartError> {
    let store = Arc::new(SecretStore::new());
    let fatal = FatalSignal::new(shutdown);
    let mut tasks = JoinSet::new();
    let listener = bind_socket(&config.sds.socket, config.sds.socket_mode)?;
    let shared_policy = SharedPolicy::new(policy(config));
    let service = SdsService::new(
        store.clone(),
        SdsSettings::from(&config.sds),
        shared_policy.clone(),
        shutdown.clone(),
    );
    let sds_shutdown = shutdown.clone();
    let sds_fatal = fatal.clone();
    tasks.spawn(async move {
        if let Err(e) = sds::serve(listener, service, sds_shutdown).await {
            sds_fatal.raise(format!("SDS server failed: {e}"));
        }
    });
    if let Some(listen) = config.admin.listen {
        let admin = std::net::TcpListener::bind(listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| StartError::Admin(format!("admin.listen {listen}: {e}")))?;
        let (admin_store, admin_shutdown) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::admin::serve(admin, admin_store, admin_shutdown).await {
                tracing::error!(error = %e, "admin listener stopped");
            }
        });
    }
    let workload_api = identity::client(&config.workload_api.socket);
    identity::spawn(
        &workload_api,
        DefaultNames::from(&config.sds),
        store.clone(),
        shutdown,
        &mut tasks,
    );
    let mut jwt_svids = TaskGroup::new(shutdown);
    identity::spawn_jwt_svids(
        &workload_api,
        &config.jwt_svids,
        &store,
        &jwt_svids.stop,
        &mut jwt_svids.tasks,
    );
    let jwt_fetcher: Arc<dyn JwtSvidSource> =
        Arc::new(WorkloadApiJwtFetcher::new(workload_api.clone(), None));
    let rows = RowSink::default();
    let aws = crate::aws::start(
        &config.aws,
        crate::aws::AwsContext {
            jwt: jwt_fetcher.clone(),
            store: store.clone(),
            rows: config.envelopes.enabled.then(|| rows.clone()),
            policy: shared_policy.clone(),
            fatal: fatal.clone(),
            shutdown,
        },
        &mut tasks,
    )?;
    let vault = crate::vault::start(
        &config.vault,
        crate::vault::VaultContext {
            jwt: jwt_fetcher.clone(),
            store: store.clone(),
            shutdown,
        },
        &mut tasks,
    )?;
    let running: Vec<Arc<dyn EnvelopeResolver>> = aws
        .map(|aws| aws.kms)
        .into_iter()
        .chain(
            vault
                .into_iter()
                .flat_map(|vault| [vault.kv, vault.transit]),
        )
        .collect();
    let resolvers = providers::resolvers(config, mode, running.clone())?;
    let mut envelopes = TaskGroup::new(shutdown);
    EnvelopeTasks::prepare(
        config,
        rows.clone(),
        resolvers,
        jwt_fetcher.clone(),
        store.clone(),
    )?
    .spawn(&envelopes.stop, &mut envelopes.tasks);
    tracing::info!(
        sds_socket = %config.sds.socket.display(),
        workload_api = %config.workload_api.socket.display(),
        "Steeple started"
    );
    Ok(RunningAgent {
        tasks,
        store,
        sds_socket: config.sds.socket.clone(),
        fatal,
        reloadable: Reloadable {
            config: config.clone(),
            mode,
            policy: shared_policy.clone(),
            workload_api,
            jwt_fetcher,
            rows,
            running,
            jwt_svids,
            envelopes,
        },
    })
}

/// The `[[callers]]` policy, with the agent's own uid as the default.
fn policy(config: &Config) -> Policy {
    Policy::new(config.callers.clone(), rustix::process::geteuid().as_raw())
}

impl RunningAgent {
    /// The store every component shares.
    pub fn store(&self) -> &Arc<SecretStore> {
        &self.store
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.reloadable.config
    }

    /// Applies `new` without dropping SDS streams or served secrets: a changed
    /// `[[callers]]` policy is put in force on open streams too, changed `[[jwt_svids]]`
    /// and envelope settings restart those tasks (what they served stays served until
    /// their successors replace or remove it). `[log] level` is the caller's to apply.
    /// Refused as a whole, changing nothing, if a section read only at start changed or
    /// the new envelope settings cannot be built. Returns what changed.
    pub async fn reload(
        &mut self,
        new: Config,
        shutdown: &CancellationToken,
    ) -> Result<ConfigChange, ReloadError> {
        let r = &mut self.reloadable;
        let change = ConfigChange::between(&r.config, &new);
        if !change.needs_restart.is_empty() {
            return Err(ReloadError::NeedsRestart(change.needs_restart));
        }
        // Everything that can fail is built before anything running is stopped.
        let envelopes = if change.envelopes {
            let resolvers = providers::resolvers(&new, r.mode, r.running.clone())?;
            Some(EnvelopeTasks::prepare(
                &new,
                r.rows.clone(),
                resolvers,
                r.jwt_fetcher.clone(),
                self.store.clone(),
            )?)
        } else {
            None
        };
        if change.callers {
            r.policy.replace(policy(&new));
        }
        if change.jwt_svids {
            let group = r.jwt_svids.replace(shutdown).await;
            identity::spawn_jwt_svids(
                &r.workload_api,
                &new.jwt_svids,
                &self.store,
                &group.stop,
                &mut group.tasks,
            );
            for gone in r.config.jwt_svids.iter().filter(|old| {
                !new.jwt_svids
                    .iter()
                    .any(|j| j.resource_name == old.resource_name)
            }) {
                self.store
                    .sync_source(&identity::jwt::source_name(&gone.resource_name), Vec::new());
            }
        }
        if let Some(envelopes) = envelopes {
            let group = r.envelopes.replace(shutdown).await;
            envelopes.spawn(&group.stop, &mut group.tasks);
        }
        r.config = new;
        Ok(change)
    }

    /// Waits for every task to end after shutdown was requested, at most `grace`; then
    /// aborts what is left and removes the SDS socket. Returns why a component stopped
    /// the agent, if one did.
    pub async fn drain(self, grace: Duration) -> Option<String> {
        let mut sets = [
            self.tasks,
            self.reloadable.jwt_svids.tasks,
            self.reloadable.envelopes.tasks,
        ];
        let all_done = async {
            for set in &mut sets {
                while set.join_next().await.is_some() {}
            }
        };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "tasks still running after the grace period; aborting them"
            );
            for set in &mut sets {
                set.abort_all();
            }
        }
        let _ = std::fs::remove_file(&self.sds_socket);
        tracing::info!("Steeple stopped");
        self.fatal.reason().map(str::to_owned)
    }
}
