//! `--guard check|record`: the short regression guard. One round of Steeple alone (N =
//! 1,000 streams, [`ROTATIONS`] rotations), with a synthetic work unit measured in the
//! same run just before and after it, so the figures compared are ratios that do not
//! depend on how fast (or how busy) the machine is: agent CPU per rotation — the least of
//! the round's, since whatever else runs meanwhile only ever adds to it — ÷ the unit's
//! CPU, and RSS per stream ÷ the committed baseline's. `record` writes the baseline, `check` fails when a
//! ratio exceeds the baseline by more than its tolerance. Fan-out p99 (wall clock) is
//! printed beside them but not checked: on a shared 2-core machine it varies by ×2 between
//! rotations of the same build.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use prost::Message as _;
use rustix::time::{ClockId, clock_gettime};
use serde_json::json;

use crate::args::Args;
use crate::figures::{Target, ms};
use crate::round::run_round;
use crate::world::World;

/// Streams in the guard's round.
pub const STREAMS: usize = 1000;
/// Rotations in the guard's round. A single rotation's agent CPU ranged over ×1.9 in four
/// runs of one build on one machine (11.4–20.7 ms at 1,000 streams): one timer or log
/// flush landing in it decides. The least of five does not move with such hiccups.
pub const ROTATIONS: usize = 5;
/// Allowed growth over the baseline before the guard fails. The CPU ratio of one rotation
/// varied by ±12 % between runs of one build beside a `cargo build` (load average 6.5),
/// RSS per stream by ±2 %; undoing issue 16's changes doubles both.
const CPU_TOLERANCE: f64 = 0.5;
const RSS_TOLERANCE: f64 = 0.25;
/// Iterations of the synthetic unit: encode, decode and pass through a socket a response
/// the size of the bench's `ALL` (~3 KB), like the agent's per-stream work.
const UNIT_ITERATIONS: usize = 1000;
const UNIT_PAYLOAD: usize = 3 * 1024;
/// Repetitions of the unit before and after the round; the least counts.
const UNIT_REPEATS: usize = 5;

/// What `--guard` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Compare with the committed baseline.
    Check,
    /// Write the baseline.
    Record,
}

/// The figures the guard compares.
#[derive(Debug, Clone, Copy)]
struct Figures {
    /// Agent CPU per rotation ÷ the unit's CPU time.
    cpu_per_unit: f64,
    /// RSS growth per stream, KiB.
    rss_per_stream_kib: f64,
}

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/sds_guard_baseline.json")
}

/// Runs the guard round and checks or records its figures.
pub async fn run(world: &mut World, args: &Args, mode: Mode) -> anyhow::Result<()> {
    let before = work_unit()?;
    let round = run_round(world, args, Target::Steeple, STREAMS).await?;
    let after = work_unit()?;
    let unit = before.min(after);
    let agent_cpu = round
        .rotations
        .iter()
        .map(|r| r.agent_cpu)
        .min()
        .context("the guard round has no rotation")?;
    let figures = Figures {
        cpu_per_unit: agent_cpu.as_secs_f64() / unit.as_secs_f64(),
        rss_per_stream_kib: round.rss_per_stream_kib(),
    };
    let each: Vec<String> = round.rotations.iter().map(|r| ms(r.agent_cpu)).collect();
    eprintln!(
        "bench guard: unit {} ms CPU (before {}, after {}); agent CPU/rotation {} ms (least of {}) = {:.2} units; \
         RSS {:.1} KiB/stream; fan-out p99 {} ms (median; not checked)",
        ms(unit),
        ms(before),
        ms(after),
        ms(agent_cpu),
        each.join(", "),
        figures.cpu_per_unit,
        figures.rss_per_stream_kib,
        ms(round.median(|r| r.p99))
    );
    match mode {
        Mode::Record => record(figures),
        Mode::Check => check(figures),
    }
}

fn record(figures: Figures) -> anyhow::Result<()> {
    let path = baseline_path();
    let baseline = json!({
        "streams": STREAMS,
        "rotations": ROTATIONS,
        "cpu_per_rotation": "least of the rotations",
        "cpu_per_unit": round2(figures.cpu_per_unit),
        "rss_per_stream_kib": round2(figures.rss_per_stream_kib),
        "cpu_tolerance": CPU_TOLERANCE,
        "rss_tolerance": RSS_TOLERANCE,
        "recorded_at": steeple_e2e::bench_support::git_describe(),
    });
    std::fs::write(&path, format!("{baseline:#}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench guard: wrote {}", path.display());
    Ok(())
}

fn check(figures: Figures) -> anyhow::Result<()> {
    let path = baseline_path();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let baseline: serde_json::Value = serde_json::from_str(&text)?;
    let field = |name: &str| {
        baseline[name]
            .as_f64()
            .with_context(|| format!("{}: no number {name}", path.display()))
    };
    let checks = [
        (
            "agent CPU per rotation / unit",
            figures.cpu_per_unit,
            field("cpu_per_unit")?,
            field("cpu_tolerance")?,
        ),
        (
            "RSS per stream (KiB)",
            figures.rss_per_stream_kib,
            field("rss_per_stream_kib")?,
            field("rss_tolerance")?,
        ),
    ];
    let mut failed = Vec::new();
    for (what, now, base, tolerance) in checks {
        let ratio = now / base;
        let verdict = if ratio > 1.0 + tolerance {
            "REGRESSED"
        } else {
            "ok"
        };
        eprintln!(
            "bench guard: {what}: {now:.2} vs baseline {base:.2} (×{ratio:.2}, limit ×{:.2}) {verdict}",
            1.0 + tolerance
        );
        if ratio > 1.0 + tolerance {
            failed.push(what);
        }
    }
    anyhow::ensure!(
        failed.is_empty(),
        "SDS regression guard failed: {} (baseline {})",
        failed.join(", "),
        path.display()
    );
    Ok(())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The synthetic unit's CPU time (this thread's), the least of a few repetitions: as with
/// the agent's CPU, whatever else runs meanwhile only ever adds to it.
fn work_unit() -> anyhow::Result<Duration> {
    let response = DiscoveryResponse {
        version_info: "1".to_owned(),
        resources: vec![Any {
            type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
                .to_owned(),
            value: vec![0x5a; UNIT_PAYLOAD],
        }],
        nonce: "1".to_owned(),
        ..Default::default()
    };
    let (mut tx, mut rx) = UnixStream::pair()?;
    let mut received = vec![0u8; response.encoded_len()];
    let mut times = Vec::with_capacity(UNIT_REPEATS);
    for _ in 0..UNIT_REPEATS {
        let started = thread_cpu();
        for _ in 0..UNIT_ITERATIONS {
            tx.write_all(&response.encode_to_vec())?;
            rx.read_exact(&mut received)?;
            let decoded = DiscoveryResponse::decode(received.as_slice())?;
            anyhow::ensure!(decoded.resources.len() == 1, "the unit's round trip broke");
        }
        times.push(thread_cpu().saturating_sub(started));
    }
    times
        .into_iter()
        .min()
        .context("the unit ran no repetition")
}

fn thread_cpu() -> Duration {
    let now = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}
