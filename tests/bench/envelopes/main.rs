//! Envelope benchmark, in one run: FetchSecrets latency of a resolved envelope served by
//! Steeple over SDS at 1, 100 and 1000 concurrent requests; cold KMS resolve latency
//! against moto next to a bare KMS `Decrypt`; and how many STS and KMS calls the agent
//! makes per hour as the number of consumers grows.
//!
//! With `--targets steeple,floor`, part 1 also measures the floor of Steeple's stack: a
//! bare tonic/h2 relay of Steeple's response ([`floor`], shared with `sds_fanout`), which
//! this binary runs when re-executed as one.
//!
//! `cargo bench -p steeple-e2e --bench envelopes [-- --parts fetch,resolve,upstream]`; see
//! `tests/bench/README.md`. Results go to `tests/bench/ENVELOPES_RESULTS.md`.

mod args;
mod consumers;
mod fetch;
#[path = "../floor.rs"]
mod floor;
mod load;
mod perf_report;
mod profile;
mod report;
mod resolve;
mod rows;
mod stats;
mod upstream;

use std::path::PathBuf;

use anyhow::Context as _;
use steeple_e2e::bench_support;

use args::{Args, Part};
use report::Report;

fn main() -> anyhow::Result<()> {
    if let Some(served) = floor::run_if_asked() {
        return served;
    }
    let args = Args::parse(std::env::args().skip(1))?;
    bench_support::main_with_release_steeple(|| run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    bench_support::raise_nofile_limit()?;
    let mut report = Report {
        date: bench_support::command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: bench_support::machine_description(),
        git_rev: bench_support::git_describe(),
        command: args.command_line(),
        fetch: None,
        resolve: None,
        upstream: None,
    };
    if args.parts.contains(&Part::Fetch) {
        report.fetch = Some(fetch::run(args).await.context("part 1, FetchSecrets")?);
    }
    if args.parts.contains(&Part::Resolve) {
        report.resolve = Some(resolve::run(args).await.context("part 2, KMS resolve")?);
    }
    if args.parts.contains(&Part::Upstream) {
        report.upstream = Some(upstream::run(args).await.map_err(|e| format!("{e:#}")));
    }
    let markdown = report.markdown();
    println!("\n{markdown}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/ENVELOPES_RESULTS.md");
    std::fs::write(&path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}
