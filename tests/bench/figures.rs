//! What the SDS benchmarks share: the servers compared, one bundle rotation's fan-out
//! figures, percentiles, and how figures print.

use std::time::{Duration, Instant};

/// What a benchmark compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// SPIRE agent's built-in SDS, on its Workload API socket.
    SpireAgent,
    /// Steeple's SDS socket.
    Steeple,
    /// The least an SDS server on Steeple's stack can do: a tonic/h2 relay of Steeple's
    /// responses (`sds_fanout` only; see its `floor` module).
    #[allow(
        dead_code,
        reason = "node_agent, which shares this file, never measures the floor"
    )]
    Floor,
}

impl Target {
    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::SpireAgent => "SPIRE agent",
            Self::Steeple => "Steeple",
            Self::Floor => "floor (tonic/h2 relay)",
        }
    }

    /// The name `--targets` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::SpireAgent => "spire",
            Self::Steeple => "steeple",
            Self::Floor => "floor",
        }
    }

    /// Comma-separated targets (`--targets`), each one of `accepted` by [`Target::name`].
    pub fn list(value: &str, accepted: &[Self], usage: &str) -> anyhow::Result<Vec<Self>> {
        value
            .split(',')
            .map(|name| {
                let name = name.trim();
                accepted
                    .iter()
                    .copied()
                    .find(|target| target.name() == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = accepted.iter().map(|t| t.name()).collect();
                        anyhow::anyhow!(
                            "--targets: {name:?} is not one of {}\n{usage}",
                            names.join(", ")
                        )
                    })
            })
            .collect()
    }
}

/// One rotation as seen by every stream of one target.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// Median over streams of (receive time − first stream's receive time).
    pub p50: Duration,
    /// 99th percentile of the same.
    pub p99: Duration,
    /// The last stream's.
    pub max: Duration,
    /// From `bundle set` returning to the last stream receiving the bundle.
    pub last_after_set: Duration,
    /// CPU the agent used from just before `bundle set` until shortly after the last
    /// stream received the bundle.
    pub agent_cpu: Duration,
    /// CPU the benchmark's own client used in the same window.
    pub client_cpu: Duration,
}

/// CPU used by the agent and by the client during one rotation.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsed {
    /// The agent under test.
    pub agent: Duration,
    /// This process (the streams' client side).
    pub client: Duration,
}

impl Rotation {
    /// Figures from each stream's receive instant and when `bundle set` returned.
    pub fn from_arrivals(
        arrivals: &[Instant],
        set_returned: Instant,
        cpu: CpuUsed,
    ) -> anyhow::Result<Self> {
        let first = arrivals.iter().min().copied().unwrap_or(set_returned);
        let mut spread: Vec<Duration> = arrivals.iter().map(|t| *t - first).collect();
        spread.sort_unstable();
        let last = arrivals.iter().max().copied().unwrap_or(set_returned);
        Ok(Self {
            p50: percentile(&spread, 50)?,
            p99: percentile(&spread, 99)?,
            max: percentile(&spread, 100)?,
            last_after_set: last.saturating_duration_since(set_returned),
            agent_cpu: cpu.agent,
            client_cpu: cpu.client,
        })
    }
}

/// Nearest-rank percentile of sorted `values`.
pub fn percentile(sorted: &[Duration], pct: usize) -> anyhow::Result<Duration> {
    anyhow::ensure!(!sorted.is_empty(), "no arrivals to take a percentile of");
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    Ok(sorted[rank.min(sorted.len()) - 1])
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".to_owned()
    }
}

pub fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}
