//! Part 1: FetchSecrets latency of a resolved envelope. `steeple dev` (release build)
//! resolves one `local` envelope from a file and serves it as a generic secret;
//! closed-loop clients fetch it at each concurrency, then as many open-loop clients as the
//! highest concurrency at fixed aggregate rates; then, optionally, `perf` samples the
//! agent under the highest closed-loop concurrency. With the floor among the targets, each
//! round also runs against the floor relaying that `steeple dev` (right after Steeple's).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use steeple_e2e::SteepleProcess;
use steeple_e2e::process::tail;
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use tempfile::TempDir;

use crate::args::{Args, Server};
use crate::floor::FloorProcess;
use crate::load::LoadSpec;
use crate::profile::{self, Profile};
use crate::rows::{self, MASTER_KEY_ENV};
use crate::stats::Latency;

/// The envelope's logical path, and so its SDS resource name.
pub const LOGICAL_PATH: &str = "bench/api-token";
/// Plaintext size: a typical API token or password.
pub const PLAINTEXT_BYTES: usize = 64;
/// Unmeasured time before each round's window.
const WARMUP: Duration = Duration::from_secs(2);
/// How long `perf` samples the agent.
const PROFILE_FOR: Duration = Duration::from_secs(5);
/// How long the agent may take to serve the envelope after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One round: a server and a concurrency level, closed or open loop.
#[derive(Debug)]
pub struct FetchRound {
    /// The server measured.
    pub server: Server,
    /// Client tasks (concurrent in-flight requests in a closed loop).
    pub concurrency: usize,
    /// Open loop: the aggregate rate offered, req/s; `None` for a closed loop.
    pub offered: Option<usize>,
    /// HTTP/2 connections they shared.
    pub connections: usize,
    /// Request latencies in the window.
    pub latency: Latency,
    /// Completed requests per second in the window.
    pub per_second: f64,
    /// Server CPU per request (Steeple's, or the floor process's).
    pub agent_cpu_per_request: Duration,
    /// Client (this process) CPU per request.
    pub client_cpu_per_request: Duration,
    /// Cores other processes on the machine kept busy meanwhile, on average.
    pub other_cores: f64,
    /// Open loop: p99 of how late the client sent after the scheduled time.
    pub send_lag_p99: Option<Duration>,
}

/// Part 1's results.
#[derive(Debug)]
pub struct FetchResults {
    /// Each concurrency, in order, and within it each server in `--targets` order.
    pub rounds: Vec<FetchRound>,
    /// Length of each measured window.
    pub window: Duration,
    /// Where the agent's CPU went at the highest concurrency, or why it was not profiled.
    pub profile: Option<Result<Profile, String>>,
}

/// Runs part 1.
pub async fn run(args: &Args) -> anyhow::Result<FetchResults> {
    let agent = LocalAgent::start().await?;
    // Declared after the agent, so dropped (stopped) before it.
    let floor = match args.targets.contains(&Server::Floor) {
        true => Some(agent.start_floor().await.context("starting the floor")?),
        false => None,
    };
    let steeple = &agent.steeple;
    let mut rounds = Vec::new();
    let max = args.concurrency.iter().copied().max().unwrap_or(1);
    let open = args.open_rates.iter().map(|&rate| (max, Some(rate)));
    for (concurrency, offered) in args.concurrency.iter().map(|&c| (c, None)).chain(open) {
        for &server in &args.targets {
            let target = match server {
                Server::Steeple => Target::steeple(steeple),
                Server::Floor => Target::floor(floor.as_ref().context("no floor started")?),
            };
            let round = measure(target, args, concurrency, offered).await?;
            eprintln!(
                "bench: fetch {} C={concurrency} offered={offered:?}: p50 {:?} p99 {:?} \
                 max {:?}, {:.0} req/s, other processes {:.2} cores",
                server.name(),
                round.latency.p50,
                round.latency.p99,
                round.latency.max,
                round.per_second,
                round.other_cores
            );
            rounds.push(round);
        }
    }
    // Steeple only: the floor is there to be compared with, not to be improved.
    let profile = match args.profile && args.targets.contains(&Server::Steeple) {
        true => Some(profile_under_load(steeple, args, max).await),
        false => None,
    };
    let secrets = [agent.plaintext.clone(), agent.master.clone().into_bytes()];
    assert_not_in_logs(&secrets, &steeple.logs())?;
    if let Some(floor) = &floor {
        assert_not_in_logs(&secrets, &floor.logs())?;
    }
    Ok(FetchResults {
        rounds,
        window: args.measure,
        profile,
    })
}

/// `steeple dev` serving one `local` envelope.
struct LocalAgent {
    // Declared first: the agent stops before its directory goes.
    steeple: SteepleProcess,
    dir: TempDir,
    plaintext: Vec<u8>,
    master: String,
}

