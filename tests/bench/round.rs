//! One round: one agent, N streams — establish them, read the agent's RSS, rotate the
//! partner bundle a few times, close them.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use steeple_e2e::bench_support::{cpu_time, rss_kib};

use crate::args::Args;
use crate::figures::{CpuUsed, Rotation, Target};
use crate::fleet::Fleet;
use crate::report::Round;
use crate::world::World;

/// Pause before measuring an agent's RSS, so closed streams are gone and it is idle.
const SETTLE: Duration = Duration::from_secs(3);
/// Pause after establishing before reading RSS, so the agent is done with the burst.
const AFTER_ESTABLISH: Duration = Duration::from_secs(1);
/// How long after the last arrival CPU use still counts toward a rotation (deferred
/// work such as freeing buffers, or Go's garbage collection).
const CPU_TAIL: Duration = Duration::from_millis(100);
/// Pause between rotations, so each lands in its own SPIRE agent sync.
const BETWEEN_ROTATIONS: Duration = Duration::from_secs(2);

/// How the streams got established.
struct Established {
    fleet: Fleet,
    took: Duration,
    rss_before_kib: u64,
    note: Option<String>,
}

/// One target at one N: open, measure RSS, rotate the partner bundle, close.
pub async fn run_round(
    world: &mut World,
    args: &Args,
    target: Target,
    streams: usize,
) -> anyhow::Result<Round> {
    let label = target.label();
    eprintln!("bench: {label}, {streams} streams");
    let Established {
        mut fleet,
        took,
        rss_before_kib,
        note,
    } = establish(world, args, target, streams).await?;
    tokio::time::sleep(AFTER_ESTABLISH).await;
    let rss_after_kib = rss_kib(world.pid(target)?)?;
    let mut rotations = Vec::new();
    for _ in 0..args.rotations {
        let rotation = rotate(world, &mut fleet, target, streams)
            .await
            .with_context(|| format!("{label}: fanning out a rotation to {streams} streams"))?;
        rotations.push(rotation);
        tokio::time::sleep(BETWEEN_ROTATIONS).await;
    }
    fleet.close().await;
    Ok(Round {
        target,
        streams,
        establish: took,
        establish_note: note,
        rss_before_kib,
        rss_after_kib,
        rotations,
    })
}

/// Sets a new partner bundle and times its arrival on every stream, with the CPU the
/// agent and the client used meanwhile.
async fn rotate(
    world: &mut World,
    fleet: &mut Fleet,
    target: Target,
    streams: usize,
) -> anyhow::Result<Rotation> {
    let (agent, client) = (world.pid(target)?, std::process::id());
    let (agent_before, client_before) = (cpu_time(agent)?, cpu_time(client)?);
    let set_returned = world.rotate_partner_bundle()?;
    let timeout = rotation_timeout(streams);
    let arrivals = fleet
        .arrivals(0..streams, world.partner_fingerprint(), false, timeout)
        .await?;
    tokio::time::sleep(CPU_TAIL).await;
    let cpu = CpuUsed {
        agent: cpu_time(agent)?.saturating_sub(agent_before),
        client: cpu_time(client)?.saturating_sub(client_before),
    };
    Rotation::from_arrivals(&arrivals, set_returned, cpu)
}

/// Opens all streams at once. If SPIRE agent stalls on that burst, restarts it and opens
/// the streams one connection's worth at a time instead, noting why.
async fn establish(
    world: &mut World,
    args: &Args,
    target: Target,
    streams: usize,
) -> anyhow::Result<Established> {
    tokio::time::sleep(SETTLE).await;
    let rss_before_kib = rss_kib(world.pid(target)?)?;
    let mut fleet = Fleet::new(world.socket(target)?, args.per_connection);
    let started = Instant::now();
    let all = fleet.add(streams);
    let burst = fleet
        .arrivals(
            all,
            world.partner_fingerprint(),
            true,
            establish_timeout(streams),
        )
        .await;
    let failure = match burst {
        Ok(firsts) => {
            return Ok(Established {
                fleet,
                took: last_since(&firsts, started),
                rss_before_kib,
                note: None,
            });
        }
        Err(e) if target == Target::SpireAgent => format!("{e:#}"),
        Err(e) => return Err(e.context(format!("{}: establishing", target.label()))),
    };
    eprintln!("bench: SPIRE agent did not establish the burst ({failure}); restarting it");
    fleet.close().await;
    world.restart_spire_agent()?;
    let batched = establish_batched(world, args, target, streams).await?;
    Ok(Established {
        note: Some(format!(
            "opening all {streams} streams at once: {failure}. The agent was restarted and \
             the streams opened {} at a time (each batch once the previous one was \
             answered); the establish time, RSS and fan-out shown are from that run",
            args.per_connection
        )),
        ..batched
    })
}

/// Opens the streams `per_connection` at a time, each batch once the previous one has
/// its first responses.
async fn establish_batched(
    world: &mut World,
    args: &Args,
    target: Target,
    streams: usize,
) -> anyhow::Result<Established> {
    tokio::time::sleep(SETTLE).await;
    let rss_before_kib = rss_kib(world.pid(target)?)?;
    let mut fleet = Fleet::new(world.socket(target)?, args.per_connection);
    let started = Instant::now();
    let mut last = started;
    while fleet.len() < streams {
        let batch = fleet.add(args.per_connection.min(streams - fleet.len()));
        let timeout = establish_timeout(batch.len());
        let firsts = fleet
            .arrivals(batch, world.partner_fingerprint(), true, timeout)
            .await
            .with_context(|| format!("{}: establishing in batches", target.label()))?;
        last = firsts.iter().copied().max().unwrap_or(last);
    }
    Ok(Established {
        fleet,
        took: last.saturating_duration_since(started),
        rss_before_kib,
        note: None,
    })
}

fn last_since(arrivals: &[Instant], started: Instant) -> Duration {
    arrivals.iter().max().map_or(Duration::ZERO, |last| {
        last.saturating_duration_since(started)
    })
}

fn establish_timeout(streams: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(20) * streams as u32
}

fn rotation_timeout(streams: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(5) * streams as u32
}
