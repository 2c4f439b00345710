//! An OpenBao dev server with a file audit device, started by the benchmark itself:
//! OpenBao 2.4 refuses to enable audit devices through the API ("use declarative,
//! config-based audit device management"), and the harness's servers take no extra
//! configuration. Every request the server handles is one `"type":"request"` line of the
//! audit log; [`AuditCounts`] counts them by endpoint. Admin calls go over the HTTP API
//! with the root token.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use steeple_e2e::ChildProcess;
use steeple_e2e::openbao::openbao_bin;
use steeple_e2e::process::{free_port, tail};
use tempfile::TempDir;

use crate::http::{Answer, RawHttp};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running audited OpenBao; dropping it stops the server and removes its directory.
#[derive(Debug)]
pub struct AuditedOpenBao {
    port: u16,
    root_token: String,
    // Declared before `dir`: the server stops before its directory is removed.
    process: ChildProcess,
    dir: TempDir,
}

impl AuditedOpenBao {
    /// Starts `bao server -dev` with the audit device and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("steeple-bench-openbao-")
            .tempdir_in("/tmp")?;
        let config = dir.path().join("audit.hcl");
        let audit_log = dir.path().join("audit.log");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"bench\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit_log.display()
            ),
        )?;
        let port = free_port_pair()?;
        let root_token = format!("root-{}", crate::canary_hex(16));
        let mut command = Command::new(openbao_bin()?);
        command.args([
            "server",
            "-dev",
            "-dev-no-store-token",
            &format!("-dev-root-token-id={root_token}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-config={}", config.display()),
        ]);
        let process = ChildProcess::spawn("openbao", command, &dir.path().join("logs"))?;
        let mut bao = Self {
            port,
            root_token,
            process,
            dir,
        };
        bao.wait_ready().await?;
        Ok(bao)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The root token (admin calls and sealing only).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The server's log and audit log together (for the "no secret in logs" check).
    pub fn logs(&self) -> String {
        let audit = std::fs::read_to_string(self.audit_log()).unwrap_or_default();
        format!("{}\n{audit}", self.process.logs())
    }

    /// `method /v1/<path>` as root; the JSON answer, failing unless 2xx.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let mut http = RawHttp::connect(self.port).await?;
        let answer: Answer = http
            .call(method, path, &self.root_token, Some(&body))
            .await?;
        answer.json(&format!("{method} {path}"))
    }

    fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(mut http) = RawHttp::connect(self.port).await
                && http
                    .call("GET", "sys/health", "", None)
                    .await
                    .is_ok_and(|a| a.status == 200)
            {
                return Ok(());
            }
            anyhow::ensure!(
                self.process.is_running() && Instant::now() < deadline,
                "OpenBao did not become ready:\n{}",
                tail(&self.process.logs(), 20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Requests logged so far, by endpoint.
    pub fn counts(&self) -> anyhow::Result<AuditCounts> {
        let text = std::fs::read_to_string(self.audit_log())
            .with_context(|| format!("reading {}", self.audit_log().display()))?;
        let mut counts = AuditCounts::default();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if entry["type"] == "request" {
                counts.add(entry["request"]["path"].as_str().unwrap_or_default());
            }
        }
        Ok(counts)
    }
}

/// A free port whose successor is free too: dev mode binds its cluster listener there.
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair on 127.0.0.1")
}

/// Requests by endpoint (cumulative, or a difference of two readings).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AuditCounts {
    /// `auth/jwt/login`.
    pub login: usize,
    /// `auth/token/renew-self`.
    pub renew: usize,
    /// `auth/token/lookup-self`.
    pub lookup: usize,
    /// `secret/data/…` (KV v2 reads).
    pub kv: usize,
    /// `transit/decrypt/…`.
    pub decrypt: usize,
    /// Anything else.
    pub other: usize,
}

impl AuditCounts {
    fn add(&mut self, path: &str) {
        let slot = match path {
            "auth/jwt/login" => &mut self.login,
            "auth/token/renew-self" => &mut self.renew,
            "auth/token/lookup-self" => &mut self.lookup,
            p if p.starts_with("secret/data/") => &mut self.kv,
            p if p.starts_with("transit/decrypt/") => &mut self.decrypt,
            _ => &mut self.other,
        };
        *slot += 1;
    }

    /// `self - earlier`, endpoint by endpoint.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            login: self.login - earlier.login,
            renew: self.renew - earlier.renew,
            lookup: self.lookup - earlier.lookup,
            kv: self.kv - earlier.kv,
            decrypt: self.decrypt - earlier.decrypt,
            other: self.other - earlier.other,
        }
    }

    /// The counts as `[login, renew-self, lookup-self, KV read, transit decrypt, other]`.
    pub fn as_array(&self) -> [usize; 6] {
        [
            self.login,
            self.renew,
            self.lookup,
            self.kv,
            self.decrypt,
            self.other,
        ]
    }
}
