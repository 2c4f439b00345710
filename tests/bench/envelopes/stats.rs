//! Latency summaries: nearest-rank percentiles over samples.

use std::time::Duration;

/// p50, p99 and max of a set of latencies.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

impl Latency {
    /// The summary of `samples` (at least one).
    pub fn of(mut samples: Vec<Duration>) -> anyhow::Result<Self> {
        anyhow::ensure!(!samples.is_empty(), "no samples to summarize");
        samples.sort_unstable();
        Ok(Self {
            count: samples.len(),
            p50: percentile(&samples, 50),
            p99: percentile(&samples, 99),
            max: percentile(&samples, 100),
        })
    }
}

/// Nearest-rank percentile of non-empty sorted `values`.
fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// `d` in milliseconds, 2 decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// `d` in microseconds, no decimals.
pub fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}
