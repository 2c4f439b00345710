//! Envelope benchmark, in one run: FetchSecrets latency of a resolved envelope served by
//! Steeple over SDS at 1, 100 and 1000 concurrent requests; cold KMS resolve latency
//! against moto next to a bare KMS `Decrypt`; and how many STS and KMS calls the agent
//! makes per hour as the number of consumers grows.
//!
//! `cargo bench -p steeple-e2e --bench envelopes [-- --parts fetch,resolve,upstream]`; see
//! `tests/bench/README.md`. Results go to `tests/bench/ENVELOPES_RESULTS.md`.

mod args;
mod consumers;
mod fetch;
mod load;
mod perf_report;
mod profile;
mod report;
mod resolve;
mod rows;
mod stats;
mod upstream;

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;
use steeple_e2e::bench_support;

use args::{Args, Part};
use report::Report;

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
/// again with `STEEPLE_BIN` set, and Steeple logging at `info`.
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
    bench_support::raise_nofile_limit()?;
    let mut report = Report {
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: bench_support::machine_description(),
        git_rev: git_describe(),
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

/// The Steeple commit being measured (`-dirty` with uncommitted changes).
fn git_describe() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    command_output("git", &["-C", dir, "describe", "--always", "--dirty"])
}
