//! One round at (W, C): a fresh Steeple node agent, C consumer processes for each of W
//! workloads. They warm up (every path served once, which starts each workload's lease),
//! then for the window moto's recorder counts the STS calls while the consumers sample
//! every path's latency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use steeple_e2e::moto::Moto;

use crate::args::Args;
use crate::consumers::Consumers;
use crate::stats::Latency;
use crate::world::{NodeAgent, ROLE, World, workloads};

/// moto's recorder name of the exchange.
const STS_OP: &str = "AssumeRoleWithWebIdentity";

/// Everything measured at one (W, C).
#[derive(Debug)]
pub struct Round {
    /// Workloads (W).
    pub workloads: usize,
    /// Consumer processes per workload (C).
    pub consumers: usize,
    /// From telling every consumer to fetch until every one was served on every path.
    pub warm: Duration,
    /// STS calls from the round's start until every consumer was warm.
    pub warm_calls: usize,
    /// Workloads among those calls' session names.
    pub warm_workloads: usize,
    /// How long the calls were counted and latencies sampled.
    pub window: Duration,
    /// STS calls in the window.
    pub window_calls: usize,
    /// STS calls moto saw over the whole round, for [`Round::audited_ok`].
    pub round_calls: usize,
    /// Exchanges Steeple audited with outcome `ok` over the whole round.
    pub audited_ok: usize,
    /// Exchanges Steeple audited with another outcome.
    pub audited_failed: usize,
    /// Latency per delivery path, once warm.
    pub latency: BTreeMap<String, Latency>,
    /// Fetches that failed in the window.
    pub errors: usize,
    /// The first of them.
    pub first_error: Option<String>,
}

impl Round {
    /// STS calls in the window, per hour.
    pub fn calls_per_hour(&self) -> f64 {
        self.window_calls as f64 * 3600.0 / self.window.as_secs_f64()
    }

    /// The same, per workload.
    pub fn calls_per_workload_hour(&self) -> f64 {
        self.calls_per_hour() / self.workloads as f64
    }
}

/// Runs the round at `workload_count` × `per_workload`.
pub async fn run_round(
    world: &mut World,
    args: &Args,
    workload_count: usize,
    per_workload: usize,
) -> anyhow::Result<Round> {
    let agent = world.start_agent(args.session).await?;
    let workloads = workloads(workload_count);
    let processes = workload_count * per_workload;
    let interval = args.interval(processes);
    let start = sts_sessions(world.moto())?.len();
    let mut consumers = Consumers::start(world, &agent, &workloads, per_workload, interval).await?;

    let started = Instant::now();
    let roles = consumers.warm(warm_timeout(processes)).await?;
    let warm = started.elapsed();
    if let Some(other) = roles.iter().find(|r| *r != ROLE) {
        anyhow::bail!("a consumer was given role {other:?}, not {ROLE:?}");
    }
    let sessions = sts_sessions(world.moto())?;
    let at_warm = sessions.len();
    let warm_workloads = workloads
        .iter()
        .filter(|w| sessions[start..].contains(&w.session_name()))
        .count();

    consumers.measure().await?;
    let window_start = Instant::now();
    tokio::time::sleep(args.window).await;
    let at_end = sts_sessions(world.moto())?.len();
    let window = window_start.elapsed();
    let measured = consumers.stop().await?;

    let round_calls = sts_sessions(world.moto())?.len() - start;
    let (audited_ok, audited_failed) = audited_exchanges(&agent);
    let mut latency = BTreeMap::new();
    for (path, samples) in measured.latencies {
        if !samples.is_empty() {
            latency.insert(path, Latency::of(samples)?);
        }
    }
    Ok(Round {
        workloads: workload_count,
        consumers: per_workload,
        warm,
        warm_calls: at_warm - start,
        warm_workloads,
        window,
        window_calls: at_end - at_warm,
        round_calls,
        audited_ok,
        audited_failed,
        latency,
        errors: measured.errors,
        first_error: measured.first_error,
    })
}

/// The `RoleSessionName` of every `AssumeRoleWithWebIdentity` moto served, oldest first.
fn sts_sessions(moto: &Moto) -> anyhow::Result<Vec<String>> {
    Ok(moto
        .requests()?
        .iter()
        .filter(|r| r.operation == STS_OP)
        .map(|r| r.param("RoleSessionName").unwrap_or_default().to_owned())
        .collect())
}

/// STS exchanges `agent` audited: (outcome `ok`, any other outcome).
fn audited_exchanges(agent: &NodeAgent) -> (usize, usize) {
    let text = std::fs::read_to_string(&agent.audit).unwrap_or_default();
    let exchanges: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["exchange"]
                .as_str()
                .is_some_and(|x| x.starts_with("aws-sts "))
        })
        .collect();
    let ok = exchanges.iter().filter(|e| e["outcome"] == "ok").count();
    (ok, exchanges.len() - ok)
}

/// Every consumer's first fetches: a Delegated Identity API lookup per process and one
/// exchange per workload, all at once.
fn warm_timeout(processes: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(100) * processes as u32
}
