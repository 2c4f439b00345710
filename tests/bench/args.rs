//! Command-line options (after `cargo bench … --`), parsed by hand, and which stream
//! counts this machine can take.

use steeple_e2e::bench_support;

use crate::cli;
use crate::figures::Target;
use crate::guard;

const USAGE: &str = "usage: cargo bench -p steeple-e2e --bench sds_fanout -- \
    [--streams 100,1000,10000] [--rotations 3] [--per-connection 100] \
    [--targets spire,steeple,floor] | --guard check|record";

/// The servers `--targets` may name.
const TARGETS: [Target; 3] = [Target::SpireAgent, Target::Steeple, Target::Floor];
/// Stream counts run when `--streams` is not given; the last only if it fits.
const DEFAULT_STREAMS: [usize; 3] = [100, 1000, 10_000];
/// File descriptors kept free for the peers, logs and CLI calls.
const FD_MARGIN: u64 = 256;
/// A rough upper bound of what one stream costs both sides together, in KiB.
const KIB_PER_STREAM_BOUND: u64 = 200;

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    /// Stream counts, in order.
    pub streams: Vec<usize>,
    /// Whether `streams` came from the command line (so nothing is optional).
    pub explicit_streams: bool,
    /// Rotations per round; figures are the median over them.
    pub rotations: usize,
    /// Streams per HTTP/2 connection.
    pub per_connection: usize,
    /// The agents to measure, in order.
    pub targets: Vec<Target>,
    /// `--guard`: only the regression guard's round (see [`guard`]).
    pub guard: Option<guard::Mode>,
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut parsed = Self {
            streams: DEFAULT_STREAMS.to_vec(),
            explicit_streams: false,
            rotations: 3,
            per_connection: 100,
            targets: vec![Target::SpireAgent, Target::Steeple],
            guard: None,
        };
        for (flag, value) in cli::flag_values(args, USAGE)? {
            match flag.as_str() {
                "--streams" => {
                    parsed.streams = cli::positives(&flag, &value, USAGE)?;
                    parsed.explicit_streams = true;
                }
                "--rotations" => parsed.rotations = cli::positive(&flag, &value, USAGE)?,
                "--per-connection" => parsed.per_connection = cli::positive(&flag, &value, USAGE)?,
                "--targets" => parsed.targets = Target::list(&value, &TARGETS, USAGE)?,
                "--guard" => {
                    parsed.guard = Some(match value.as_str() {
                        "check" => guard::Mode::Check,
                        "record" => guard::Mode::Record,
                        _ => anyhow::bail!("--guard takes check or record\n{USAGE}"),
                    });
                    parsed.streams = vec![guard::STREAMS];
                    parsed.explicit_streams = true;
                    parsed.rotations = guard::ROTATIONS;
                    parsed.targets = vec![Target::Steeple];
                }
                _ => anyhow::bail!("unknown argument {flag}\n{USAGE}"),
            }
        }
        Ok(parsed)
    }

    /// The stream counts this machine can take given the open-file limit `nofile` and
    /// the memory available, and a reason for each left out. By default only the
    /// largest is optional; a count asked for explicitly is left out only if it cannot
    /// work.
    pub fn feasible_counts(&self, nofile: u64) -> anyhow::Result<(Vec<usize>, Vec<String>)> {
        let available_kib = bench_support::mem_available_kib()?;
        let mut run = Vec::new();
        let mut skipped = Vec::new();
        for (i, &n) in self.streams.iter().enumerate() {
            let optional = !self.explicit_streams && i + 1 == self.streams.len();
            let fds = n.div_ceil(self.per_connection) as u64 + FD_MARGIN;
            let memory = n as u64 * KIB_PER_STREAM_BOUND;
            if fds > nofile {
                skipped.push(format!(
                    "N={n}: needs about {fds} open files, the limit is {nofile}"
                ));
            } else if optional && memory > available_kib / 2 {
                skipped.push(format!(
                    "N={n}: may need {} MiB, only {} MiB available",
                    memory / 1024,
                    available_kib / 1024
                ));
            } else {
                run.push(n);
            }
        }
        Ok((run, skipped))
    }
}
