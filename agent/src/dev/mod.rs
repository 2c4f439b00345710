//! The embedded dev trust domain of `steeple dev`: its own CA, short-lived X.509-SVIDs that
//! really rotate, JWT-SVIDs and bundles, served as a SPIFFE Workload API on a Unix socket
//! so the agent runs against it exactly as against SPIRE. Never for production.

mod ca;
mod jwt;
mod server;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use steeple_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use ca::DevCa;
use jwt::JwtSigner;
use server::{DevService, SvidSet};

/// Shortest SVID lifetime accepted: below it rotation would spin.
const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest SVID lifetime accepted; a leaf never outlives the dev CA anyway.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest SPIFFE ID the SPIFFE ID spec allows, in bytes.
const MAX_ID_LEN: usize = 2048;

/// Why the dev trust domain could not start or issue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// A configured SPIFFE ID is malformed or outside the configured trust domain.
    #[error("{0}: not a SPIFFE ID in the dev trust domain")]
    InvalidId(String),
    /// A setting other than a SPIFFE ID is unusable (bad trust domain name, no workload
    /// IDs, a lifetime out of range).
    #[error("dev.{field}: {reason}")]
    InvalidConfig {
        /// The `DevConfig` field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Key generation or certificate signing for the CA or an X.509-SVID failed.
    #[error("dev certificate generation failed: {0}")]
    Crypto(#[from] rcgen::Error),
    /// Generating the JWT signing key or signing a JWT-SVID failed.
    #[error("dev JWT-SVID signing failed")]
    Signing,
    /// A token given to ValidateJWTSVID is malformed, not signed by the dev key, expired
    /// or for another audience.
    #[error("invalid JWT-SVID: {0}")]
    InvalidToken(String),
    /// The system clock is so far off that certificate validity cannot be computed.
    #[error("system clock out of range for certificate validity")]
    Clock,
    /// The Workload API socket could not be bound.
    #[error("dev Workload API socket: {0}")]
    Bind(#[from] crate::uds::BindError),
}

/// Settings of the dev trust domain.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// Trust domain name, without scheme. Default `steeple.dev`.
    pub trust_domain: String,
    /// SPIFFE IDs issued to every caller, all in `trust_domain`; the first is the
    /// default. Default `["spiffe://steeple.dev/workload"]`.
    pub workload_ids: Vec<String>,
    /// X.509-SVID lifetime (1 s to 24 h); each is reissued at half of it. Default 60 s.
    pub x509_svid_ttl: Duration,
    /// JWT-SVID lifetime (1 s to 24 h). Default 300 s.
    pub jwt_svid_ttl: Duration,
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            trust_domain: "steeple.dev".to_owned(),
            workload_ids: vec!["spiffe://steeple.dev/workload".to_owned()],
            x509_svid_ttl: Duration::from_secs(60),
            jwt_svid_ttl: Duration::from_secs(300),
        }
    }
}

/// A running dev Workload API. It serves until the `shutdown` token given to
/// [`DevWorkloadApi::start`] is cancelled; dropping this handle does not stop it.
#[derive(Debug)]
pub struct DevWorkloadApi {
    ca_der: Vec<u8>,
}

