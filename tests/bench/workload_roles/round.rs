//! One round at (W, C): a fresh Steeple node agent, C consumer processes for each of W
//! workloads. They warm up (every path served once, which starts each workload's lease),
//! then sample every path's latency. moto's recorder counts the STS calls from the first
//! request until the window's end — a fixed time after every lease started, so each
//! round sees the same refreshes whatever the warm-up took — and Steeple's audit trail
//! times each workload's refreshes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use steeple_e2e::moto::Moto;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::args::Args;
use crate::consumers::Consumers;
use crate::failures;
use crate::stats::Latency;
use crate::world::{NodeAgent, ROLE, World, workloads};

/// moto's recorder name of the exchange.
const STS_OP: &str = "AssumeRoleWithWebIdentity";
/// How long one batch of consumers may take to warm up: a Delegated Identity API lookup
/// per process and one exchange per workload, all at once.
const WARM_TIMEOUT: Duration = Duration::from_secs(60);
/// Least time left for sampling latencies after the warm-up.
const MIN_SAMPLING: Duration = Duration::from_secs(10);

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
    /// How long the calls were counted, from the first request.
    pub window: Duration,
    /// STS calls in the window (the warm-up's included).
    pub window_calls: usize,
    /// Mean time between two successive exchanges of one workload, from the audit trail.
    pub refresh_interval: Option<Duration>,
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
    /// Lease failures Steeple logged (code and message), most frequent first, with counts.
    pub failure_causes: Vec<(String, usize)>,
    /// Where Steeple's audit trail and logs were kept, when exchanges or fetches failed.
    pub kept: Option<PathBuf>,
}

impl Round {
    /// STS calls per workload per hour in steady state: one per refresh interval.
    pub fn calls_per_workload_hour(&self) -> Option<f64> {
        self.refresh_interval.map(|i| 3600.0 / i.as_secs_f64())
    }

    /// The same for all W workloads.
    pub fn calls_per_hour(&self) -> Option<f64> {
        self.calls_per_workload_hour()
            .map(|c| c * self.workloads as f64)
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
    let end = started + args.window;
    let roles = consumers.warm(args.batch, WARM_TIMEOUT).await?;
    let warm = started.elapsed();
    anyhow::ensure!(
        warm + MIN_SAMPLING < args.window,
        "warming {processes} consumers took {warm:?}, leaving under {MIN_SAMPLING:?} of the \
         {:?} window: raise --window",
        args.window
    );
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
    tokio::time::sleep_until(end.into()).await;
    let at_end = sts_sessions(world.moto())?.len();
    let window = started.elapsed();
    let measured = consumers.stop().await?;

    let round_calls = sts_sessions(world.moto())?.len() - start;
    let audited = audited_exchanges(&agent);
    let failure_causes = failures::causes(&agent.steeple.logs());
    let kept = (audited.failed > 0 || measured.errors > 0)
        .then(|| failures::keep(&agent, &format!("W{workload_count}-C{per_workload}")))
        .flatten();
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
        window_calls: at_end - start,
        refresh_interval: audited.refresh_interval(),
        round_calls,
        audited_ok: audited.ok.values().map(Vec::len).sum(),
        audited_failed: audited.failed,
        latency,
        errors: measured.errors,
        first_error: measured.first_error,
        failure_causes,
        kept,
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

/// STS exchanges a round's Steeple audited.
struct Audited {
    /// When each workload's `ok` exchanges happened, oldest first.
    ok: BTreeMap<String, Vec<OffsetDateTime>>,
    /// Exchanges with any other outcome.
    failed: usize,
}

impl Audited {
    /// The mean time between two successive exchanges of one workload.
    fn refresh_interval(&self) -> Option<Duration> {
        let (mut total, mut count) = (0.0, 0u32);
        for times in self.ok.values() {
            for pair in times.windows(2) {
                total += (pair[1] - pair[0]).as_seconds_f64();
                count += 1;
            }
        }
        (count > 0).then(|| Duration::from_secs_f64(total / f64::from(count)))
    }
}

/// The STS exchanges `agent` audited (`exchange` events of the `aws-sts` side).
fn audited_exchanges(agent: &NodeAgent) -> Audited {
    let text = std::fs::read_to_string(&agent.audit).unwrap_or_default();
    let mut audited = Audited {
        ok: BTreeMap::new(),
        failed: 0,
    };
    let events = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["exchange"]
                .as_str()
                .is_some_and(|x| x.starts_with("aws-sts "))
        });
    for event in events {
        let at = event["timestamp"]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        match (event["outcome"] == "ok", at) {
            (true, Some(at)) => {
                let id = event["spiffe_id"].as_str().unwrap_or_default().to_owned();
                audited.ok.entry(id).or_default().push(at);
            }
            _ => audited.failed += 1,
        }
    }
    audited
}
