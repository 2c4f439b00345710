//! Vault benchmark, in one run: cold and warm resolve latency of `vault_delegate` and
//! `vault_transit` envelopes against a local OpenBao, next to the bare Vault call; and
//! how many Vault calls the agent makes per hour as the number of SDS consumers grows.
//!
//! `cargo bench -p steeple-e2e --bench vault [-- --parts resolve,calls]`; see
//! `tests/bench/README.md`. Results go to `tests/bench/VAULT_RESULTS.md`.

mod args;
mod audited;
mod calls;
#[path = "../envelopes/consumers.rs"]
mod consumers;
mod http;
mod jwk;
mod report;
mod resolve;
#[path = "../envelopes/stats.rs"]
mod stats;

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
        git_rev: command_output(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
        command: args.command_line(),
        openbao: command_output(
            &steeple_e2e::openbao::openbao_bin()?.display().to_string(),
            &["version"],
        ),
        resolve: None,
        calls: None,
    };
    if args.parts.contains(&Part::Resolve) {
        report.resolve = Some(
            resolve::run(args)
                .await
                .context("part 1, resolve latency")?,
        );
    }
    if args.parts.contains(&Part::Calls) {
        report.calls = Some(calls::run(args).await.context("part 2, Vault calls")?);
    }
    let markdown = report.markdown();
    println!("\n{markdown}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/VAULT_RESULTS.md");
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

/// The machine's 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `len` random printable bytes (hex), a canary no log may contain.
fn canary(len: usize) -> Vec<u8> {
    canary_hex(len.div_ceil(2)).into_bytes()[..len].to_vec()
}

/// `bytes` random bytes as hex.
fn canary_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).unwrap_or_default();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}
