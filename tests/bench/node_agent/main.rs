//! Node-agent benchmark: W workload *processes*, each streaming `default`, `ROOTCA` and
//! `ALL` as Envoy does, served either by SPIRE agent's own SDS (which attests every
//! stream's caller itself) or by Steeple in delegated mode (one `SubscribeToX509SVIDs`
//! per caller process through SPIRE agent's Delegated Identity API): time until every
//! workload has its SVID, memory per workload, and how fast a federated-bundle rotation
//! reaches every `ALL` stream.
//!
//! `cargo bench -p steeple-e2e --bench node_agent [-- --workloads 10,100,1000]`; see
//! `tests/bench/README.md`. Needs root (SPIRE attests the workloads by uid 0).

mod args;
#[path = "../cli.rs"]
mod cli;
#[path = "../figures.rs"]
mod figures;
#[path = "../partner.rs"]
mod partner;
mod report;
mod round;
mod workloads;
mod world;

use std::path::PathBuf;

use anyhow::Context as _;
use steeple_e2e::bench_support;

use args::Args;
use report::{Report, Round};
use round::run_round;
use world::World;

fn main() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    bench_support::main_with_release_steeple(|| run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        rustix::process::geteuid().is_root(),
        "the node-agent benchmark runs its workloads as root, which its SPIRE entry selects"
    );
    let nofile = bench_support::raise_nofile_limit()?;
    let (counts, skipped) = args.feasible_counts(nofile)?;
    for reason in &skipped {
        eprintln!("bench: skipping {reason}");
    }
    let date = bench_support::command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mut world = World::start(counts.iter().copied().max().unwrap_or(1)).await?;
    let steeple_idle_kib = world.steeple_idle_rss().await?;
    eprintln!(
        "bench: Steeple idle RSS {:.1} MiB",
        steeple_idle_kib as f64 / 1024.0
    );
    let mut rounds = Vec::new();
    for &count in &counts {
        for &target in &args.targets {
            let round = run_round(&mut world, args, target, count).await?;
            print_round(&round);
            rounds.push(round);
        }
    }
    let command = std::iter::once("cargo bench -p steeple-e2e --bench node_agent --".to_owned())
        .chain(std::env::args().skip(1).filter(|a| a != "--bench"))
        .collect::<Vec<_>>()
        .join(" ");
    let report = Report {
        date,
        machine: format!(
            "{}; open files {nofile}; kernel {}",
            bench_support::machine_description(),
            bench_support::command_output("uname", &["-r"])
        ),
        setup: world.describe(args.rotations),
        command,
        steeple_idle_kib,
        rounds,
        skipped,
    };
    let markdown = report.markdown();
    println!("\n{markdown}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench");
    let written = [
        ("NODE_AGENT_RESULTS.md", markdown),
        (
            "node_agent_results.json",
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
    eprintln!(
        "bench: {} W={}: all served in {:?} (p50 {:?}), RSS Δ {:.1} KiB/workload (SPIRE agent behind: {:.1}); fan-out p99 {:?}",
        round.target.label(),
        round.workloads,
        round.establish.all,
        round.establish.p50,
        round.rss_per_workload_kib(),
        round.behind_per_workload_kib(),
        round.median(|r| r.fanout.p99),
    );
}
