//! A real SPIRE server and agent in a short temp dir under /tmp: join-token attestation,
//! unix workload attestation, and the CLI operations the suites need (entries, federated
//! bundles, restarts). Every call blocks until SPIRE has done it (bounded by timeouts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::peers;
use crate::process::{self, ChildProcess};

mod config;

/// How long a server or agent gets to report healthy after starting.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one CLI call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Names of the processes, and so of their log files in `<dir>/logs`.
const SERVER: &str = "spire-server";
const AGENT: &str = "spire-agent";

/// How the SPIRE server is configured. Durations use Go syntax ("20s", "1h").
#[derive(Debug, Clone)]
pub struct SpireOptions {
    /// Trust domain name, without `spiffe://`. Default `example.org`.
    pub trust_domain: String,
    /// Server `default_x509_svid_ttl`. Default `1h`; rotation suites use e.g. `20s`.
    pub default_x509_svid_ttl: String,
    /// Server `default_jwt_svid_ttl`. Default `5m`.
    pub default_jwt_svid_ttl: String,
    /// Server `ca_ttl`. Default `168h`, so the CA never rotates during a test.
    pub ca_ttl: String,
    /// `log_level` of server and agent. Default `DEBUG`.
    pub log_level: String,
    /// The agent's `authorized_delegates` (SPIFFE IDs). When set, the agent serves the
    /// Delegated Identity API on [`Spire::admin_socket`], and its Workload API socket
    /// moves to `public/` (SPIRE refuses an admin socket beside it).
    pub authorized_delegates: Vec<String>,
}

impl Default for SpireOptions {
    fn default() -> Self {
        Self {
            trust_domain: "example.org".to_owned(),
            default_x509_svid_ttl: "1h".to_owned(),
            default_jwt_svid_ttl: "5m".to_owned(),
            ca_ttl: "168h".to_owned(),
            log_level: "DEBUG".to_owned(),
            authorized_delegates: Vec::new(),
        }
    }
}

/// A registration entry to create (see [`Spire::register`]).
#[derive(Debug, Clone, Default)]
pub struct EntrySpec {
    /// The workload's SPIFFE ID, e.g. `spiffe://example.org/web`.
    pub spiffe_id: String,
    /// Parent ID; `None` means the agent's node alias `spiffe://<td>/node`.
    pub parent_id: Option<String>,
    /// Selectors such as `unix:uid:1000`; a workload must match all of them.
    pub selectors: Vec<String>,
    /// `-x509SVIDTTL` in seconds; `None` uses the server default.
    pub x509_svid_ttl: Option<u32>,
    /// `-jwtSVIDTTL` in seconds; `None` uses the server default.
    pub jwt_svid_ttl: Option<u32>,
    /// Trust domains (`other.org` or `spiffe://other.org`) whose bundles the workload gets.
    pub federates_with: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
}

/// A running SPIRE server and agent. Dropping it stops both and removes the temp dir.
#[derive(Debug)]
pub struct Spire {
    options: SpireOptions,
    server_bin: PathBuf,
    agent_bin: PathBuf,
    server_port: u16,
    server_socket: PathBuf,
    agent_socket: PathBuf,
    agent_attested: bool,
    // Declared before `dir`: the processes stop before their directory is removed.
    agent: Option<ChildProcess>,
    server: Option<ChildProcess>,
    dir: TempDir,
}

impl Spire {
    /// Writes the configs, starts the server, fetches its bundle, starts the agent with a
    /// join token for `spiffe://<td>/node`, and returns once both report healthy.
    pub fn start(options: SpireOptions) -> anyhow::Result<Self> {
        let server_bin = peers::spire_server_bin()?;
        let agent_bin = peers::spire_agent_bin()?;
        // Unix socket paths must stay under 108 bytes, so not $TMPDIR, which may be long.
        let dir = tempfile::Builder::new()
            .prefix("spire-")
            .tempdir_in("/tmp")
            .context("creating SPIRE temp dir")?;
        let delegating = !options.authorized_delegates.is_empty();
        let agent_socket = if delegating {
            std::fs::create_dir_all(dir.path().join("public"))?;
            std::fs::create_dir_all(dir.path().join("admin"))?;
            dir.path().join("public/agent.sock")
        } else {
            dir.path().join("agent.sock")
        };
        let mut spire = Self {
            options,
            server_bin,
            agent_bin,
            server_port: process::free_port()?,
            server_socket: dir.path().join("server.sock"),
            agent_socket,
            agent_attested: false,
            agent: None,
            server: None,
            dir,
        };
        spire.write_configs()?;
        spire.start_server()?;
        let bundle = spire.bundle_pem()?;
        std::fs::write(spire.path("bundle.pem"), bundle).context("writing bootstrap bundle")?;
        spire.start_agent()?;
        Ok(spire)
    }

    /// The agent's Workload API socket. SPIRE agent serves its own Envoy SDS API on this
    /// same socket (resources `default`, `ROOTCA`, `ALL`, or SPIFFE IDs).
    pub fn agent_socket(&self) -> &Path {
        &self.agent_socket
    }

