//! Where the agent's CPU goes under load: `perf record` (CPU-clock samples with DWARF call
//! graphs) on the agent's pid, then `perf report` twice — self time grouped by area
//! (kernel, libc, each Rust crate), and inclusive time of the agent's own functions, of
//! h2's connection driver and of the kernel's entry points.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;

use crate::perf_report::{areas, inclusive, sample_count};

/// Sampling frequency, Hz.
const FREQUENCY: &str = "999";
/// How many functions are listed.
const TOP_FUNCTIONS: usize = 12;
/// Functions listed with their inclusive time: the agent's own, and h2's server
/// connection driver (frames in and out of the socket).
const LISTED: [&str; 2] = ["steeple::", H2_DRIVER];
/// h2's server connection driver (`poll_accept`, `poll_closed`, nested in each other).
pub const H2_DRIVER: &str = "h2::server::Connection::poll";
/// Kernel functions listed with their inclusive time, and what they stand for.
const KERNEL: [(&str, &str); 9] = [
    ("seq_read", "read() of /proc files"),
    ("do_sys_openat2", "open()"),
    ("do_readlinkat", "readlink()"),
    ("__x64_sys_close", "close()"),
    ("__x64_sys_statx", "statx()"),
    ("unix_stream_recvmsg", "Unix socket reads"),
    ("do_writev", "Unix socket writes (writev)"),
    ("__x64_sys_epoll_wait", "epoll_wait()"),
    ("__x64_sys_futex", "futex() (thread wake-ups)"),
];

/// The agent's CPU profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Samples taken.
    pub samples: u64,
    /// Self time by area (kernel, libc, a Rust crate), largest first, in %.
    pub areas: Vec<(String, f64)>,
    /// Inclusive time of the agent's functions and h2's connection driver, largest first,
    /// in %.
    pub functions: Vec<(String, f64)>,
    /// Inclusive time of kernel entry points (what they stand for, %), largest first.
    pub kernel: Vec<(String, f64)>,
}

/// Waits `delay`, samples process `pid` for `length`, and reads the profile back. The
/// data goes to `out`.
pub async fn record(
    pid: u32,
    delay: Duration,
    length: Duration,
    out: PathBuf,
) -> anyhow::Result<Profile> {
    tokio::time::sleep(delay).await;
    let seconds = length.as_secs_f64().to_string();
    let status = Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            FREQUENCY,
            "--call-graph",
            "dwarf",
        ])
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(&out)
        .args(["--", "sleep", &seconds])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("running perf record (is perf installed?)")?;
    anyhow::ensure!(status.success(), "perf record failed: {status}");
    let flat = report(&out, &["--no-children", "--sort", "dso,sym"]).await?;
    let children = inclusive(&report(&out, &["--children", "--sort", "sym"]).await?);
    let functions = children
        .iter()
        .filter(|(name, _)| LISTED.iter().any(|prefix| name.starts_with(prefix)))
        .take(TOP_FUNCTIONS)
        .cloned()
        .collect();
    let mut kernel: Vec<(String, f64)> = KERNEL
        .iter()
        .filter_map(|(symbol, meaning)| {
            let (_, pct) = children.iter().find(|(name, _)| name == symbol)?;
            Some(((*meaning).to_owned(), *pct))
        })
        .collect();
    kernel.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Profile {
        samples: sample_count(&flat),
        areas: areas(&flat),
        functions,
        kernel,
    })
}

/// `perf report --stdio` of `data` with `extra` options, without call chains.
async fn report(data: &Path, extra: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(data)
        .args(["--stdio", "-g", "none", "--percent-limit", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running perf report")?;
    anyhow::ensure!(
        output.status.success(),
        "perf report failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
