//! Roles-per-workload benchmark: W workloads (each its own SPIFFE ID, uid and SPIRE
//! entry) with C consumer processes each, served by Steeple as a node agent with
//! `[[workloads]]` mapping them to an AWS role. Measures the STS calls Steeple makes (one
//! lease per workload and role, so proportional to W and independent of C) and the cached
//! fetch latency of each delivery path: SDS, the container-credentials endpoint, IMDSv2.
//!
//! `cargo bench -p steeple-e2e --bench workload_roles [-- --workloads 10,50 --consumers
//! 1,10]`; see `tests/bench/README.md`. Needs root (the consumers run as other users).

mod args;
#[path = "../cli.rs"]
mod cli;
mod consumers;
mod failures;
mod report;
mod round;
#[path = "../envelopes/stats.rs"]
mod stats;
mod world;

use std::path::PathBuf;

use anyhow::Context as _;
use steeple_e2e::bench_support;

use args::Args;
use report::Report;
use round::{Round, run_round};
use world::World;

fn main() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    bench_support::main_with_release_steeple(|| run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        rustix::process::geteuid().is_root(),
        "the workload-roles benchmark runs its consumers as other users and needs root"
    );
    bench_support::raise_nofile_limit()?;
    let date = bench_support::command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let max_workloads = args.workloads.iter().copied().max().unwrap_or(1);
    let mut world = World::start(max_workloads).await?;
    let (mut rounds, mut failed) = (Vec::new(), Vec::new());
    for &workloads in &args.workloads {
        for &consumers in &args.consumers {
            eprintln!("bench: W={workloads} C={consumers}");
            // A round that fails (its consumers and Steeple already stopped) is reported
            // with why, and the others still run.
            match run_round(&mut world, args, workloads, consumers).await {
                Ok(round) => {
                    print_round(&round);
                    rounds.push(round);
                }
                Err(e) => {
                    let failure = format!("W={workloads} C={consumers}: {e:#}");
                    eprintln!("bench: failed {failure}");
                    failed.push(failure);
                }
            }
        }
    }
    anyhow::ensure!(!rounds.is_empty(), "every round failed: {failed:?}");
    let report = Report {
        date,
        machine: bench_support::machine_description(),
        setup: world.describe(args.session),
        command: args.command_line(),
        session: args.session,
        rate: args.rate,
        rounds,
        failed,
    };
    let markdown = report.markdown();
    println!("\n{markdown}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench");
    let written = [
        ("ROLES_RESULTS.md", markdown),
        (
            "roles_results.json",
            serde_json::to_string_pretty(&report.json())? + "\n",
        ),
    ];
    for (name, text) in written {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

fn print_round(round: &Round) {
    let p99 = |path: &str| {
        round
            .latency
            .get(path)
            .map_or("–".to_owned(), |l| stats::us(l.p99))
    };
    eprintln!(
        "bench: W={} C={}: warm in {:?} ({} STS calls), {} calls in {:?}, {:?} / workload / hour; p99 µs: sds {} container {} imds {}; {} errors",
        round.workloads,
        round.consumers,
        round.warm,
        round.warm_calls,
        round.window_calls,
        round.window,
        round.calls_per_workload_hour(),
        p99("sds"),
        p99("container"),
        p99("imds"),
        round.errors,
    );
    if let Some(kept) = &round.kept {
        eprintln!(
            "bench: W={} C={}: failures; Steeple's audit trail and logs kept in {}",
            round.workloads,
            round.consumers,
            kept.display()
        );
    }
}
