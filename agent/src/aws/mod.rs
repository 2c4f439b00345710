//! The agent's AWS side (`[aws]`): one STS exchange loop trading JWT-SVIDs for
//! credentials, their deliveries (the SDS generic secret, the loopback
//! container-credentials endpoint and the IMDSv2 emulation), and the KMS envelope
//! resolver that signs with them.

pub mod caller_credentials;
pub mod container_endpoint;
pub mod delivery;
pub mod doctor;
pub mod imds;
mod imds_tokens;
pub mod key_probe;
pub mod per_workload;
pub mod role_credentials;
pub mod seal;

use std::sync::Arc;

use steeple_plugin_api::{AwsCredentials, EnvelopeResolver};
use steeple_plugin_aws::{
    KeyArnAllowlist, KmsConfig, KmsEnvelopeResolver, StsConfig, StsExchanger,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::AwsConfig;
use crate::exchange::{self, CredentialWatch};
use crate::side_context::SideContext;
use crate::workload_roles::WorkloadRoles;
use caller_credentials::CallerCredentials;
use per_workload::PerWorkloadRoles;
use role_credentials::RoleCredentials;

/// Why the AWS side could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsStartError {
    /// The STS or KMS settings were refused (named by config key).
    #[error("aws.{key}: {problem}")]
    Config {
        /// The `[aws]` key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The container-credentials endpoint or the IMDS emulation could not listen.
    #[error("aws.{key}: cannot listen on {addr}: {source}")]
    Listen {
        /// The `[aws]` key naming the address.
        key: &'static str,
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

/// What the running AWS side offers the rest of the agent.
#[derive(Debug)]
pub struct AwsRuntime {
    /// The latest valid credentials.
    pub credentials: CredentialWatch<AwsCredentials>,
    /// Resolves `kms_envelope` envelopes with those credentials.
    pub kms: Arc<dyn EnvelopeResolver>,
}

/// Starts the exchange loop(s) and their deliveries when `[aws] enabled`: the agent's
/// own role (`[aws] role_arn`) when set, and each workload's when `[[workloads]]` names
/// AWS roles (then every delivery serves the caller's own role, never the agent's).
pub fn start(
    config: &AwsConfig,
    context: &SideContext<'_>,
    tasks: &mut JoinSet<()>,
) -> Result<Option<AwsRuntime>, AwsStartError> {
    if !config.enabled {
        return Ok(None);
    }
    // Every setting is checked before anything starts.
    let own_role = (!config.role_arn.is_empty())
        .then(|| StsExchanger::new(sts_config(config)).map_err(config_error))
        .transpose()?;
    KeyArnAllowlist::new(config.key_arn_allowlist.clone()).map_err(config_error)?;
    let per_workload = per_workload_roles(config, context)?;
    let listeners = Listeners::bind(config)?;
    let credentials = match own_role {
        Some(exchanger) => own_role_credentials(config, context, exchanger, tasks),
        None => no_own_role(),
    };
    let kms = Arc::new(
        KmsEnvelopeResolver::new(kms_config(config), Arc::new(credentials.clone()))
            .map_err(config_error)?,
    );
    let deliveries = match per_workload {
        Some(roles) => {
            context
                .identities
                .offer(roles.clone(), context.shutdown, tasks);
            if let Some(envelopes) = &context.envelopes {
                envelopes.provide(roles.clone());
            }
            CallerCredentials::per_workload(
                roles,
                context.policy.clone(),
                config.credentials_resource_name.clone(),
            )
        }
        None => own_role_deliveries(config, context, &credentials, tasks),
    };
    spawn_endpoints(deliveries, listeners, context.shutdown, tasks);
    if let (true, Some(rows), false) =
        (config.probe_keys, &context.rows, config.role_arn.is_empty())
    {
        tasks.spawn(key_probe::run(
            kms.clone(),
            credentials.clone(),
            rows.subscribe(),
            context.fatal.clone(),
            context.shutdown.clone(),
        ));
    }
    log_started(config, &context.roles, context.envelopes.is_some());
    Ok(Some(AwsRuntime { credentials, kms }))
}

/// The per-workload roles, when `[[workloads]]` names AWS roles.
fn per_workload_roles(
    config: &AwsConfig,
    context: &SideContext<'_>,
) -> Result<Option<Arc<PerWorkloadRoles>>, AwsStartError> {
    if !context.roles.per_workload_aws() {
        return Ok(None);
    }
    let identities = context.identities.clone();
    let roles = PerWorkloadRoles::new(config, &context.roles, identities, context.shutdown)?;
    Ok(Some(Arc::new(roles)))
}

/// The start event: the agent's own role and the per-workload ones (which decrypt
/// envelopes too when `envelopes_per_workload`).
fn log_started(config: &AwsConfig, roles: &WorkloadRoles, envelopes_per_workload: bool) {
    tracing::info!(
        role_arn = %config.role_arn,
        workload_roles = roles.aws_roles().len(),
        audience = %config.audience,
        region = config.region.as_deref().unwrap_or("(the AWS SDK's)"),
        "AWS STS exchange enabled"
    );
    if config.role_arn.is_empty() && !envelopes_per_workload {
        tracing::warn!(
            "aws.role_arn is not set: the agent has no AWS role of its own, so kms_envelope envelopes (resolved with the agent's credentials) cannot be resolved; each workload gets its own role's credentials"
        );
    }
}

/// The agent's own role's credentials, kept fresh by an exchange loop; the agent is
/// ready once it holds them.
fn own_role_credentials(
    config: &AwsConfig,
    context: &SideContext<'_>,
    exchanger: StsExchanger,
    tasks: &mut JoinSet<()>,
) -> CredentialWatch<AwsCredentials> {
    let credentials = exchange::spawn(
        "aws-sts".to_owned(),
        Arc::new(exchanger),
        context.jwt.clone(),
        context.shutdown.clone(),
        tasks,
    );
    context.readiness.require(
        format!("AWS credentials ({})", config.credentials_resource_name),
        credentials.clone(),
    );
    credentials
}

/// The credentials watch of an agent without its own role: never any.
fn no_own_role() -> CredentialWatch<AwsCredentials> {
    tokio::sync::watch::channel(None).1
}

/// With one role for every caller: its credentials mirrored into the shared store as the
/// SDS generic secret, and the same for the HTTP endpoints.
fn own_role_deliveries(
    config: &AwsConfig,
    context: &SideContext<'_>,
    credentials: &CredentialWatch<AwsCredentials>,
    tasks: &mut JoinSet<()>,
) -> CallerCredentials {
    tasks.spawn(delivery::publish_to_store(
        config.credentials_resource_name.clone(),
        credentials.clone(),
        context.store.clone(),
        context.shutdown.clone(),
    ));
    let role = RoleCredentials::new(config.role_arn.clone(), credentials.clone());
    CallerCredentials::single(
        role,
        context.policy.clone(),
        config.credentials_resource_name.clone(),
    )
}

/// The local HTTP deliveries' sockets, bound before anything starts.
struct Listeners {
    /// The container endpoint's, with its token file.
    container: Option<(tokio::net::TcpListener, std::path::PathBuf)>,
    /// The IMDS emulation's.
    imds: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// The sockets `config` asks for (the container endpoint's needs its token file).
    fn bind(config: &AwsConfig) -> Result<Self, AwsStartError> {
        let container = config
            .container_credentials_listen
            .map(|addr| {
                let listener = bind("container_credentials_listen", addr, |_| Ok(()))?;
                Ok::<_, AwsStartError>((listener, config_token_file(config)?))
            })
            .transpose()?;
        let imds = config
            .imds_listen
            .map(|addr| bind("imds_listen", addr, imds::limit_hops))
            .transpose()?;
        Ok(Self { container, imds })
    }
}

/// The container endpoint and the IMDS emulation, when they listen; both look
/// credentials up per caller through `credentials`.
fn spawn_endpoints(
    credentials: CallerCredentials,
    listeners: Listeners,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    if let Some((listener, token_file)) = listeners.container {
        let endpoint = container_endpoint::Endpoint {
            token_file,
            credentials: credentials.clone(),
        };
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = container_endpoint::serve(listener, endpoint, shutdown).await {
                tracing::error!(error = %e, "AWS container-credentials endpoint stopped");
            }
        });
    }
    if let Some(listener) = listeners.imds {
        let emulation = imds::Imds::new(credentials);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = imds::serve(listener, emulation, shutdown).await {
                tracing::error!(error = %e, "AWS IMDSv2 emulation stopped");
            }
        });
    }
}