impl DevWorkloadApi {
    /// Creates the CA and first SVIDs, binds `socket` (mode 0600, replacing a stale
    /// socket) and serves the Workload API on it until `shutdown` is cancelled. The
    /// X.509-SVIDs are reissued at half their lifetime and pushed to every open stream.
    pub async fn start(
        config: DevConfig,
        socket: &Path,
        shutdown: CancellationToken,
    ) -> Result<Self, DevError> {
        check_config(&config)?;
        let ca = DevCa::new(&config.trust_domain)?;
        let (tx, rx) = watch::channel(issue_all(&ca, &config)?);
        let service = DevService {
            trust_domain_id: format!("spiffe://{}", config.trust_domain),
            ca_der: Arc::from(ca.cert_der()),
            workload_ids: Arc::from(config.workload_ids.as_slice()),
            svids: rx,
            signer: Arc::new(JwtSigner::new()?),
            jwt_ttl: config.jwt_svid_ttl,
            shutdown: shutdown.clone(),
        };
        let listener = crate::uds::bind_socket(socket, 0o600)?;
        let ca_der = ca.cert_der().to_vec();
        tokio::spawn(rotate(ca, config, tx, shutdown.clone()));
        let server = tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadApiServer::new(service))
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                shutdown.cancelled_owned(),
            );
        let socket = socket.display().to_string();
        tokio::spawn(async move {
            match server.await {
                Ok(()) => tracing::debug!(%socket, "dev Workload API stopped"),
                Err(e) => tracing::error!(%socket, error = %e, "dev Workload API failed"),
            }
        });
        Ok(Self { ca_der })
    }

    /// The CA certificate (DER) of the dev trust domain: the X.509 bundle every SVID
    /// chains to.
    pub fn ca_der(&self) -> Vec<u8> {
        self.ca_der.clone()
    }
}

fn issue_all(ca: &DevCa, config: &DevConfig) -> Result<SvidSet, DevError> {
    let svids = config
        .workload_ids
        .iter()
        .map(|id| ca.issue(id, config.x509_svid_ttl))
        .collect::<Result<_, _>>()?;
    Ok(Arc::new(svids))
}

/// Reissues every X.509-SVID at half its lifetime until `shutdown`; a failed issuance is
/// retried with backoff, well before the current SVIDs expire.
async fn rotate(
    ca: DevCa,
    config: DevConfig,
    tx: watch::Sender<SvidSet>,
    shutdown: CancellationToken,
) {
    let half_life = config.x509_svid_ttl / 2;
    let mut delay = half_life;
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        match issue_all(&ca, &config) {
            Ok(svids) => {
                tx.send_replace(svids);
                tracing::debug!("dev trust domain reissued its X.509-SVIDs");
                failures = 0;
                delay = half_life;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(error = %e, "dev trust domain could not reissue SVIDs; retrying");
                } else {
                    tracing::debug!(error = %e, failures, "dev SVID reissue still failing");
                }
                let backoff = Duration::from_millis(100 << failures.min(6));
                let jitter = Duration::from_millis(rand::random_range(0..100));
                delay = (backoff + jitter).min(half_life);
            }
        }
    }
}

/// Refuses settings that would make bad certificates or a spinning rotation.
fn check_config(config: &DevConfig) -> Result<(), DevError> {
    let td = &config.trust_domain;
    let td_ok =
        td.len() <= 255 && !td.contains("://") && crate::spiffe_ids::trust_domain(td).is_some();
    if !td_ok {
        return Err(DevError::InvalidConfig {
            field: "trust_domain",
            reason: format!("{td:?} is not a trust domain name (a-z, 0-9, '.', '-', '_')"),
        });
    }
    if config.workload_ids.is_empty() {
        return Err(DevError::InvalidConfig {
            field: "workload_ids",
            reason: "at least one SPIFFE ID is needed".to_owned(),
        });
    }
    for id in &config.workload_ids {
        if !is_workload_id(td, id) {
            return Err(DevError::InvalidId(id.clone()));
        }
    }
    check_ttl("x509_svid_ttl", config.x509_svid_ttl)?;
    check_ttl("jwt_svid_ttl", config.jwt_svid_ttl)
}

/// `spiffe://<td>/<path>` with a non-empty path of spec-conformant segments.
fn is_workload_id(td: &str, id: &str) -> bool {
    id.len() <= MAX_ID_LEN
        && crate::spiffe_ids::spiffe_id(id)
            .is_some_and(|id| id.trust_domain().as_str() == td && !id.path().is_empty())
}

fn check_ttl(field: &'static str, ttl: Duration) -> Result<(), DevError> {
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Ok(());
    }
    Err(DevError::InvalidConfig {
        field,
        reason: format!("{ttl:?} is outside {MIN_TTL:?}..={MAX_TTL:?}"),
    })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
