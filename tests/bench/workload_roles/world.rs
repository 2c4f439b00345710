//! The benchmark's peers: SPIRE server and agent serving the Delegated Identity API to
//! Steeple, one entry per workload (its own SPIFFE ID, selected by its own uid), moto's
//! STS, and a fresh Steeple node agent per round with `[[workloads]]` mapping every
//! workload to one AWS role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use steeple_e2e::bench_support::git_describe;
use steeple_e2e::moto::Moto;
use steeple_e2e::peers::SPIRE_VERSION;
use steeple_e2e::process::tail;
use steeple_e2e::{Spire, SpireOptions, SteepleProcess, free_port, sds_client};
use tempfile::TempDir;

/// Steeple's own SPIFFE ID (uid 0, as Steeple and the benchmark).
const STEEPLE_ID: &str = "spiffe://example.org/steeple";
/// Workload `i` runs as uid `BASE_UID + i` (clear of the e2e suites' 11xx and 12xx).
const BASE_UID: u32 = 20_000;
/// The one role every workload maps to; each workload still gets its own lease.
pub const ROLE: &str = "bench";
/// The container endpoint's authorization token (not a secret here).
const CONTAINER_TOKEN: &str = "container-token-roles-bench";
/// How long a fresh Steeple may take to serve its own identity.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// SPIRE with the workloads' entries, moto, and the files the workload users read.
#[derive(Debug)]
pub struct World {
    spire: Spire,
    moto: Moto,
    dir: TempDir,
    consumer_bin: PathBuf,
    rounds: usize,
}

/// One workload: its SPIFFE ID and the uid its processes run as.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `spiffe://example.org/bench/wNNNN`.
    pub spiffe_id: String,
    /// Its processes' uid and gid.
    pub uid: u32,
}

impl Workload {
    /// The `RoleSessionName` Steeple derives from the SPIFFE ID (`/` → `-`).
    pub fn session_name(&self) -> String {
        self.spiffe_id
            .trim_start_matches("spiffe://")
            .replace('/', "-")
    }
}

/// Steeple as a node agent for one round: its audit trail and HTTP ports.
#[derive(Debug)]
pub struct NodeAgent {
    /// The running agent.
    pub steeple: SteepleProcess,
    /// Its audit trail (JSON lines).
    pub audit: PathBuf,
    /// The container-credentials endpoint's port.
    pub container_port: u16,
    /// The IMDSv2 emulation's port.
    pub imds_port: u16,
}

impl World {
    /// Starts SPIRE (log INFO, Steeple an authorized delegate) and moto, registers
    /// Steeple (uid 0) and `max_workloads` workloads, and prepares the token file and a
    /// copy of `roles-consumer` every workload user may read and run.
    pub async fn start(max_workloads: usize) -> anyhow::Result<Self> {
        let spire = Spire::start(SpireOptions {
            log_level: "INFO".to_owned(),
            authorized_delegates: vec![STEEPLE_ID.to_owned()],
            ..SpireOptions::default()
        })?;
        spire.create_entry(STEEPLE_ID, "unix:uid:0", None)?;
        for workload in workloads(max_workloads) {
            spire.create_entry(
                &workload.spiffe_id,
                &format!("unix:uid:{}", workload.uid),
                None,
            )?;
        }
        let moto = Moto::start().await?;
        let dir = tempfile::Builder::new()
            .prefix("steeple-roles-bench-")
            .tempdir_in("/tmp")?;
        set_mode(dir.path(), 0o755)?;
        std::fs::write(dir.path().join("container-token"), CONTAINER_TOKEN)?;
        set_mode(&dir.path().join("container-token"), 0o644)?;
        let consumer_bin = dir.path().join("roles-consumer");
        std::fs::copy(env!("CARGO_BIN_EXE_roles-consumer"), &consumer_bin)?;
        set_mode(&consumer_bin, 0o755)?;
        Ok(Self {
            spire,
            moto,
            dir,
            consumer_bin,
            rounds: 0,
        })
    }

    /// moto, whose recorder counts the STS calls.
    pub fn moto(&self) -> &Moto {
        &self.moto
    }

    /// The `roles-consumer` copy the workload users run.
    pub fn consumer_bin(&self) -> &Path {
        &self.consumer_bin
    }

    /// The container endpoint's token file.
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("container-token")
    }

    /// A fresh Steeple node agent (so no lease lingers from an earlier round) with
    /// `session` STS sessions, once it serves its own identity.
    pub async fn start_agent(&mut self, session: Duration) -> anyhow::Result<NodeAgent> {
        self.rounds += 1;
        let dir = self.dir.path().join(format!("round-{}", self.rounds));
        let steeple_dir = dir.join("steeple");
        std::fs::create_dir_all(&steeple_dir)?;
        set_mode(&dir, 0o755)?;
        set_mode(&steeple_dir, 0o755)?;
        let audit = dir.join("audit.jsonl");
        let (container_port, imds_port) = (free_port()?, free_port()?);
        let config = format!(
            "[workload_api]\nmode = \"delegated\"\nadmin_socket = \"{admin}\"\n\
             [sds]\nsocket_mode = \"0666\"\n\
             [audit]\nsink = \"file:{audit}\"\n\
             [aws]\nenabled = true\nsts_endpoint = \"{sts}\"\nsession_duration = \"{session}s\"\n\
             container_credentials_listen = \"127.0.0.1:{container_port}\"\n\
             container_credentials_token_file = \"{token}\"\n\
             imds_listen = \"127.0.0.1:{imds_port}\"\n\
             [[workloads]]\nspiffe_id = \"spiffe://example.org/bench/*\"\n\
             aws_role_arn = \"arn:aws:iam::123456789012:role/{ROLE}\"\n",
            admin = self.spire.admin_socket().display(),
            audit = audit.display(),
            sts = self.moto.endpoint(),
            session = session.as_secs(),
            token = self.token_file().display(),
        );
        let steeple = SteepleProcess::run(&steeple_dir, self.spire.agent_socket(), &config)?;
        sds_client::wait_for(steeple.sds_socket(), &["default"], READY_TIMEOUT)
            .await
            .with_context(|| format!("Steeple's log (tail):\n{}", tail(&steeple.logs(), 30)))?;
        Ok(NodeAgent {
            steeple,
            audit,
            container_port,
            imds_port,
        })
    }

    /// Versions and settings, one line.
    pub fn describe(&self, session: Duration) -> String {
        format!(
            "SPIRE {SPIRE_VERSION} (server + agent, log INFO, Steeple in \
             `authorized_delegates`, one entry per workload by `unix:uid`); moto's STS; \
             Steeple {} release build (log info), `[workload_api] mode = \"delegated\"`, \
             `[aws] session_duration = \"{}s\"`, one `[[workloads]]` glob mapping every \
             workload to one role (one lease per workload), a fresh Steeple per round; every \
             consumer a `roles-consumer` process run as its workload's uid (`setpriv`)",
            git_describe(),
            session.as_secs()
        )
    }
}

/// The first `count` workloads.
pub fn workloads(count: usize) -> Vec<Workload> {
    (0..count)
        .map(|i| Workload {
            spiffe_id: format!("spiffe://example.org/bench/w{i:04}"),
            uid: BASE_UID + i as u32,
        })
        .collect()
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}
