//! The benchmark's peers: SPIRE server and agent with one workload entry federating with
//! partner.org, Steeple on the agent's Workload API, and (if asked) the floor relaying
//! Steeple — plus the partner CA the benchmark rotates.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use steeple_e2e::bench_support::rss_kib;
use steeple_e2e::peers::SPIRE_VERSION;
use steeple_e2e::suite::uid_selector;
use steeple_e2e::{EntrySpec, Spire, SpireOptions, SteepleProcess, sds_client};
use tempfile::TempDir;

use crate::args::Args;
use crate::figures::Target;
use crate::fleet::{Fleet, RESOURCE};
use crate::floor::FloorProcess;
use crate::partner::{PARTNER_TRUST_DOMAIN, PartnerBundle};

const WORKLOAD_ID: &str = "spiffe://example.org/bench";
/// How long Steeple may take to serve the workload's identity after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after Steeple is ready before its idle RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// How long a stream on the floor may take to get the partner bundle once it answers.
const FLOOR_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until a stream on the floor's socket gets `ALL` carrying the partner.org bundle
/// with fingerprint `partner`.
async fn floor_serves(floor: &FloorProcess, partner: u64) -> anyhow::Result<()> {
    let mut fleet = Fleet::new(floor.socket(), 1);
    let stream = fleet.add(1);
    let served = fleet
        .arrivals(stream, partner, true, FLOOR_READY_TIMEOUT)
        .await;
    fleet.close().await;
    served.map(drop)
}

/// SPIRE, Steeple, the floor if asked, and the partner.org bundle currently set.
#[derive(Debug)]
pub struct World {
    // Declared in stop order: each stops before the server it follows.
    floor: Option<FloorProcess>,
    steeple: SteepleProcess,
    spire: Spire,
    _dir: TempDir,
    partner: PartnerBundle,
}

impl World {
    /// Starts SPIRE (logging at INFO, as in production), sets a partner.org bundle,
    /// registers this process's uid federating with it, starts Steeple, and waits until
    /// Steeple serves `ALL` with the partner bundle; then, `with_floor`, starts the floor
    /// on Steeple and waits until it serves the same.
    pub async fn start(with_floor: bool) -> anyhow::Result<Self> {
        let spire = Spire::start(SpireOptions {
            log_level: "INFO".to_owned(),
            ..SpireOptions::default()
        })?;
        let partner = PartnerBundle::set(&spire)?;
        spire.register(&EntrySpec {
            spiffe_id: WORKLOAD_ID.to_owned(),
            selectors: vec![uid_selector()],
            federates_with: vec![PARTNER_TRUST_DOMAIN.to_owned()],
            ..EntrySpec::default()
        })?;
        let dir = tempfile::Builder::new()
            .prefix("steeple-bench-")
            .tempdir_in("/tmp")?;
        let steeple = SteepleProcess::run(&dir.path().join("steeple"), spire.agent_socket(), "")?;
        let partner_id = format!("spiffe://{PARTNER_TRUST_DOMAIN}");
        sds_client::wait_for(
            steeple.sds_socket(),
            &[RESOURCE, &partner_id],
            READY_TIMEOUT,
        )
        .await?;
        let floor = if with_floor {
            let upstream = steeple.sds_socket();
            let floor = FloorProcess::start(dir.path(), upstream, &[RESOURCE]).await?;
            floor_serves(&floor, partner.fingerprint())
                .await
                .with_context(|| {
                    format!(
                        "the floor server did not serve the partner bundle; its logs:\n{}",
                        floor.logs()
                    )
                })?;
            Some(floor)
        } else {
            None
        };
        Ok(Self {
            floor,
            steeple,
            spire,
            _dir: dir,
            partner,
        })
    }

    /// Steeple's RSS once it holds the identity and no SDS stream is open, KiB.
    pub async fn steeple_idle_rss(&self) -> anyhow::Result<u64> {
        tokio::time::sleep(IDLE_SETTLE).await;
        rss_kib(self.steeple.pid())
    }

    /// The SDS socket of `target`.
    pub fn socket(&self, target: Target) -> anyhow::Result<&Path> {
        match target {
            Target::SpireAgent => Ok(self.spire.agent_socket()),
            Target::Steeple => Ok(self.steeple.sds_socket()),
            Target::Floor => Ok(self.floor()?.socket()),
        }
    }

    /// The process serving `target`.
    pub fn pid(&self, target: Target) -> anyhow::Result<u32> {
        match target {
            Target::SpireAgent => self
                .spire
                .agent_pid()
                .ok_or_else(|| anyhow::anyhow!("SPIRE agent is not running")),
            Target::Steeple => Ok(self.steeple.pid()),
            Target::Floor => Ok(self.floor()?.pid()),
        }
    }

    fn floor(&self) -> anyhow::Result<&FloorProcess> {
        self.floor
            .as_ref()
            .context("the floor was not started (World::start without it)")
    }

    /// Fingerprint of the partner.org bundle currently set.
    pub fn partner_fingerprint(&self) -> u64 {
        self.partner.fingerprint()
    }

    /// Sets a new partner.org CA (`spire-server bundle set`) and returns when the command
    /// returned.
    pub fn rotate_partner_bundle(&mut self) -> anyhow::Result<Instant> {
        self.partner.rotate(&self.spire)
    }

    /// Stops and starts SPIRE agent on the same data dir and socket. Steeple reconnects
    /// by itself (with backoff) and keeps serving meanwhile.
    pub fn restart_spire_agent(&mut self) -> anyhow::Result<()> {
        self.spire.stop_agent()?;
        self.spire.start_agent()
    }

    /// Versions and settings, one line.
    pub fn describe(&self, args: &Args) -> String {
        let floor = match self.floor {
            Some(_) => {
                "; floor: tonic 0.14 + hyper + h2 relay of Steeple's responses (this \
                 benchmark's binary, bench profile, glibc malloc, tokio default workers)"
            }
            None => "",
        };
        format!(
            "SPIRE {SPIRE_VERSION} (server + agent, log INFO, agent sync 1 s); Steeple {} \
             release build (log info){floor}; {} streams per HTTP/2 connection; {} rotations \
             per round, figures are their median; client: one tokio runtime, 2 workers",
            steeple_e2e::bench_support::git_describe(),
            args.per_connection,
            args.rotations
        )
    }
}
