//! A suite's world: SPIRE server and agent, one Steeple on the agent's Workload API, and
//! whatever Envoys the test starts, all under one temp dir and stopped on drop.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::bootstrap::{TlsNames, mtls_client, mtls_server};
use crate::envoy::Envoy;
use crate::http;
use crate::process::{self, current_uid, free_port};
use crate::spire::{Spire, SpireOptions};
use crate::steeple::SteepleProcess;

/// How long a request through Envoy may take to start succeeding (SDS, TLS, listeners).
const EVENTUALLY: Duration = Duration::from_secs(60);

/// SPIRE + Steeple, ready for Envoys.
#[derive(Debug)]
pub struct Suite {
    /// The Steeple under test (dropped first).
    pub steeple: SteepleProcess,
    /// SPIRE server and agent.
    pub spire: Spire,
    dir: TempDir,
}

impl Suite {
    /// SPIRE issuing X.509-SVIDs living `svid_ttl` (Go syntax, e.g. `"20s"`), an entry for
    /// each of `ids` selecting this test's uid, and Steeple on the agent's socket.
    pub fn with_spire(svid_ttl: &str, ids: &[&str]) -> anyhow::Result<Self> {
        Self::with_spire_config(svid_ttl, ids, "")
    }

    /// Like [`Suite::with_spire`], with `extra_toml` added to Steeple's config.
    pub fn with_spire_config(
        svid_ttl: &str,
        ids: &[&str],
        extra_toml: &str,
    ) -> anyhow::Result<Self> {
        let spire = Spire::start(SpireOptions {
            default_x509_svid_ttl: svid_ttl.to_owned(),
            ..SpireOptions::default()
        })?;
        let selector = uid_selector();
        for id in ids {
            spire.create_entry(id, &selector, None)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("steeple-e2e-")
            .tempdir_in("/tmp")?;
        let steeple = SteepleProcess::run(
            &dir.path().join("steeple"),
            spire.agent_socket(),
            extra_toml,
        )?;
        Ok(Self {
            steeple,
            spire,
            dir,
        })
    }

    /// The suite's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A free port on 127.0.0.1.
    pub fn port(&self) -> anyhow::Result<u16> {
        free_port()
    }

    /// The selector matching this test process (`unix:uid:<uid>`).
    pub fn uid_selector(&self) -> String {
        uid_selector()
    }

    /// Starts an Envoy with `bootstrap_yaml` under the suite's dir.
    pub fn envoy(&self, bootstrap_yaml: &str) -> anyhow::Result<Envoy> {
        Envoy::start(bootstrap_yaml, self.dir())
    }

    /// A second, independent trust domain: `steeple dev` in the suite's dir.
    pub fn steeple_dev(
        &self,
        trust_domain: &str,
        workload_id: &str,
    ) -> anyhow::Result<SteepleProcess> {
        let dir = self.dir().join(format!("dev-{trust_domain}"));
        SteepleProcess::dev(&dir, trust_domain, workload_id, "60s")
    }

    /// Polls `GET /` on `port` until it answers 200 (at most a minute).
    pub async fn eventually_ok(&self, port: u16) -> anyhow::Result<(u16, String)> {
        eventually_status(port, 200).await
    }

    /// Polls `GET /` on `port` until it answers `status` (at most a minute).
    pub async fn eventually_status(&self, port: u16, status: u16) -> anyhow::Result<(u16, String)> {
        eventually_status(port, status).await
    }
}

/// `unix:uid:<uid of this process>`.
pub fn uid_selector() -> String {
    format!("unix:uid:{}", current_uid())
}

/// Polls `GET /` on 127.0.0.1:`port` until it answers `status` (at most a minute).
pub async fn eventually_status(port: u16, status: u16) -> anyhow::Result<(u16, String)> {
    process::wait_for(
        &format!("HTTP {status} from port {port}"),
        EVENTUALLY,
        || async {
            let (got, body) = http::get(port, "/").await?;
            anyhow::ensure!(got == status, "got {got}: {body}");
            Ok((got, body))
        },
    )
    .await
}

/// Two Envoys doing mTLS with Steeple's SDS: plaintext in on `client_port`, over mTLS to
/// the server, which answers 200 with its body.
#[derive(Debug)]
pub struct MtlsPair {
    /// The terminating side.
    pub server: Envoy,
    /// The originating side.
    pub client: Envoy,
    /// The server's mTLS listener.
    pub server_port: u16,
    /// The client's plaintext listener.
    pub client_port: u16,
}

impl Suite {
    /// Starts an mTLS server Envoy using `server_id`'s SVID and a client Envoy using
    /// `client_id`'s, each accepting only the other and validating with `ROOTCA`, and
    /// waits until a request goes through.
    pub async fn mtls_pair(
        &self,
        server_id: &str,
        client_id: &str,
        body: &str,
    ) -> anyhow::Result<MtlsPair> {
        let sds = self.steeple.sds_socket();
        let (server_port, client_port) = (self.port()?, self.port()?);
        let server_names = TlsNames {
            certificate: server_id,
            validation: Some("ROOTCA"),
            peer_id: client_id,
        };
        let server = self.envoy(&mtls_server(
            self.port()?,
            server_port,
            sds,
            &server_names,
            body,
        ))?;
        let client_names = TlsNames {
            certificate: client_id,
            validation: Some("ROOTCA"),
            peer_id: server_id,
        };
        let client = self.envoy(&mtls_client(
            self.port()?,
            client_port,
            server_port,
            sds,
            &client_names,
        ))?;
        self.eventually_ok(client_port).await?;
        Ok(MtlsPair {
            server,
            client,
            server_port,
            client_port,
        })
    }
}