    /// The agent's admin socket (the Delegated Identity API), served when
    /// [`SpireOptions::authorized_delegates`] is set.
    pub fn admin_socket(&self) -> PathBuf {
        self.path("admin/admin.sock")
    }

    /// The running agent's process id (`None` while it is stopped).
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(ChildProcess::id)
    }

    /// The running server's process id (`None` while it is stopped).
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(ChildProcess::id)
    }

    /// The server's admin API socket (what `spire-server` CLI commands use).
    pub fn server_socket(&self) -> &Path {
        &self.server_socket
    }

    /// The trust domain name, without `spiffe://`.
    pub fn trust_domain(&self) -> &str {
        &self.options.trust_domain
    }

    /// `spiffe://<td>/node`, the agent's alias and the default parent of entries.
    pub fn node_id(&self) -> String {
        format!("spiffe://{}/node", self.options.trust_domain)
    }

    /// The temp dir holding configs, data dirs, sockets and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates an entry for `spiffe_id` under the node alias with one `selector` (e.g.
    /// `unix:uid:0`) and returns its entry ID. The agent syncs it within about a second;
    /// waiting for the SVID is the caller's job.
    pub fn create_entry(
        &self,
        spiffe_id: &str,
        selector: &str,
        x509_ttl: Option<u32>,
    ) -> anyhow::Result<String> {
        self.register(&EntrySpec {
            spiffe_id: spiffe_id.to_owned(),
            selectors: vec![selector.to_owned()],
            x509_svid_ttl: x509_ttl,
            ..EntrySpec::default()
        })
    }

    /// Creates the entry described by `spec` and returns its entry ID.
    pub fn register(&self, spec: &EntrySpec) -> anyhow::Result<String> {
        let mut args = vec![
            "entry".to_owned(),
            "create".to_owned(),
            "-output".to_owned(),
            "json".to_owned(),
            "-spiffeID".to_owned(),
            spec.spiffe_id.clone(),
            "-parentID".to_owned(),
            spec.parent_id.clone().unwrap_or_else(|| self.node_id()),
        ];
        let repeated = [("-selector", &spec.selectors), ("-dns", &spec.dns_names)];
        for (flag, values) in repeated {
            for value in values {
                args.extend([flag.to_owned(), value.clone()]);
            }
        }
        for td in &spec.federates_with {
            args.extend(["-federatesWith".to_owned(), trust_domain_id(td)]);
        }
        let ttls = [
            ("-x509SVIDTTL", spec.x509_svid_ttl),
            ("-jwtSVIDTTL", spec.jwt_svid_ttl),
        ];
        for (flag, ttl) in ttls {
            if let Some(ttl) = ttl {
                args.extend([flag.to_owned(), ttl.to_string()]);
            }
        }
        let output = self.server_cli(&args)?;
        entry_id_from_output(&output)
            .with_context(|| format!("creating entry {}: {output}", spec.spiffe_id))
    }

    /// Deletes the entry with ID `entry_id`.
    pub fn delete_entry(&self, entry_id: &str) -> anyhow::Result<()> {
        self.server_cli(&["entry", "delete", "-entryID", entry_id])
            .map(drop)
    }

    /// The server's own X.509 bundle as PEM (`spire-server bundle show`).
    pub fn bundle_pem(&self) -> anyhow::Result<String> {
        self.server_cli(&["bundle", "show", "-format", "pem"])
    }

    /// Sets (creates or replaces) the federated bundle of `trust_domain` (`other.org` or
    /// `spiffe://other.org`) to the PEM certificates in `pem`. Only entries created with
    /// `federates_with` that trust domain receive it.
    pub fn set_federated_bundle(&self, trust_domain: &str, pem: &str) -> anyhow::Result<()> {
        let id = trust_domain_id(trust_domain);
        let file = self.path(&format!(
            "federated-{}.pem",
            id.trim_start_matches("spiffe://")
        ));
        std::fs::write(&file, pem).with_context(|| format!("writing {}", file.display()))?;
        let file = file.to_string_lossy().into_owned();
        let args = [
            "bundle", "set", "-id", &id, "-path", &file, "-format", "pem",
        ];
        self.server_cli(&args).map(drop)
    }

    /// Deletes the federated bundle of `trust_domain`, dissociating (not deleting) the
    /// entries that federate with it.
    pub fn delete_federated_bundle(&self, trust_domain: &str) -> anyhow::Result<()> {
        let id = trust_domain_id(trust_domain);
        let args = ["bundle", "delete", "-id", &id, "-mode", "dissociate"];
        self.server_cli(&args).map(drop)
    }

    /// Stops the agent (SIGTERM). Its data dir, keys and stored SVID are kept, so
    /// [`Spire::start_agent`] brings it back under the same identity.
    pub fn stop_agent(&mut self) -> anyhow::Result<()> {
        stop(&mut self.agent)
    }

    /// Starts the agent (again) on the same socket and data dir and waits until it is
    /// healthy. The first start attests with a fresh join token; later ones reuse the
    /// SVID stored in the data dir.
    pub fn start_agent(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.agent.is_none(), "spire-agent is already running");
        let mut command = std::process::Command::new(&self.agent_bin);
        command
            .arg("run")
            .arg("-config")
            .arg(self.path("agent.conf"));
        if !self.agent_attested {
            command.arg("-joinToken").arg(self.join_token()?);
        }
        let mut agent = ChildProcess::spawn(AGENT, command, &self.log_dir())?;
        wait_healthy(&mut agent, &self.agent_bin, self.agent_socket())?;
        self.agent = Some(agent);
        self.agent_attested = true;
        Ok(())
    }

    /// Stops the server (SIGTERM). Its datastore and keys are kept on disk.
    pub fn stop_server(&mut self) -> anyhow::Result<()> {
        stop(&mut self.server)
    }

    /// Starts the server (again) on the same port, data dir and keys, and waits until it
    /// is healthy.
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.server.is_none(), "spire-server is already running");
        let mut command = std::process::Command::new(&self.server_bin);
        command
            .arg("run")
            .arg("-config")
            .arg(self.path("server.conf"));
        let mut server = ChildProcess::spawn(SERVER, command, &self.log_dir())?;
        wait_healthy(&mut server, &self.server_bin, self.server_socket())?;
        self.server = Some(server);
        Ok(())
    }

    /// Everything the server has logged, across restarts.
    pub fn server_logs(&self) -> String {
        process::read_process_logs(&self.log_dir(), SERVER)
    }

    /// Everything the agent has logged, across restarts.
    pub fn agent_logs(&self) -> String {
        process::read_process_logs(&self.log_dir(), AGENT)
    }

    /// Runs `spire-server <args>` against this server's socket and returns stdout.
    /// `-socketPath` is inserted after the subcommand words (e.g. `entry show`).
    pub fn server_cli<S: AsRef<str>>(&self, args: &[S]) -> anyhow::Result<String> {
        cli(&self.server_bin, args, self.server_socket())
    }

    /// Runs `spire-agent <args>` against this agent's socket (e.g. `api fetch x509`) and
    /// returns stdout.
    pub fn agent_cli<S: AsRef<str>>(&self, args: &[S]) -> anyhow::Result<String> {
        cli(&self.agent_bin, args, self.agent_socket())
    }

    fn join_token(&self) -> anyhow::Result<String> {
        let node = self.node_id();
        let args = ["token", "generate", "-output", "json", "-spiffeID", &node];
        let output = self.server_cli(&args)?;
        let json: serde_json::Value =
            serde_json::from_str(&output).context("parsing `token generate` output")?;
        json["value"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no token in `token generate` output: {output}"))
    }

    fn write_configs(&self) -> anyhow::Result<()> {
        let server = config::server(self.dir(), self.server_port, &self.options);
        let agent = config::agent(
            self.dir(),
            self.server_port,
            &self.agent_socket,
            &self.options,
        );
        std::fs::write(self.path("server.conf"), server).context("writing server.conf")?;
        std::fs::write(self.path("agent.conf"), agent).context("writing agent.conf")?;
        Ok(())
    }

    fn log_dir(&self) -> PathBuf {
        self.path("logs")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Spire {
    fn drop(&mut self) {
        // The agent first, so it does not log a burst of errors about the server.
        let _ = stop(&mut self.agent);
        let _ = stop(&mut self.server);
    }
}

fn stop(process: &mut Option<ChildProcess>) -> anyhow::Result<()> {
    match process.take() {
        Some(mut process) => process.stop().map(drop),
        None => Ok(()),
    }
}

fn wait_healthy(process: &mut ChildProcess, bin: &Path, socket: &Path) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + HEALTHY_TIMEOUT;
    loop {
        if let Some(status) = process.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}) before becoming healthy; last log lines:\n{}",
                process.name(),
                process::tail(&process.logs(), 40)
            );
        }
        let check = cli(bin, &["healthcheck"], socket);
        if check.is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} not healthy within {HEALTHY_TIMEOUT:?}; last log lines:\n{}",
                process.name(),
                process::tail(&process.logs(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `bin <subcommand words> -socketPath <socket> <flags>`.
fn cli<S: AsRef<str>>(bin: &Path, args: &[S], socket: &Path) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let split = args
        .iter()
        .position(|a| a.starts_with('-'))
        .unwrap_or(args.len());
    let socket = socket.to_string_lossy();
    let mut full: Vec<&str> = args[..split].to_vec();
    full.extend(["-socketPath", &socket]);
    full.extend(&args[split..]);
    process::run_command(bin, &full, CLI_TIMEOUT)
}

fn trust_domain_id(trust_domain: &str) -> String {
    if trust_domain.starts_with("spiffe://") {
        trust_domain.to_owned()
    } else {
        format!("spiffe://{trust_domain}")
    }
}

fn entry_id_from_output(output: &str) -> anyhow::Result<String> {
    let json: serde_json::Value = serde_json::from_str(output).context("output is not JSON")?;
    let result = &json["results"][0];
    let code = result["status"]["code"].as_i64().unwrap_or(-1);
    anyhow::ensure!(code == 0, "status {code}: {}", result["status"]["message"]);
    result["entry"]["id"]
        .as_str()
        .map(str::to_owned)
        .context("no entry id in output")
}
