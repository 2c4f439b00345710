//! Side-by-side SDS benchmark: SPIRE agent's built-in SDS vs Steeple's, on one SPIRE, for
//! N concurrent `StreamSecrets` streams watching `ALL`: time to establish, memory per
//! stream, and how fast a federated-bundle rotation fans out to every stream. With
//! `--targets …,floor` also the floor of Steeple's stack: a bare tonic/h2 relay of
//! Steeple's responses ([`floor`]), which this binary runs when re-executed as one.
//!
//! `cargo bench -p steeple-e2e --bench sds_fanout [-- --streams 100,1000,10000]`; see
//! `tests/bench/README.md`.

mod args;
mod cli;
mod figures;
mod fleet;
mod floor;
mod guard;
mod partner;
mod report;
mod round;
mod world;

use std::path::PathBuf;

use anyhow::Context as _;
use steeple_e2e::bench_support;

use args::Args;
use figures::Target;
use report::{Report, Round};
use round::run_round;
use world::World;

fn main() -> anyhow::Result<()> {
    if let Some(served) = floor::run_if_asked() {
        return served;
    }
    let args = Args::parse(std::env::args().skip(1))?;
    bench_support::main_with_release_steeple(|| run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let nofile = bench_support::raise_nofile_limit()?;
    let (counts, skipped) = args.feasible_counts(nofile)?;
    for reason in &skipped {
        eprintln!("bench: skipping {reason}");
    }
    let date = bench_support::command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mut world = World::start(args.targets.contains(&Target::Floor)).await?;
    if let Some(mode) = args.guard {
        return guard::run(&mut world, args, mode).await;
    }
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
    let path = path.with_file_name("sds_fanout_results.json");
    let json = serde_json::to_string_pretty(&report.json())?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
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
