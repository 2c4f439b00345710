//! Command-line options (after `cargo bench … --`).

use std::time::Duration;

use crate::cli;

const USAGE: &str = "usage: cargo bench -p steeple-e2e --bench workload_roles -- \
    [--workloads 10,50] [--consumers 1,10] [--window 86] [--session 15] [--rate 10] [--batch 100]";

/// The most workloads a run may have: their uids are `BASE_UID + i`.
pub const MAX_WORKLOADS: usize = 10_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    /// Workload counts (W), in order.
    pub workloads: Vec<usize>,
    /// Consumer processes per workload (C), in order; one round per (W, C).
    pub consumers: Vec<usize>,
    /// How long each round counts STS calls, from its first request (latencies are
    /// sampled from the end of the warm-up until then).
    pub window: Duration,
    /// `[aws] session_duration`: short, so a window sees several refreshes.
    pub session: Duration,
    /// Latency samples per second per delivery path, all consumers together (each
    /// consumer samples every path once per W·C / rate seconds).
    pub rate: usize,
    /// Consumer processes told to warm up at once.
    pub batch: usize,
    raw: Vec<String>,
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut parsed = Self {
            workloads: vec![10, 50],
            consumers: vec![1, 10],
            window: Duration::from_secs(86),
            session: Duration::from_secs(15),
            rate: 10,
            batch: 100,
            raw: Vec::new(),
        };
        for (flag, value) in cli::flag_values(args, USAGE)? {
            parsed.raw.push(format!("{flag} {value}"));
            let seconds = || -> anyhow::Result<Duration> {
                Ok(Duration::from_secs(
                    cli::positive(&flag, &value, USAGE)? as u64
                ))
            };
            match flag.as_str() {
                "--workloads" => parsed.workloads = cli::positives(&flag, &value, USAGE)?,
                "--consumers" => parsed.consumers = cli::positives(&flag, &value, USAGE)?,
                "--window" => parsed.window = seconds()?,
                "--session" => parsed.session = seconds()?,
                "--rate" => parsed.rate = cli::positive(&flag, &value, USAGE)?,
                "--batch" => parsed.batch = cli::positive(&flag, &value, USAGE)?,
                _ => anyhow::bail!("unknown argument {flag}\n{USAGE}"),
            }
        }
        anyhow::ensure!(
            parsed.workloads.iter().all(|w| *w <= MAX_WORKLOADS),
            "--workloads: at most {MAX_WORKLOADS}\n{USAGE}"
        );
        // Steeple's own bounds (`aws.session_duration`).
        anyhow::ensure!(
            (10..=43_200).contains(&parsed.session.as_secs()),
            "--session: between 10 and 43200 seconds\n{USAGE}"
        );
        Ok(parsed)
    }

    /// How often each of `processes` consumers samples every path.
    pub fn interval(&self, processes: usize) -> Duration {
        Duration::from_secs_f64(processes as f64 / self.rate as f64)
    }

    /// The command that reproduces this run.
    pub fn command_line(&self) -> String {
        let mut line = "cargo bench -p steeple-e2e --bench workload_roles".to_owned();
        if !self.raw.is_empty() {
            line.push_str(" -- ");
            line.push_str(&self.raw.join(" "));
        }
        line
    }
}
