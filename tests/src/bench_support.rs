//! What the benchmarks in `tests/bench` need beyond the suites' harness: the release
//! `steeple` binary, a process's resident memory and CPU time, the open-file limit, a
//! clock every process shares, fingerprints of the bundles an SDS response carries, and a
//! one-line description of the machine for the results.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, SpiffeCertValidatorConfig, secret::Type,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use prost::Message as _;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use rustix::time::{ClockId, clock_gettime};

/// Builds `steeple` with `cargo build --release` and returns the binary's path. A
/// benchmark must never measure a debug build.
pub fn build_release_steeple() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "steeple", "--bin", "steeple"])
        .current_dir(root)
        .status()
        .context("running cargo build --release -p steeple")?;
    anyhow::ensure!(
        status.success(),
        "cargo build --release -p steeple failed: {status}"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("steeple"))
}

/// Resident set size of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    proc_status_kib(&format!("/proc/{pid}/status"), "VmRSS:")
        .with_context(|| format!("reading VmRSS of pid {pid}"))
}

/// CPU time all live threads of process `pid` have run so far (the first field of each
/// `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let tasks = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("listing {tasks}"))? {
        let path = task?.path().join("schedstat");
        // A thread that exited since the listing simply no longer counts.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ns = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok());
        total += ns.with_context(|| format!("unexpected {}: {text:?}", path.display()))?;
    }
    Ok(Duration::from_nanos(total))
}

/// `CLOCK_MONOTONIC` as a duration since boot: one clock for the benchmark and the
/// workload processes it starts, so an instant one of them reports can be compared with
/// the benchmark's own.
pub fn monotonic() -> Duration {
    let now = clock_gettime(ClockId::Monotonic);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Fingerprint of the certificates in a PEM text, independent of line endings.
pub fn pem_fingerprint(pem: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for line in pem.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if !line.is_empty() && !line.starts_with(b"-----") {
            hasher.write(line);
        }
    }
    hasher.finish()
}

/// The fingerprint of `trust_domain`'s bundle (name without `spiffe://`) in the SPIFFE
/// certificate validator of the validation context `resource` of `response`, if there.
pub fn validator_bundle_fingerprint(
    response: &DiscoveryResponse,
    resource: &str,
    trust_domain: &str,
) -> Option<u64> {
    let secret = response
        .resources
        .iter()
        .filter_map(|any| Secret::decode(any.value.as_slice()).ok())
        .find(|s| s.name == resource)?;
    let Some(Type::ValidationContext(context)) = secret.r#type else {
        return None;
    };
    let typed = context.custom_validator_config?.typed_config?;
    let config = SpiffeCertValidatorConfig::decode(typed.value.as_slice()).ok()?;
    let bundle = config
        .trust_domains
        .into_iter()
        .find(|td| td.name.trim_start_matches("spiffe://") == trust_domain)?;
    match bundle.trust_bundle?.specifier? {
        Specifier::InlineBytes(pem) => Some(pem_fingerprint(&pem)),
        Specifier::InlineString(pem) => Some(pem_fingerprint(pem.as_bytes())),
        _ => None,
    }
}

/// `MemAvailable` of the machine in KiB.
pub fn mem_available_kib() -> anyhow::Result<u64> {
    proc_status_kib("/proc/meminfo", "MemAvailable:")
}

/// Raises this process's soft open-file limit to its hard limit (children started
/// afterwards inherit it) and returns the new soft limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.maximum != limit.current {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .context("raising RLIMIT_NOFILE to the hard limit")?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// The machine in one line: online CPUs and the CPU model from `/proc/cpuinfo`.
pub fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory = proc_status_kib("/proc/meminfo", "MemTotal:")
        .map(|kib| format!(", {} GiB RAM", kib / (1024 * 1024)))
        .unwrap_or_default();
    format!("{cpus} × {model}{memory}")
}

/// A `Key:   123 kB` value from a `/proc` file.
fn proc_status_kib(path: &str, key: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in {path}"))
}

/// Set in the re-executed benchmark, which runs with `STEEPLE_BIN` pointing at the
/// release build (the harness reads it; setting it in-process would need `unsafe`).
const CHILD_MARKER: &str = "STEEPLE_BENCH_CHILD";

/// A benchmark's `main`: the first run builds the release `steeple` (unless `STEEPLE_BIN`
/// names one) and runs the benchmark binary again with `STEEPLE_BIN` set and Steeple
/// logging at `info`; that second run executes `bench` on a 2-worker runtime (Ctrl-C
/// ends it with an error).
pub fn main_with_release_steeple<F, Fut>(bench: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    if std::env::var_os(CHILD_MARKER).is_none() {
        return reexec_with_release_steeple();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = bench() => result,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        }
    })
}

fn reexec_with_release_steeple() -> anyhow::Result<()> {
    let bin = match std::env::var_os("STEEPLE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_release_steeple()?,
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

/// `program args…`'s trimmed stdout, or `unknown`.
pub fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The Steeple commit being measured (`-dirty` with uncommitted changes).
pub fn git_describe() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    command_output("git", &["-C", dir, "describe", "--always", "--dirty"])
}