impl LocalAgent {
    /// Seals a fresh canary under a fresh master key, starts the agent on it, and waits
    /// until it serves the plaintext.
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("steeple-bench-env-")
            .tempdir_in("/tmp")?;
        let master = rows::random_master_key()?;
        let plaintext = rows::canary(PLAINTEXT_BYTES)?;
        let envelopes = dir.path().join("envelopes");
        std::fs::create_dir_all(&envelopes)?;
        let row = rows::seal_local(&master, LOGICAL_PATH, "service=api,env=bench", &plaintext)?;
        rows::write_rows(&envelopes.join("rows.json"), &[row])?;
        let config = format!(
            "[envelopes]\nenabled = true\npaths = [\"{}\"]\n\
             local_master_key_env = \"{MASTER_KEY_ENV}\"\n",
            envelopes.display()
        );
        let steeple = SteepleProcess::dev_with(
            &dir.path().join("steeple"),
            &config,
            &[(MASTER_KEY_ENV, master.as_str())],
        )?;
        let served = sds_client::wait_for(steeple.sds_socket(), &[LOGICAL_PATH], READY_TIMEOUT)
            .await
            .with_context(|| format!("steeple logs (tail):\n{}", tail(&steeple.logs(), 20)))?;
        anyhow::ensure!(
            served.first().and_then(sds_client::secret_bytes).as_deref() == Some(&plaintext[..]),
            "the served envelope is not the sealed plaintext"
        );
        Ok(Self {
            steeple,
            dir,
            plaintext,
            master,
        })
    }

    /// Starts the floor in front of the agent, relaying the envelope, and checks that a
    /// FetchSecrets on it returns the plaintext.
    async fn start_floor(&self) -> anyhow::Result<FloorProcess> {
        let upstream = self.steeple.sds_socket();
        let floor = FloorProcess::start(self.dir.path(), upstream, &[LOGICAL_PATH]).await?;
        let mut client = sds_client::connect(floor.socket());
        let served = sds_client::fetch(&mut client, &[LOGICAL_PATH]).await?;
        anyhow::ensure!(
            served.first().and_then(sds_client::secret_bytes).as_deref()
                == Some(&self.plaintext[..]),
            "the floor does not serve the sealed plaintext"
        );
        Ok(floor)
    }
}

/// The server a round loads: its socket, and the process whose CPU is read.
#[derive(Debug, Clone, Copy)]
struct Target<'a> {
    server: Server,
    socket: &'a Path,
    pid: u32,
}

impl<'a> Target<'a> {
    fn steeple(steeple: &'a SteepleProcess) -> Self {
        Self {
            server: Server::Steeple,
            socket: steeple.sds_socket(),
            pid: steeple.pid(),
        }
    }

    fn floor(floor: &'a FloorProcess) -> Self {
        Self {
            server: Server::Floor,
            socket: floor.socket(),
            pid: floor.pid(),
        }
    }
}

fn spec<'a>(target: Target<'a>, args: &Args, concurrency: usize) -> LoadSpec<'a> {
    LoadSpec {
        socket: target.socket,
        resource: LOGICAL_PATH,
        concurrency,
        pace: None,
        per_connection: args.per_connection,
        warmup: WARMUP,
        measure: args.measure,
        agent_pid: target.pid,
    }
}

async fn measure(
    target: Target<'_>,
    args: &Args,
    concurrency: usize,
    offered: Option<usize>,
) -> anyhow::Result<FetchRound> {
    let spec = LoadSpec {
        pace: offered.map(|rate| Duration::from_secs_f64(concurrency as f64 / rate as f64)),
        ..spec(target, args, concurrency)
    };
    let outcome = spec.run().await.with_context(|| {
        let server = target.server.name();
        format!("{concurrency} concurrent FetchSecrets on {server}")
    })?;
    let requests = outcome.latencies.len();
    let per_request = |cpu: Duration| cpu / u32::try_from(requests.max(1)).unwrap_or(u32::MAX);
    let others = outcome
        .machine_cpu
        .saturating_sub(outcome.agent_cpu + outcome.client_cpu);
    let send_lag_p99 = match outcome.lags.is_empty() {
        true => None,
        false => Some(Latency::of(outcome.lags)?.p99),
    };
    Ok(FetchRound {
        server: target.server,
        concurrency,
        offered,
        send_lag_p99,
        other_cores: others.as_secs_f64() / outcome.window.as_secs_f64(),
        connections: spec.connections(),
        per_second: requests as f64 / outcome.window.as_secs_f64(),
        agent_cpu_per_request: per_request(outcome.agent_cpu),
        client_cpu_per_request: per_request(outcome.client_cpu),
        latency: Latency::of(outcome.latencies)?,
    })
}

/// Runs the load once more at `concurrency`, unmeasured, while `perf` samples the agent.
async fn profile_under_load(
    steeple: &SteepleProcess,
    args: &Args,
    concurrency: usize,
) -> Result<Profile, String> {
    let spec = LoadSpec {
        measure: PROFILE_FOR + Duration::from_secs(1),
        ..spec(Target::steeple(steeple), args, concurrency)
    };
    let out = steeple.dir().join("perf.data");
    let recording = tokio::spawn(profile::record(steeple.pid(), WARMUP, PROFILE_FOR, out));
    let load = spec.run().await.map_err(|e| format!("{e:#}"));
    let recorded = recording
        .await
        .map_err(|e| format!("perf task: {e}"))
        .and_then(|r| r.map_err(|e| format!("{e:#}")));
    load?;
    recorded
}