/// The STS exchange settings `[aws]` stands for.
pub fn sts_config(config: &AwsConfig) -> StsConfig {
    StsConfig {
        role_arn: config.role_arn.clone(),
        audience: config.audience.clone(),
        session_name: None,
        duration: config.session_duration,
        region: config.region.clone(),
        endpoint: config.sts_endpoint.clone(),
        ..StsConfig::default()
    }
}

/// The KMS resolver settings `[aws]` stands for.
pub fn kms_config(config: &AwsConfig) -> KmsConfig {
    KmsConfig {
        key_arn_allowlist: config.key_arn_allowlist.clone(),
        endpoint: config.kms_endpoint.clone(),
        ..KmsConfig::default()
    }
}

fn config_error(e: steeple_plugin_aws::ConfigError) -> AwsStartError {
    AwsStartError::Config {
        key: e.key,
        problem: e.problem,
    }
}

/// A listener on `addr` (named by `key` in errors), prepared by `prepare`.
fn bind(
    key: &'static str,
    addr: std::net::SocketAddr,
    prepare: fn(&std::net::TcpListener) -> std::io::Result<()>,
) -> Result<tokio::net::TcpListener, AwsStartError> {
    let listen = |source| AwsStartError::Listen { key, addr, source };
    let socket = std::net::TcpListener::bind(addr).map_err(listen)?;
    prepare(&socket).map_err(listen)?;
    socket.set_nonblocking(true).map_err(listen)?;
    tokio::net::TcpListener::from_std(socket).map_err(listen)
}

fn config_token_file(config: &AwsConfig) -> Result<std::path::PathBuf, AwsStartError> {
    config
        .container_credentials_token_file
        .clone()
        .ok_or_else(|| AwsStartError::Config {
            key: "container_credentials_token_file",
            problem: "required with container_credentials_listen".into(),
        })
}

#[cfg(test)]
mod tests;
