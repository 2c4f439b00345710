//! A real OpenBao server (the Vault API) in a temp dir on loopback, and the admin steps the
//! Vault suites need, done with OpenBao's own CLI (`bao`): namespaces, KV v1/v2, transit
//! keys and rotation, JWT auth with roles, policies, token revocation, restarts.
//!
//! Four modes (see [`OpenBaoMode`]): `-dev` (in memory; a restart loses everything),
//! `-dev -dev-tls` (the same over TLS with a generated CA), and a persistent server (file
//! storage, initialized with one key share and unsealed by the harness), whose state —
//! mounts, keys, tokens — survives [`OpenBao::stop`] / [`OpenBao::start_again`], over plain
//! HTTP or over TLS with a certificate the test supplies (e.g. one SPIRE minted).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tempfile::TempDir;

use crate::peers;
use crate::process::{self, ChildProcess};

mod admin;

pub use admin::{Admin, JwtKeys, JwtRole};

/// The OpenBao version `tests/peers/install-openbao.sh` builds by default.
pub const OPENBAO_VERSION: &str = "2.4.0";

/// How long a server gets to answer `bao status` after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const NAME: &str = "openbao";

/// The `bao` binary: `$STEEPLE_OPENBAO_BIN`, else `<cache>/openbao-2.4.0/bin/bao`.
pub fn openbao_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("STEEPLE_OPENBAO_BIN") {
        Some(path) => PathBuf::from(path),
        None => peers::cache_dir()?.join(format!("openbao-{OPENBAO_VERSION}/bin/bao")),
    };
    anyhow::ensure!(
        path.is_file(),
        "bao not found at {}: run `bash tests/peers/install-openbao.sh` or `source tests/peers/env.sh`",
        path.display()
    );
    Ok(path)
}

/// How the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenBaoMode {
    /// `bao server -dev`: in memory, unsealed, `secret/` is KV v2, plain HTTP. A restart
    /// starts from scratch (same root token, nothing else).
    #[default]
    Dev,
    /// `-dev -dev-tls`: as `Dev`, over TLS with a CA OpenBao generates
    /// ([`OpenBao::ca_file`]); a restart generates a new CA.
    DevTls,
    /// `bao server -config` with `storage "file"`: initialized (one key share) and
    /// unsealed by the harness, `secret/` mounted as KV v2, plain HTTP. State survives
    /// restarts; every start is unsealed again.
    Persistent,
    /// As `Persistent`, over TLS at `https://localhost:<port>` with a certificate the
    /// test supplies ([`OpenBao::start_tls`], [`OpenBao::set_tls`]).
    PersistentTls,
}

/// A server certificate for [`OpenBaoMode::PersistentTls`], all PEM.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The certificate chain, leaf first, valid for `localhost`.
    pub chain: String,
    /// Its private key.
    pub key: String,
    /// What the `bao` CLI trusts for it.
    pub ca: String,
}

/// A running OpenBao. Dropping it stops the server and removes its temp dir.
#[derive(Debug)]
pub struct OpenBao {
    bin: PathBuf,
    mode: OpenBaoMode,
    port: u16,
    cluster_port: u16,
    root_token: String,
    unseal_key: Option<String>,
    starts: u32,
    // Declared before `dir`: the server stops before its directory is removed.
    process: Option<ChildProcess>,
    dir: TempDir,
}

