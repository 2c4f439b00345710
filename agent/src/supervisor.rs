//! Builds the agent's components from a [`Config`], runs them under one cancellation
//! token, and drains them on shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use steeple_plugin_api::{EnvelopeResolver, JwtSvidSource};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::authz::{Policy, SharedPolicy};
use crate::caller_identity::CallerIdentities;
use crate::config::{Config, IdentityMode};
use crate::envelopes::per_workload::WorkloadEnvelopes;
use crate::envelopes::{self, EnvelopeSettings, EnvelopeTasks, Providers, RowSink};
use crate::exchange::jwt_source::WorkloadApiJwtFetcher;
use crate::identity::{self, DefaultNames, WorkloadApiClient};
use crate::lifecycle::{FatalSignal, TaskGroup};
use crate::providers::{self, ProviderError, RunMode};
use crate::readiness::Readiness;
use crate::reload::ConfigChange;
use crate::sds::{self, SdsService, SdsSettings};
use crate::sides::{self, SideContext, SideError};
use crate::store::{SecretStore, Source};
use crate::uds::{BindError, bind_socket};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The SDS socket could not be bound.
    #[error("sds.socket: {0}")]
    SdsSocket(#[from] BindError),
    /// The envelope sources or providers could not be built.
    #[error(transparent)]
    Envelopes(#[from] EnvelopeSetupError),
    /// An upstream side (AWS, Vault) could not start.
    #[error(transparent)]
    Side(#[from] SideError),
    /// The admin listener could not be bound (names `admin.listen`).
    #[error("{0}")]
    Admin(String),
}

/// Why the envelope tasks of a configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeSetupError {
    /// The control-plane envelope source could not be built.
    #[error(transparent)]
    ControlPlane(#[from] envelopes::control_plane::PollError),
    /// An envelope provider could not be built.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// The running agent.
#[derive(Debug)]
pub struct RunningAgent {
    tasks: JoinSet<()>,
    store: Arc<SecretStore>,
    readiness: Readiness,
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
    /// A node agent's per-identity envelope registries, when envelopes are per workload.
    workload_envelopes: Option<Arc<WorkloadEnvelopes>>,
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
    /// The envelope sources or providers of the new configuration could not be built.
    #[error(transparent)]
    Envelopes(#[from] EnvelopeSetupError),
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
    let policy = SharedPolicy::new(policy(config));
    let readiness = Readiness::new(store.clone(), &config.jwt_svids);
    let workloads = start_sds(config, &store, &policy, &fatal, shutdown, &mut tasks)?;
    start_admin(config, &store, &readiness, shutdown, &mut tasks)?;
    let workload_api = identity::client(&config.workload_api.socket);
    let names = DefaultNames::from(&config.sds);
    let rows = RowSink::default();
    let workload_envelopes = workload_envelopes(config, &rows, workloads.as_ref(), shutdown);
    let identities = caller_identities(config, &store, &workload_api, workloads);
    identity::spawn(&workload_api, names, store.clone(), shutdown, &mut tasks);
    let mut jwt_svids = TaskGroup::new(shutdown);
    identity::spawn_jwt_svids(&workload_api, &config.jwt_svids, &store, &mut jwt_svids);
    let jwt_fetcher: Arc<dyn JwtSvidSource> =
        Arc::new(WorkloadApiJwtFetcher::new(workload_api.clone(), None));
    let context = SideContext {
        jwt: jwt_fetcher.clone(),
        store: store.clone(),
        rows: config.envelopes.enabled.then(|| rows.clone()),
        policy: policy.clone(),
        fatal: fatal.clone(),
        readiness: readiness.clone(),
        identities,
        roles: config.workloads.clone(),
        envelopes: workload_envelopes.clone(),
        shutdown,
    };
    let running = sides::start(config, &context, &mut tasks)?.resolvers;
    let mut envelopes = TaskGroup::new(shutdown);
    envelope_tasks(config, mode, &running, &rows, &jwt_fetcher, &store)?
        .spawn(&envelopes.stop, &mut envelopes.tasks);
    let (sds_socket, workload_api_socket) = (&config.sds.socket, &config.workload_api.socket);
    tracing::info!(sds_socket = %sds_socket.display(), workload_api = %workload_api_socket.display(), sides = ?sides::compiled(), "Steeple started");
    Ok(RunningAgent {
        tasks,
        store,
        readiness,
        sds_socket: config.sds.socket.clone(),
        fatal,
        reloadable: Reloadable {
            config: config.clone(),
            mode,
            policy,
            workload_api,
            jwt_fetcher,
            rows,
            running,
            workload_envelopes,
            jwt_svids,
            envelopes,
        },
    })
}

/// The per-identity envelope registries of a node agent (following `workloads`) whose
/// `[[workloads]]` roles decrypt envelopes, if it is one.
fn workload_envelopes(
    config: &Config,
    rows: &RowSink,
    workloads: Option<&Arc<crate::delegated::Workloads>>,
    shutdown: &CancellationToken,
) -> Option<Arc<WorkloadEnvelopes>> {
    let workloads = workloads.filter(|_| !sides::per_workload_providers(config).is_empty())?;
    let settings = per_workload_registry_settings(config);
    let envelopes = Arc::new(WorkloadEnvelopes::new(settings, rows.clone(), shutdown));
    workloads.resolve_envelopes_with(envelopes.clone());
    Some(envelopes)
}

/// The registry settings of the per-identity registries under `config`.
fn per_workload_registry_settings(config: &Config) -> crate::envelopes::registry::RegistrySettings {
    envelopes::registry_settings(
        &EnvelopeSettings::from_config(config),
        sides::provider_refresh(config).into_iter().collect(),
        sides::how_to_enable,
    )
}

/// Whose identity callers have: each their own (delegated mode, from `workloads`) or the
/// agent's own.
fn caller_identities(
    config: &Config,
    store: &Arc<SecretStore>,
    workload_api: &WorkloadApiClient,
    workloads: Option<Arc<crate::delegated::Workloads>>,
) -> CallerIdentities {
    let default_name = config.sds.default_svid_name.clone();
    match workloads {
        Some(workloads) => CallerIdentities::Delegated {
            workloads,
            default_name,
        },
        None => CallerIdentities::Own {
            store: store.clone(),
            default_name,
            workload_api: workload_api.clone(),
        },
    }
}

/// Binds the SDS socket and serves it; a server failure stops the agent. Returns the
/// followed workloads in delegated mode.
fn start_sds(
    config: &Config,
    store: &Arc<SecretStore>,
    policy: &SharedPolicy,
    fatal: &FatalSignal,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Option<Arc<crate::delegated::Workloads>>, StartError> {
    let listener = bind_socket(&config.sds.socket, config.sds.socket_mode)?;
    let settings = SdsSettings::from(&config.sds);
    let mut service = SdsService::new(store.clone(), settings, policy.clone(), shutdown.clone());
    if config.workload_api.mode == IdentityMode::Own && policy.current().names_identities() {
        tracing::warn!(
            "[[callers]] rules naming spiffe_ids never match in workload_api.mode = \"self\": a caller's identity is only known in delegated mode"
        );
    }
    let mut workloads = None;
    if let IdentityMode::Delegated(delegated) = &config.workload_api.mode {
        let names = DefaultNames::from(&config.sds);
        let followed = crate::delegated::start(delegated, names, shutdown, tasks);
        service = service.with_workloads(followed.clone());
        workloads = Some(followed);
    }
    let (shutdown, fatal) = (shutdown.clone(), fatal.clone());
    tasks.spawn(async move {
        if let Err(e) = sds::serve(listener, service, shutdown).await {
            fatal.raise(format!("SDS server failed: {e}"));
        }
    });
    Ok(workloads)
}

/// Binds and serves the admin listener when `admin.listen` is set.
fn start_admin(
    config: &Config,
    store: &Arc<SecretStore>,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(), StartError> {
    let Some(listen) = config.admin.listen else {
        return Ok(());
    };
    let admin = std::net::TcpListener::bind(listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| StartError::Admin(format!("admin.listen {listen}: {e}")))?;
    let (store, readiness, shutdown) = (store.clone(), readiness.clone(), shutdown.clone());
    tasks.spawn(async move {
        if let Err(e) = crate::admin::serve(admin, store, readiness, shutdown).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    Ok(())
}

/// The envelope tasks `config` asks for, resolving with the sides' `running` resolvers
/// and the ones `config` enables itself; built (everything that can fail checked), not
/// started. Start and reload both build them here.
fn envelope_tasks(
    config: &Config,
    mode: RunMode,
    running: &[Arc<dyn EnvelopeResolver>],
    rows: &RowSink,
    jwt: &Arc<dyn JwtSvidSource>,
    store: &Arc<SecretStore>,
) -> Result<EnvelopeTasks, EnvelopeSetupError> {
    let providers = Providers {
        resolvers: providers::resolvers(&config.envelopes, mode, running.iter().cloned())?,
        refresh: sides::provider_refresh(config).into_iter().collect(),
        how_to_enable: sides::how_to_enable,
        per_workload: sides::per_workload_providers(config),
    };
    Ok(EnvelopeTasks::prepare(
        &EnvelopeSettings::from_config(config),
        rows.clone(),
        providers,
        jwt.clone(),
        store.clone(),
    )?)
}

/// The `[[callers]]` policy. Without rules: the agent's own uid, and in delegated mode
/// every local caller its own identity's names (see [`Policy::for_node_agent`]).
fn policy(config: &Config) -> Policy {
    let own_uid = rustix::process::geteuid().as_raw();
    match &config.workload_api.mode {
        IdentityMode::Own => Policy::new(config.callers.clone(), own_uid),
        IdentityMode::Delegated(_) => {
            Policy::for_node_agent(config.callers.clone(), own_uid, identity_names(config))
        }
    }
}

/// The names of a caller's own identity in delegated mode: its default SVID and bundles
/// under SPIRE's names, its SVIDs and trust domains by ID, its JWT-SVIDs — and its own
/// roles' credentials (AWS, Vault token) when `[[workloads]]` chooses roles per workload.
fn identity_names(config: &Config) -> Vec<String> {
    let sds = &config.sds;
    let mut names = vec![
        sds.default_svid_name.clone(),
        sds.default_bundle_name.clone(),
        sds.default_all_bundles_name.clone(),
        format!("{}*", crate::store::names::SPIFFE_PREFIX),
        format!("{}*", crate::store::names::JWT_SVID_PREFIX),
    ];
    if config.aws.enabled && config.workloads.per_workload_aws() {
        names.push(config.aws.credentials_resource_name.clone());
    }
    if let Some(token) = &config.vault.token_resource_name
        && config.vault.enabled
        && config.workloads.per_workload_vault()
    {
        names.push(token.clone());
    }
    names
}

impl RunningAgent {
    /// The store every component shares.
    pub fn store(&self) -> &Arc<SecretStore> {
        &self.store
    }

    /// Whether every configured output is held (`/readyz`, systemd's `READY=1`).
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
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
            let (rows, jwt) = (&r.rows, &r.jwt_fetcher);
            Some(envelope_tasks(
                &new,
                r.mode,
                &r.running,
                rows,
                jwt,
                &self.store,
            )?)
        } else {
            None
        };
        if change.callers {
            r.policy.replace(policy(&new));
        }
        if change.jwt_svids {
            let group = r.jwt_svids.replace(shutdown).await;
            identity::spawn_jwt_svids(&r.workload_api, &new.jwt_svids, &self.store, group);
            self.readiness.set_jwt_svids(&new.jwt_svids);
            for gone in r.config.jwt_svids.iter().filter(|old| {
                !new.jwt_svids
                    .iter()
                    .any(|j| j.resource_name == old.resource_name)
            }) {
                self.store
                    .sync_source(&Source::JwtSvid(gone.resource_name.clone()), Vec::new());
            }
        }
        if let Some(envelopes) = envelopes {
            if let Some(per_workload) = &r.workload_envelopes {
                per_workload.set_settings(per_workload_registry_settings(&new));
            }
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
