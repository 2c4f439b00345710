//! Builds the agent's components from a [`Config`], runs them under one cancellation
//! token, and drains them on shutdown.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use steeple_plugin_api::JwtSvidSource;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::authz::Policy;
use crate::config::Config;
use crate::envelopes::{self, RowSink};
use crate::exchange::jwt_source::WorkloadApiJwtFetcher;
use crate::identity::{self, DefaultNames};
use crate::providers::{self, ProviderError, RunMode};
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

/// How a component stops the agent with an error: the reason is kept for the exit
/// status, and shutdown begins.
#[derive(Debug, Clone)]
pub struct FatalSignal {
    reason: Arc<OnceLock<String>>,
    shutdown: CancellationToken,
}

impl FatalSignal {
    pub(crate) fn new(shutdown: &CancellationToken) -> Self {
        Self {
            reason: Arc::default(),
            shutdown: shutdown.clone(),
        }
    }

    /// Stops the agent; the first reason raised is the one reported.
    pub fn raise(&self, reason: String) {
        tracing::error!(reason = %reason, "stopping Steeple");
        let _ = self.reason.set(reason);
        self.shutdown.cancel();
    }

    /// The reason raised, if any.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// The running agent.
#[derive(Debug)]
pub struct RunningAgent {
    tasks: JoinSet<()>,
    store: Arc<SecretStore>,
    sds_socket: PathBuf,
    fatal: FatalSignal,
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
    let own_uid = rustix::process::geteuid().as_raw();
    let service = SdsService::new(
        store.clone(),
        SdsSettings::from(&config.sds),
        Policy::new(config.callers.clone(), own_uid),
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
        &config.jwt_svids,
        store.clone(),
        shutdown,
        &mut tasks,
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
    let running = aws.map(|aws| aws.kms).into_iter().chain(
        vault
            .into_iter()
            .flat_map(|vault| [vault.kv, vault.transit]),
    );
    let resolvers = providers::resolvers(config, mode, running)?;
    envelopes::spawn(
        config,
        rows,
        resolvers,
        jwt_fetcher,
        store.clone(),
        shutdown,
        &mut tasks,
    )?;
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
    })
}

impl RunningAgent {
    /// The store every component shares.
    pub fn store(&self) -> &Arc<SecretStore> {
        &self.store
    }

    /// Waits for every task to end after shutdown was requested, at most `grace`; then
    /// aborts what is left and removes the SDS socket. Returns why a component stopped
    /// the agent, if one did.
    pub async fn drain(mut self, grace: Duration) -> Option<String> {
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "tasks still running after the grace period; aborting them"
            );
            self.tasks.abort_all();
        }
        let _ = std::fs::remove_file(&self.sds_socket);
        tracing::info!("Steeple stopped");
        self.fatal.reason().map(str::to_owned)
    }
}
