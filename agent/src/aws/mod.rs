//! The agent's AWS side (`[aws]`): one STS exchange loop trading JWT-SVIDs for
//! credentials, their deliveries (the SDS generic secret and the loopback
//! container-credentials endpoint), and the KMS envelope resolver that signs with them.

pub mod container_endpoint;
pub mod delivery;
pub mod doctor;
pub mod key_probe;
pub mod seal;

use std::sync::Arc;

use steeple_plugin_api::{AwsCredentials, EnvelopeResolver};
use steeple_plugin_aws::{
    KeyArnAllowlist, KmsConfig, KmsEnvelopeResolver, StsConfig, StsExchanger,
};
use tokio::task::JoinSet;

use crate::config::AwsConfig;
use crate::exchange::{self, CredentialWatch};
use crate::side_context::SideContext;

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
    /// The container-credentials endpoint could not listen.
    #[error("aws.container_credentials_listen: cannot listen on {addr}: {source}")]
    Listen {
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

/// Starts the exchange loop and its deliveries when `[aws] enabled`.
pub fn start(
    config: &AwsConfig,
    context: &SideContext<'_>,
    tasks: &mut JoinSet<()>,
) -> Result<Option<AwsRuntime>, AwsStartError> {
    if !config.enabled {
        return Ok(None);
    }
    let exchanger = StsExchanger::new(sts_config(config)).map_err(config_error)?;
    // Every setting is checked before anything starts.
    KeyArnAllowlist::new(config.key_arn_allowlist.clone()).map_err(config_error)?;
    let container = config
        .container_credentials_listen
        .map(|addr| Ok::<_, AwsStartError>((bind(addr)?, config_token_file(config)?)))
        .transpose()?;
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
    let kms = Arc::new(
        KmsEnvelopeResolver::new(kms_config(config), Arc::new(credentials.clone()))
            .map_err(config_error)?,
    );
    spawn_deliveries(config, context, &credentials, container, tasks);
    if let (true, Some(rows)) = (config.probe_keys, &context.rows) {
        tasks.spawn(key_probe::run(
            kms.clone(),
            credentials.clone(),
            rows.subscribe(),
            context.fatal.clone(),
            context.shutdown.clone(),
        ));
    }
    tracing::info!(
        role_arn = %config.role_arn,
        audience = %config.audience,
        region = config.region.as_deref().unwrap_or("(the AWS SDK's)"),
        "AWS STS exchange enabled"
    );
    Ok(Some(AwsRuntime { credentials, kms }))
}

/// The credentials' deliveries: the SDS generic secret, and the container endpoint when
/// it listens (on `container`, with its token file).
fn spawn_deliveries(
    config: &AwsConfig,
    context: &SideContext<'_>,
    credentials: &CredentialWatch<AwsCredentials>,
    container: Option<(tokio::net::TcpListener, std::path::PathBuf)>,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(delivery::publish_to_store(
        config.credentials_resource_name.clone(),
        credentials.clone(),
        context.store.clone(),
        context.shutdown.clone(),
    ));
    if let Some((listener, token_file)) = container {
        let endpoint = container_endpoint::Endpoint {
            token_file,
            credentials: credentials.clone(),
            policy: context.policy.clone(),
            resource_name: config.credentials_resource_name.clone(),
        };
        tasks.spawn(serve_container_endpoint(
            listener,
            endpoint,
            context.shutdown.clone(),
        ));
    }
}

/// Serves the container-credentials endpoint until `shutdown`.
async fn serve_container_endpoint(
    listener: tokio::net::TcpListener,
    endpoint: container_endpoint::Endpoint,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if let Err(e) = container_endpoint::serve(listener, endpoint, shutdown).await {
        tracing::error!(error = %e, "AWS container-credentials endpoint stopped");
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

fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, AwsStartError> {
    let listen = |source| AwsStartError::Listen { addr, source };
    let socket = std::net::TcpListener::bind(addr).map_err(listen)?;
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