impl OpenBao {
    /// Starts a dev server ([`OpenBaoMode::Dev`]) and waits until it answers.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_mode(OpenBaoMode::Dev)
    }

    /// Starts a server in `mode` and waits until it is unsealed and answering.
    /// [`OpenBaoMode::PersistentTls`] needs its certificate: see [`OpenBao::start_tls`].
    pub fn start_mode(mode: OpenBaoMode) -> anyhow::Result<Self> {
        anyhow::ensure!(
            mode != OpenBaoMode::PersistentTls,
            "OpenBaoMode::PersistentTls starts with OpenBao::start_tls"
        );
        Self::start_with(mode, None)
    }

    /// Starts a persistent server over TLS with `tls` ([`OpenBaoMode::PersistentTls`]).
    pub fn start_tls(tls: &ServerTls) -> anyhow::Result<Self> {
        Self::start_with(OpenBaoMode::PersistentTls, Some(tls))
    }

    /// Replaces the server certificate; it takes effect at [`OpenBao::start_again`].
    pub fn set_tls(&self, tls: &ServerTls) -> anyhow::Result<()> {
        let dir = self.dir.path().join("tls");
        std::fs::create_dir_all(&dir).context("creating the TLS dir")?;
        for (name, pem) in [
            ("server.pem", &tls.chain),
            ("server.key", &tls.key),
            ("ca.pem", &tls.ca),
        ] {
            std::fs::write(dir.join(name), pem).with_context(|| format!("writing {name}"))?;
        }
        Ok(())
    }

    fn start_with(mode: OpenBaoMode, tls: Option<&ServerTls>) -> anyhow::Result<Self> {
        let bin = openbao_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("openbao-")
            .tempdir()
            .context("creating OpenBao temp dir")?;
        // Dev mode binds its cluster listener on port + 1, without a flag to move it.
        let (port, cluster_port) = match mode {
            OpenBaoMode::Persistent | OpenBaoMode::PersistentTls => {
                (process::free_port()?, process::free_port()?)
            }
            _ => free_port_pair()?,
        };
        let mut bao = Self {
            bin,
            mode,
            port,
            cluster_port,
            root_token: format!("root-{}", random_hex()?),
            unseal_key: None,
            starts: 0,
            process: None,
            dir,
        };
        if let Some(tls) = tls {
            bao.set_tls(tls)?;
        }
        bao.start_again()?;
        Ok(bao)
    }

    /// `http://127.0.0.1:<port>` (`https://` in [`OpenBaoMode::DevTls`],
    /// `https://localhost:<port>` in [`OpenBaoMode::PersistentTls`]).
    pub fn addr(&self) -> String {
        match self.mode {
            OpenBaoMode::DevTls => format!("https://127.0.0.1:{}", self.port),
            OpenBaoMode::PersistentTls => format!("https://localhost:{}", self.port),
            _ => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// The API port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the server's certificate (TLS modes only).
    pub fn ca_file(&self) -> Option<PathBuf> {
        match self.mode {
            OpenBaoMode::DevTls => Some(self.tls_dir().join("vault-ca.pem")),
            OpenBaoMode::PersistentTls => Some(self.dir.path().join("tls/ca.pem")),
            _ => None,
        }
    }

    /// The root token.
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The temp dir holding config, data, certificates and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server logged, across restarts.
    pub fn logs(&self) -> String {
        process::read_process_logs(&self.dir.path().join("logs"), NAME)
    }

    /// Stops the server (SIGTERM, then SIGKILL). Idempotent.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        match self.process.take() {
            Some(mut process) => process.stop().map(drop),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same port and waits until it answers, unsealed.
    /// A dev server comes back empty (see [`OpenBaoMode`]).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.starts += 1;
        let mut command = Command::new(&self.bin);
        command.arg("server").args(self.server_args()?);
        let log_dir = self.dir.path().join("logs");
        self.process = Some(ChildProcess::spawn(NAME, command, &log_dir)?);
        self.wait_status(&[0, 2])?;
        if matches!(
            self.mode,
            OpenBaoMode::Persistent | OpenBaoMode::PersistentTls
        ) {
            self.init_and_unseal()?;
        }
        Ok(())
    }

    /// Admin steps in the root namespace.
    pub fn admin(&self) -> Admin<'_> {
        Admin {
            bao: self,
            namespace: None,
        }
    }

    /// Admin steps in `namespace` (`BAO_NAMESPACE`).
    pub fn admin_in(&self, namespace: &str) -> Admin<'_> {
        Admin {
            bao: self,
            namespace: Some(namespace.to_owned()),
        }
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join(format!("tls-{}", self.starts))
    }

    fn server_args(&self) -> anyhow::Result<Vec<String>> {
        let listen = format!("-dev-listen-address=127.0.0.1:{}", self.port);
        let dev = |extra: Vec<String>| {
            let mut args = vec![
                "-dev".to_owned(),
                "-dev-no-store-token".to_owned(),
                format!("-dev-root-token-id={}", self.root_token),
                listen.clone(),
            ];
            args.extend(extra);
            args
        };
        Ok(match self.mode {
            OpenBaoMode::Dev => dev(vec![]),
            OpenBaoMode::DevTls => {
                let tls_dir = self.tls_dir();
                std::fs::create_dir_all(&tls_dir).context("creating dev TLS dir")?;
                dev(vec![
                    "-dev-tls".to_owned(),
                    format!("-dev-tls-cert-dir={}", tls_dir.display()),
                ])
            }
            OpenBaoMode::Persistent | OpenBaoMode::PersistentTls => {
                let config = self.dir.path().join("server.hcl");
                std::fs::write(&config, self.persistent_config()).context("writing server.hcl")?;
                vec![format!("-config={}", config.display())]
            }
        })
    }

    fn persistent_config(&self) -> String {
        let data = self.dir.path().join("data");
        let tls = self.dir.path().join("tls");
        let listener_tls = match self.mode {
            OpenBaoMode::PersistentTls => format!(
                "tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"",
                tls.join("server.pem").display(),
                tls.join("server.key").display()
            ),
            _ => "tls_disable = true".to_owned(),
        };
        format!(
            r#"ui = false
api_addr = "{addr}"
cluster_addr = "https://127.0.0.1:{cluster}"
storage "file" {{
  path = "{data}"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  {listener_tls}
}}
"#,
            addr = self.addr(),
            port = self.port,
            cluster = self.cluster_port,
            data = data.display(),
        )
    }

    /// First start: `operator init` with one key share (keeping the root token and the
    /// key) and a KV v2 mount at `secret/` as in dev mode. Every start: unseal.
    fn init_and_unseal(&mut self) -> anyhow::Result<()> {
        if self.unseal_key.is_none() {
            let init: serde_json::Value = serde_json::from_str(&self.admin().cli(&[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ])?)
            .context("parsing operator init output")?;
            let field = |pointer: &str| {
                init.pointer(pointer)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .with_context(|| format!("operator init output lacks {pointer}"))
            };
            self.unseal_key = Some(field("/unseal_keys_b64/0")?);
            self.root_token = field("/root_token")?;
        }
        let key = self.unseal_key.clone().unwrap_or_default();
        self.admin().cli(&["operator", "unseal", key.as_str()])?;
        self.wait_status(&[0])?;
        if self.starts == 1 {
            self.admin().enable_kv("secret", 2)?;
        }
        Ok(())
    }

    /// Waits until `bao status` exits with one of `codes` (0 unsealed, 2 sealed).
    fn wait_status(&mut self, codes: &[i32]) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let output = self.admin().run(&["status", "-format=json"])?;
            if output.status.code().is_some_and(|c| codes.contains(&c)) {
                return Ok(());
            }
            let exited = self.process.as_mut().is_none_or(|p| !p.is_running());
            if exited || Instant::now() > deadline {
                anyhow::bail!(
                    "OpenBao not ready (status {:?}, {}):\n{}",
                    output.status.code(),
                    if exited { "server exited" } else { "timed out" },
                    process::tail(&self.logs(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A free port `p` whose `p + 1` is free too, for dev mode's cluster listener.
fn free_port_pair() -> anyhow::Result<(u16, u16)> {
    for _ in 0..50 {
        let port = process::free_port()?;
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, next)).is_ok() {
            return Ok((port, next));
        }
    }
    anyhow::bail!("no free port pair on 127.0.0.1 after 50 tries")
}

/// 16 random bytes as hex, for the dev root token.
fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
