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

use anyhow::Context as _;
use steeple_e2e::bench_support;

use args::{Args, Part};
use report::Report;

fn main() -> anyhow::Result<()> {
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
        openbao: bench_support::command_output(
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
