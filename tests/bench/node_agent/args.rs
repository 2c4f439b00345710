//! Command-line options (after `cargo bench … --`), and which workload counts this
//! machine can take.

use steeple_e2e::bench_support;

use crate::cli;
use crate::figures::Target;

const USAGE: &str = "usage: cargo bench -p steeple-e2e --bench node_agent -- \
    [--workloads 10,100,1000] [--rotations 3] [--batch 100] [--targets spire,steeple]";

/// The servers this benchmark can measure (not the floor: it has no delegated mode).
const TARGETS: [Target; 2] = [Target::SpireAgent, Target::Steeple];
/// Workload counts run when `--workloads` is not given; the last only if it fits.
const DEFAULT_WORKLOADS: [usize; 3] = [10, 100, 1000];
/// File descriptors kept free for the peers, logs and CLI calls.
const FD_MARGIN: u64 = 256;
/// Processes kept free for the peers, CLI calls and the rest of the machine.
const PID_MARGIN: u64 = 512;
/// A rough upper bound of what one workload costs: its process plus both agents, KiB.
const KIB_PER_WORKLOAD_BOUND: u64 = 8 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    /// Workload counts, in order.
    pub workloads: Vec<usize>,
    /// Whether `workloads` came from the command line (so nothing is optional).
    pub explicit_workloads: bool,
    /// Rotations per round; figures are the median over them.
    pub rotations: usize,
    /// Workloads let connect at once when an agent stalled on all of them at once.
    pub batch: usize,
    /// The agents to measure, in order.
    pub targets: Vec<Target>,
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut parsed = Self {
            workloads: DEFAULT_WORKLOADS.to_vec(),
            explicit_workloads: false,
            rotations: 3,
            batch: 100,
            targets: TARGETS.to_vec(),
        };
        for (flag, value) in cli::flag_values(args, USAGE)? {
            match flag.as_str() {
                "--workloads" => {
                    parsed.workloads = cli::positives(&flag, &value, USAGE)?;
                    parsed.explicit_workloads = true;
                }
                "--rotations" => parsed.rotations = cli::positive(&flag, &value, USAGE)?,
                "--batch" => parsed.batch = cli::positive(&flag, &value, USAGE)?,
                "--targets" => parsed.targets = Target::list(&value, &TARGETS, USAGE)?,
                _ => anyhow::bail!("unknown argument {flag}\n{USAGE}"),
            }
        }
        Ok(parsed)
    }

    /// The workload counts this machine can take given the open-file limit `nofile`,
    /// the processes it may still start and the memory available, and a reason for
    /// each left out. By default only the largest is optional; a count asked for
    /// explicitly is left out only if it cannot work.
    pub fn feasible_counts(&self, nofile: u64) -> anyhow::Result<(Vec<usize>, Vec<String>)> {
        let available_kib = bench_support::mem_available_kib()?;
        let free_pids = free_pids();
        let mut run = Vec::new();
        let mut skipped = Vec::new();
        for (i, &w) in self.workloads.iter().enumerate() {
            let optional = !self.explicit_workloads && i + 1 == self.workloads.len();
            // The benchmark holds each workload's stdin and stdout; the agent under test
            // one connection (Steeple also a pidfd) per workload.
            let fds = 2 * w as u64 + FD_MARGIN;
            let memory = w as u64 * KIB_PER_WORKLOAD_BOUND;
            if fds > nofile {
                skipped.push(format!(
                    "W={w}: needs about {fds} open files, the limit is {nofile}"
                ));
            } else if w as u64 + PID_MARGIN > free_pids {
                skipped.push(format!(
                    "W={w}: needs {w} processes, only {free_pids} more may be started"
                ));
            } else if optional && memory > available_kib / 2 {
                skipped.push(format!(
                    "W={w}: may need {} MiB, only {} MiB available",
                    memory / 1024,
                    available_kib / 1024
                ));
            } else {
                run.push(w);
            }
        }
        Ok((run, skipped))
    }
}

/// How many more processes this user may start: the lesser of `RLIMIT_NPROC` and the
/// kernel's pid space, minus the tasks running now.
fn free_pids() -> u64 {
    use rustix::process::{Resource, getrlimit};
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let pid_max = read("/proc/sys/kernel/pid_max").unwrap_or(32_768);
    let nproc = getrlimit(Resource::Nproc).current.unwrap_or(u64::MAX);
    // The fourth field of /proc/loadavg is "running/total" scheduling entities.
    let running = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(0u64);
    pid_max.min(nproc).saturating_sub(running)
}
