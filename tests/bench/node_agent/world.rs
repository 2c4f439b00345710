//! The benchmark's peers: SPIRE server and agent serving the Delegated Identity API to
//! Steeple, one entry for uid 0 federating with partner.org (Steeple, the benchmark and
//! its workload processes all run as root, so all of them match it), and Steeple in
//! delegated mode.

use std::path::Path;
use std::time::{Duration, Instant};

use steeple_e2e::bench_support::{git_describe, rss_kib};
use steeple_e2e::peers::SPIRE_VERSION;
use steeple_e2e::{EntrySpec, Spire, SpireOptions, SteepleProcess, sds_client};
use tempfile::TempDir;

use crate::figures::Target;
use crate::partner::{PARTNER_TRUST_DOMAIN, PartnerBundle};

/// Steeple's own SPIFFE ID, and the one every workload process gets (same uid).
pub const STEEPLE_ID: &str = "spiffe://example.org/steeple";
/// How long Steeple may take to serve its own identity after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after Steeple is ready before its idle RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// SPIRE, Steeple as a node agent, and the partner.org bundle currently set.
#[derive(Debug)]
pub struct World {
    // Declared first: Steeple stops before the agent it follows.
    steeple: SteepleProcess,
    spire: Spire,
    _dir: TempDir,
    partner: PartnerBundle,
}

impl World {
    /// Starts SPIRE (log INFO, Steeple an authorized delegate), sets a partner.org
    /// bundle, registers uid 0 federating with it, starts Steeple in delegated mode and
    /// waits until it serves `ALL` with the partner bundle to this process.
    pub async fn start(max_workloads: usize) -> anyhow::Result<Self> {
        let spire = Spire::start(SpireOptions {
            log_level: "INFO".to_owned(),
            authorized_delegates: vec![STEEPLE_ID.to_owned()],
            ..SpireOptions::default()
        })?;
        let partner = PartnerBundle::set(&spire)?;
        spire.register(&EntrySpec {
            spiffe_id: STEEPLE_ID.to_owned(),
            selectors: vec!["unix:uid:0".to_owned()],
            federates_with: vec![PARTNER_TRUST_DOMAIN.to_owned()],
            ..EntrySpec::default()
        })?;
        let dir = tempfile::Builder::new()
            .prefix("steeple-node-bench-")
            .tempdir_in("/tmp")?;
        // Every workload process is root, as Steeple: the per-uid connection limit
        // (default 512) must admit all of them.
        let config = format!(
            "[workload_api]\nmode = \"delegated\"\nadmin_socket = \"{}\"\n\
             [sds]\nmax_connections_per_uid = {}\n\
             [[callers]]\nuids = [0]\nresources = [\"*\"]\n",
            spire.admin_socket().display(),
            max_workloads + 64
        );
        let steeple =
            SteepleProcess::run(&dir.path().join("steeple"), spire.agent_socket(), &config)?;
        let partner_id = format!("spiffe://{PARTNER_TRUST_DOMAIN}");
        sds_client::wait_for(steeple.sds_socket(), &["ALL", &partner_id], READY_TIMEOUT).await?;
        Ok(Self {
            steeple,
            spire,
            _dir: dir,
            partner,
        })
    }

    /// Steeple's RSS once it serves and no workload is followed but this process, KiB.
    pub async fn steeple_idle_rss(&self) -> anyhow::Result<u64> {
        tokio::time::sleep(IDLE_SETTLE).await;
        rss_kib(self.steeple.pid())
    }

    /// The SDS socket workloads of `target` connect to: SPIRE agent's Workload API
    /// socket (it serves SDS there and attests each caller itself), or Steeple's.
    pub fn socket(&self, target: Target) -> anyhow::Result<&Path> {
        match target {
            Target::SpireAgent => Ok(self.spire.agent_socket()),
            Target::Steeple => Ok(self.steeple.sds_socket()),
            Target::Floor => anyhow::bail!("node_agent has no floor target"),
        }
    }

    /// The process serving `target`'s workloads.
    pub fn pid(&self, target: Target) -> anyhow::Result<u32> {
        match target {
            Target::SpireAgent => self.agent_pid(),
            Target::Steeple => Ok(self.steeple.pid()),
            Target::Floor => anyhow::bail!("node_agent has no floor target"),
        }
    }

    /// SPIRE agent's pid (it also serves Steeple's subscriptions).
    pub fn agent_pid(&self) -> anyhow::Result<u32> {
        self.spire
            .agent_pid()
            .ok_or_else(|| anyhow::anyhow!("SPIRE agent is not running"))
    }

    /// Fingerprint of the partner.org bundle currently set.
    pub fn partner_fingerprint(&self) -> u64 {
        self.partner.fingerprint()
    }

    /// Sets a new partner.org CA and returns when `bundle set` returned.
    pub fn rotate_partner_bundle(&mut self) -> anyhow::Result<Instant> {
        self.partner.rotate(&self.spire)
    }

    /// Stops and starts SPIRE agent (same data dir and sockets); Steeple reconnects.
    pub fn restart_spire_agent(&mut self) -> anyhow::Result<()> {
        self.spire.stop_agent()?;
        self.spire.start_agent()
    }

    /// Versions and settings, one line.
    pub fn describe(&self, rotations: usize) -> String {
        format!(
            "SPIRE {SPIRE_VERSION} (server + agent, log INFO, agent sync 1 s, Steeple in \
             `authorized_delegates`); Steeple {} release build (log info), \
             `[workload_api] mode = \"delegated\"`; every workload a process of its own \
             (`sds-workload`, root, one HTTP/2 connection, streams `default`, `ROOTCA`, \
             `ALL` with an Envoy 1.40 node, ACKing); {rotations} rotations per round, \
             figures are their median",
            git_describe()
        )
    }
}
