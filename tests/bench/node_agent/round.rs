//! One round: one agent, W workload processes — start them, let them connect, read the
//! agent's RSS, rotate the partner bundle a few times, stop them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use steeple_e2e::bench_support::{cpu_time, rss_kib};

use crate::args::Args;
use crate::figures::{CpuUsed, Rotation, Target, percentile};
use crate::report::{Behind, Establish, NodeRotation, Round};
use crate::workloads::{Want, Workloads};
use crate::world::World;

/// Pause before measuring an agent's RSS, so the last round's workloads are gone.
const SETTLE: Duration = Duration::from_secs(3);
/// Pause after establishing before reading RSS, so the agent is done with the burst.
const AFTER_ESTABLISH: Duration = Duration::from_secs(1);
/// How long after the last arrival CPU use and late responses still count toward a
/// rotation.
const TAIL: Duration = Duration::from_millis(100);
/// Pause between rotations, so each lands in its own SPIRE agent sync.
const BETWEEN_ROTATIONS: Duration = Duration::from_secs(2);

/// One target at W workloads.
pub async fn run_round(
    world: &mut World,
    args: &Args,
    target: Target,
    count: usize,
) -> anyhow::Result<Round> {
    let label = target.label();
    eprintln!("bench: {label}, {count} workload processes");
    let (mut workloads, establish) = match establish(world, target, count, None).await {
        Ok(done) => done,
        Err(e) => {
            let failure = format!("{e:#}");
            eprintln!(
                "bench: {label} did not establish {count} workloads at once ({failure}); restarting SPIRE agent, then {} at a time",
                args.batch
            );
            world.restart_spire_agent()?;
            let (workloads, establish) = establish(world, target, count, Some(args.batch))
                .await
                .with_context(|| format!("{label}: establishing {} at a time", args.batch))?;
            let note = format!(
                "letting all {count} workloads connect at once: {failure}. SPIRE agent was \
                 restarted and the workloads let connect {} at a time (each batch once the \
                 previous one was served); the figures shown are from that run",
                args.batch
            );
            (
                workloads,
                Establish {
                    note: Some(note),
                    ..establish
                },
            )
        }
    };
    tokio::time::sleep(AFTER_ESTABLISH).await;
    let rss_after_kib = rss_kib(world.pid(target)?)?;
    let behind_after_kib = match target {
        Target::Steeple => Some(rss_kib(world.agent_pid()?)?),
        Target::SpireAgent | Target::Floor => None,
    };
    let mut rotations = Vec::new();
    for _ in 0..args.rotations {
        let rotation = rotate(world, &mut workloads, target, count)
            .await
            .with_context(|| format!("{label}: fanning out a rotation to {count} workloads"))?;
        rotations.push(rotation);
        tokio::time::sleep(BETWEEN_ROTATIONS).await;
    }
    workloads.stop().await;
    Ok(Round {
        target,
        workloads: count,
        rss_after_kib,
        behind: establish
            .behind_before_kib
            .zip(behind_after_kib)
            .map(|(before, after)| Behind {
                rss_before_kib: before,
                rss_after_kib: after,
                establish_cpu: establish.behind_cpu,
            }),
        establish,
        rotations,
    })
}

/// Starts the workload processes, lets them connect (all at once, or `batch` at a time)
/// and times until each has all three resources.
async fn establish(
    world: &mut World,
    target: Target,
    count: usize,
    batch: Option<usize>,
) -> anyhow::Result<(Workloads, Establish)> {
    tokio::time::sleep(SETTLE).await;
    let (pid, agent) = (world.pid(target)?, world.agent_pid()?);
    let steeple = target == Target::Steeple;
    let rss_before_kib = rss_kib(pid)?;
    let behind_before_kib = steeple.then(|| rss_kib(agent)).transpose()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_sds-workload"));
    let mut workloads = Workloads::start(bin, world.socket(target)?, count).await?;
    let (cpu_before, behind_before) = (cpu_time(pid)?, cpu_time(agent)?);
    let batch = batch.unwrap_or(count);
    let want = Want::Established(world.partner_fingerprint());
    let mut started = None;
    let mut latencies = Vec::with_capacity(count);
    let mut last = Instant::now();
    for first in (0..count).step_by(batch) {
        let range = first..count.min(first + batch);
        let go = workloads.go(range.clone()).await?;
        started.get_or_insert(go);
        let served = workloads
            .wait(range.clone(), want, establish_timeout(range.len()))
            .await?;
        latencies.extend(served.at.iter().map(|at| at.saturating_duration_since(go)));
        last = served.at.iter().copied().max().unwrap_or(last);
    }
    let started = started.unwrap_or(last);
    latencies.sort_unstable();
    let behind_cpu = cpu_time(agent)?.saturating_sub(behind_before);
    let establish = Establish {
        all: last.saturating_duration_since(started),
        p50: percentile(&latencies, 50)?,
        cpu: cpu_time(pid)?.saturating_sub(cpu_before),
        rss_before_kib,
        behind_before_kib,
        behind_cpu,
        note: None,
    };
    Ok((workloads, establish))
}

/// Sets a new partner bundle and times its arrival on every workload's `ALL` stream,
/// with the CPU the agent(s) and the workloads used meanwhile.
async fn rotate(
    world: &mut World,
    workloads: &mut Workloads,
    target: Target,
    count: usize,
) -> anyhow::Result<NodeRotation> {
    workloads.drain();
    let (pid, agent) = (world.pid(target)?, world.agent_pid()?);
    let (before, behind_before) = (cpu_time(pid)?, cpu_time(agent)?);
    let client_before = client_cpu(workloads)?;
    let set_returned = world.rotate_partner_bundle()?;
    let want = Want::Bundle(world.partner_fingerprint());
    let arrivals = workloads
        .wait(0..count, want, rotation_timeout(count))
        .await?;
    tokio::time::sleep(TAIL).await;
    let cpu = CpuUsed {
        agent: cpu_time(pid)?.saturating_sub(before),
        client: client_cpu(workloads)?.saturating_sub(client_before),
    };
    let behind_cpu = cpu_time(agent)?.saturating_sub(behind_before);
    let other_responses = arrivals.other_responses + workloads.drain();
    Ok(NodeRotation {
        fanout: Rotation::from_arrivals(&arrivals.at, set_returned, cpu)?,
        behind_cpu: (target == Target::Steeple).then_some(behind_cpu),
        other_responses,
    })
}

/// CPU used by the workload processes and this benchmark (the client side).
fn client_cpu(workloads: &Workloads) -> anyhow::Result<Duration> {
    Ok(workloads.cpu_time()? + cpu_time(std::process::id())?)
}

fn establish_timeout(workloads: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(60) * workloads as u32
}

fn rotation_timeout(workloads: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(15) * workloads as u32
}
