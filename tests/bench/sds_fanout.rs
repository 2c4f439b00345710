//! Side-by-side SDS benchmark: SPIRE agent's built-in SDS vs Steeple's, on one SPIRE, for
//! N concurrent `StreamSecrets` streams watching `ALL`: time to establish, memory per
//! stream, and how fast a federated-bundle rotation fans out to every stream.
//!
//! `cargo bench -p steeple-e2e --bench sds_fanout [-- --streams 100,1000,10000]`; see
//! `tests/bench/README.md`.

mod args;
mod fleet;
mod report;
mod round;
mod world;

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;
use steeple_e2e::bench_support;

use args::Args;
use report::{Report, Round};
use round::run_round;
use world::World;

/// Set in the re-executed benchmark, which runs with `STEEPLE_BIN` pointing at the
/// release build (the harness reads it; setting it in-process would need `unsafe`).
const CHILD_MARKER: &str = "STEEPLE_BENCH_CHILD";

fn main() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    if std::env::var_os(CHILD_MARKER).is_none() {
        return reexec_with_release_steeple();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = run(&args) => result,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        }
    })
}

/// Builds the release `steeple` (unless `STEEPLE_BIN` names one) and runs this benchmark
/// again with `STEEPLE_BIN` set, and Steeple logging at `info` like SPIRE.
fn reexec_with_release_steeple() -> anyhow::Result<()> {
    let bin = match std::env::var_os("STEEPLE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => bench_support::build_release_steeple()?,
    };
    eprintln!("bench: Steeple binary {}", bin.display());
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(std::env::args_os().skip(1))
        .env(CHILD_MARKER, "1")
        .env("STEEPLE_BIN", &bin);
    if std::env::var_os("STEEPLE_LOG_LEVEL").is_none() {
        command.env("STEEPLE_LOG_LEVEL", "info");
    }
    let status = command.status().context("re-running the benchmark")?;
    anyhow::ensure!(status.success(), "benchmark failed: {status}");
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let nofile = bench_support::raise_nofile_limit()?;
    let (counts, skipped) = args.feasible_counts(nofile)?;
    for reason in &skipped {
        eprintln!("bench: skipping {reason}");
    }
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mut world = World::start().await?;
    let steeple_idle_kib = world.steeple_idle_rss().await?;
    eprintln!(
        "bench: Steeple idle RSS {:.1} MiB",
        steeple_idle_kib as f64 / 1024.0
    );
    let mut rounds = Vec::new();
    for &streams in &counts {
        for &target in &args.targets {
            let round = run_round(&mut world, args, target, streams).await?;
            print_round(&round);
            rounds.push(round);
        }
    }
    let report = Report {
        date,
        machine: bench_support::machine_description(),
        setup: world.describe(args),
        steeple_idle_kib,
        rounds,
        skipped,
    };
    let markdown = report.markdown();
    println!("\n{markdown}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/RESULTS.md");
    std::fs::write(&path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

fn print_round(round: &Round) {
    let fanout: Vec<String> = round
        .rotations
        .iter()
        .map(|r| {
            format!(
                "p50 {:?} p99 {:?} max {:?} last-after-set {:?} cpu agent {:?} client {:?}",
                r.p50, r.p99, r.max, r.last_after_set, r.agent_cpu, r.client_cpu
            )
        })
        .collect();
    eprintln!(
        "bench: {} N={}: established in {:?}, RSS {} → {} KiB ({:.1} KiB/stream); rotations: {}",
        round.target.label(),
        round.streams,
        round.establish,
        round.rss_before_kib,
        round.rss_after_kib,
        round.rss_per_stream_kib(),
        fanout.join("; ")
    );
}

/// `program args…`'s trimmed stdout, or `unknown`.
fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// So `world` can describe the Steeple commit.
pub(crate) fn git_describe() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    command_output("git", &["-C", dir, "describe", "--always", "--dirty"])
}
