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

use ca::{DevCa, IssuedSvid};
use jwt::JwtSigner;
use server::DevService;

/// Why the dev trust domain could not start or issue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// A configured SPIFFE ID or trust domain is not a valid URI.
    #[error("not a valid SPIFFE ID: {0}")]
    InvalidId(String),
    /// Key generation or certificate signing failed.
    #[error("certificate generation failed: {0}")]
    Crypto(rcgen::Error),
    /// JWT key generation or signing failed.
    #[error("JWT signing failed")]
    Signing,
    /// A token given to ValidateJWTSVID did not validate.
    #[error("invalid JWT-SVID: {0}")]
    InvalidToken(String),
    /// The Workload API socket could not be bound.
    #[error("dev Workload API socket: {0}")]
    Bind(#[from] crate::uds::BindError),
}

/// Settings of the dev trust domain.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// Trust domain name, without scheme. Default `steeple.dev`.
    pub trust_domain: String,
    /// SPIFFE IDs issued to every caller; the first is the default.
    /// Default `["spiffe://steeple.dev/workload"]`.
    pub workload_ids: Vec<String>,
    /// X.509-SVID lifetime; each is reissued at half of it. Default 60 s.
    pub x509_svid_ttl: Duration,
    /// JWT-SVID lifetime. Default 5 min.
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

/// A running dev Workload API.
#[derive(Debug)]
pub struct DevWorkloadApi {
    ca_der: Vec<u8>,
}

fn issue_all(ca: &DevCa, config: &DevConfig) -> Result<Vec<IssuedSvid>, DevError> {
    config
        .workload_ids
        .iter()
        .map(|id| ca.issue(id, config.x509_svid_ttl))
        .collect()
}

impl DevWorkloadApi {
    /// Creates the CA and first SVIDs, binds `socket` (owner-only) and serves until
    /// `shutdown`; SVIDs are reissued at half their lifetime.
    pub async fn start(
        config: DevConfig,
        socket: &Path,
        shutdown: CancellationToken,
    ) -> Result<Self, DevError> {
        let ca = DevCa::new(&config.trust_domain)?;
        let (tx, rx) = watch::channel(Arc::new(issue_all(&ca, &config)?));
        let service = DevService {
            trust_domain_id: format!("spiffe://{}", config.trust_domain),
            ca_der: ca.cert_der().to_vec(),
            svids: rx,
            signer: Arc::new(JwtSigner::new()?),
            jwt_ttl: config.jwt_svid_ttl,
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
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "dev Workload API stopped");
            }
        });
        Ok(Self { ca_der })
    }

    /// The dev CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }
}

async fn rotate(
    ca: DevCa,
    config: DevConfig,
    tx: watch::Sender<Arc<Vec<IssuedSvid>>>,
    shutdown: CancellationToken,
) {
    let mut delay = config.x509_svid_ttl / 2;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        match issue_all(&ca, &config) {
            Ok(svids) => {
                tx.send_replace(Arc::new(svids));
                tracing::debug!("dev trust domain rotated its X.509-SVIDs");
                delay = config.x509_svid_ttl / 2;
            }
            Err(e) => {
                tracing::error!(error = %e, "dev trust domain could not reissue SVIDs; retrying");
                delay = Duration::from_secs(1);
            }
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
