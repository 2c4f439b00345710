//! The Markdown report (STS calls per round, the ratios that must hold, latency per
//! delivery path) and the same as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::round::Round;
use crate::stats::ms;

/// Where on average in a session Steeple refreshes its credentials: at a random point
/// between 60 % and 75 % of it (the agent's `exchange::REFRESH_WINDOW`).
const REFRESH_FRACTION: f64 = 0.675;
/// The delivery paths, as the consumers name them, and their column titles.
const PATHS: [(&str, &str); 4] = [
    ("sds", "SDS FetchSecrets"),
    ("container", "container GET"),
    ("imds", "IMDS token + GET"),
    ("imds_get", "IMDS GET alone"),
];

/// The whole run, ready to print.
#[derive(Debug)]
pub struct Report {
    /// When the run started (UTC).
    pub date: String,
    /// The machine, one line.
    pub machine: String,
    /// Software and settings, one line.
    pub setup: String,
    /// The exact command.
    pub command: String,
    /// `[aws] session_duration`.
    pub session: Duration,
    /// Latency samples per second per path, all consumers together.
    pub rate: usize,
    /// Every round that completed, in the order run.
    pub rounds: Vec<Round>,
    /// The rounds that failed, each with why.
    pub failed: Vec<String>,
}

impl Report {
    /// Calls per workload per hour the refresh window predicts: one exchange every
    /// [`REFRESH_FRACTION`] of the session on average.
    fn expected_per_workload_hour(&self) -> f64 {
        3600.0 / (self.session.as_secs_f64() * REFRESH_FRACTION)
    }

    /// `per_hour` at the session length measured, scaled to 1 h sessions (the default).
    fn at_one_hour_sessions(&self, per_hour: f64) -> f64 {
        per_hour * self.session.as_secs_f64() / 3600.0
    }

    /// The Markdown document.
    pub fn markdown(&self) -> String {
        let mut out =
            String::from("# Roles per workload: upstream STS calls and cached fetches\n\n");
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(out, "- Setup: {}", self.setup);
        let _ = writeln!(out, "- Command: `{}`\n", self.command);
        out.push_str(&self.calls_table());
        out.push('\n');
        out.push_str(&self.ratios());
        out.push('\n');
        out.push_str(&self.latency_table());
        for failed in &self.failed {
            let _ = writeln!(out, "\nFailed round: {failed}");
        }
        out.push_str(
            "\nLatency is wall clock on a shared 2-core machine (SPIRE, moto, Steeple, every \
             consumer process and other builds on the same cores): read it as an order of \
             magnitude, not a figure to compare run to run. The call counts do not depend on \
             the machine.\n",
        );
        out
    }

    fn calls_table(&self) -> String {
        let mut out = format!(
            "STS `AssumeRoleWithWebIdentity` calls moto recorded from each round's first \
             request until the window's end, with `session_duration = \"{}s\"`; calls per \
             hour from the mean time between one workload's audited exchanges (Steeple \
             refreshes at 60–75 % of a session: {:.0} per workload per hour expected):\n\n\
             | W | C | consumer processes | warm-up (s) | calls in warm-up (workloads) \
             | window (s) | calls in window | calls / workload in window | refresh interval (s) \
             | calls / hour | calls / workload / hour | same at 1 h sessions \
             | round: moto / Steeple audited ok (failed) | fetch errors |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.session.as_secs(),
            self.expected_per_workload_hour()
        );
        let mut errors = Vec::new();
        for r in &self.rounds {
            let error = match &r.first_error {
                Some(first) => {
                    errors.push(format!("W={} C={}: {first}", r.workloads, r.consumers));
                    format!("{} [{}]", r.errors, errors.len())
                }
                None => r.errors.to_string(),
            };
            let figure = |v: Option<f64>, decimals: usize| {
                v.map_or("–".to_owned(), |v| format!("{v:.decimals$}"))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} ({}) | {:.1} | {} | {:.2} | {} | {} | {} | {} | {} / {} ({}) | {error} |",
                r.workloads,
                r.consumers,
                r.workloads * r.consumers,
                r.warm.as_secs_f64(),
                r.warm_calls,
                r.warm_workloads,
                r.window.as_secs_f64(),
                r.window_calls,
                r.window_calls as f64 / r.workloads as f64,
                figure(r.refresh_interval.map(|i| i.as_secs_f64()), 2),
                figure(r.calls_per_hour(), 0),
                figure(r.calls_per_workload_hour(), 1),
                figure(
                    r.calls_per_workload_hour()
                        .map(|c| self.at_one_hour_sessions(c)),
                    2
                ),
                r.round_calls,
                r.audited_ok,
                r.audited_failed,
            );
        }
        for (i, error) in errors.iter().enumerate() {
            let _ = writeln!(out, "\n[{}] first error: {error}", i + 1);
        }
        for r in self.rounds.iter().filter(|r| !r.failure_causes.is_empty()) {
            let causes: Vec<String> = r
                .failure_causes
                .iter()
                .map(|(cause, count)| format!("`{cause}` × {count}"))
                .collect();
            let _ = writeln!(
                out,
                "\nW={} C={}: lease failures Steeple logged (first of each repeat): {}",
                r.workloads,
                r.consumers,
                causes.join("; ")
            );
        }
        out
    }

    fn ratios(&self) -> String {
        let mut out = String::from(
            "Independent of C (largest C over the smallest, same W: 1 expected, C if each \
             consumer exchanged) and proportional to W (largest W over the smallest, same C: \
             the W ratio expected):\n\n\
             | compared | calls in window | calls / hour | expected | calls in warm-up |\n\
             |---|---:|---:|---:|---:|\n",
        );
        let pairs = self
            .consumer_pairs()
            .map(|(a, b)| {
                let label = format!("W={}: C={} / C={}", a.workloads, b.consumers, a.consumers);
                (label, a, b, 1.0)
            })
            .chain(self.workload_pairs().map(|(a, b)| {
                let label = format!("C={}: W={} / W={}", a.consumers, b.workloads, a.workloads);
                (label, a, b, b.workloads as f64 / a.workloads as f64)
            }));
        for (label, a, b, expected) in pairs {
            let _ = writeln!(
                out,
                "| {label} | {:.2} | {} | {expected:.2} | {:.2} |",
                b.window_calls as f64 / a.window_calls as f64,
                ratio(a, b).map_or("–".to_owned(), |r| format!("{r:.2}")),
                b.warm_calls as f64 / a.warm_calls as f64,
            );
        }
        out
    }

    fn latency_table(&self) -> String {
        let mut out = String::from(
            "Cached fetch latency per delivery path once warm, all consumers of a round \
             together (ms; each HTTP request on a fresh connection, SDS on the consumer's \
             kept connection):\n\n| W | C |",
        );
        for (_, title) in PATHS {
            let _ = write!(out, " {title}: samples, p50, p99 |");
        }
        out.push_str("\n|---:|---:|");
        out.push_str(&"---:|".repeat(PATHS.len()));
        out.push('\n');
        for r in &self.rounds {
            let _ = write!(out, "| {} | {} |", r.workloads, r.consumers);
            for (path, _) in PATHS {
                match r.latency.get(path) {
                    Some(l) => {
                        let _ = write!(out, " {}, {}, {} |", l.count, ms(l.p50), ms(l.p99));
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// The same figures as JSON.
    pub fn json(&self) -> Value {
        let rounds: Vec<Value> = self
            .rounds
            .iter()
            .map(|r| {
                let latency: serde_json::Map<String, Value> = r
                    .latency
                    .iter()
                    .map(|(path, l)| {
                        let figures = json!({
                            "samples": l.count, "p50_ms": msf(l.p50),
                            "p99_ms": msf(l.p99), "max_ms": msf(l.max),
                        });
                        (path.clone(), figures)
                    })
                    .collect();
                json!({
                    "workloads": r.workloads,
                    "consumers_per_workload": r.consumers,
                    "warm_s": r.warm.as_secs_f64(),
                    "warm_calls": r.warm_calls,
                    "warm_workloads_exchanged": r.warm_workloads,
                    "window_s": r.window.as_secs_f64(),
                    "window_calls": r.window_calls,
                    "refresh_interval_s": r.refresh_interval.map(|i| i.as_secs_f64()),
                    "calls_per_hour": r.calls_per_hour(),
                    "calls_per_workload_hour": r.calls_per_workload_hour(),
                    "calls_per_workload_hour_at_1h_sessions":
                        r.calls_per_workload_hour().map(|c| self.at_one_hour_sessions(c)),
                    "round_calls_moto": r.round_calls,
                    "round_exchanges_audited_ok": r.audited_ok,
                    "round_exchanges_audited_failed": r.audited_failed,
                    "fetch_errors": r.errors,
                    "first_error": r.first_error,
                    "lease_failures_logged": r.failure_causes.iter()
                        .map(|(cause, count)| json!({"cause": cause, "count": count}))
                        .collect::<Vec<_>>(),
                    "latency": latency,
                })
            })
            .collect();
        let calls = |a: &Round, b: &Round| b.window_calls as f64 / a.window_calls as f64;
        let by_consumers: Vec<Value> = self
            .consumer_pairs()
            .map(|(a, b)| json!({"workloads": a.workloads, "consumers": [a.consumers, b.consumers], "window_calls_ratio": calls(a, b), "calls_per_hour_ratio": ratio(a, b)}))
            .collect();
        let by_workloads: Vec<Value> = self
            .workload_pairs()
            .map(|(a, b)| json!({"consumers": a.consumers, "workloads": [a.workloads, b.workloads], "window_calls_ratio": calls(a, b), "calls_per_hour_ratio": ratio(a, b)}))
            .collect();
        json!({
            "date": self.date,
            "machine": self.machine,
            "setup": self.setup,
            "command": self.command,
            "session_duration_s": self.session.as_secs(),
            "latency_samples_per_second_per_path": self.rate,
            "expected_calls_per_workload_hour": self.expected_per_workload_hour(),
            "rounds": rounds,
            "ratios_largest_c_over_smallest": by_consumers,
            "ratios_largest_w_over_smallest": by_workloads,
            "failed_rounds": self.failed,
        })
    }

    /// Per W, (smallest C, largest C) when there are two.
    fn consumer_pairs(&self) -> impl Iterator<Item = (&Round, &Round)> {
        self.extremes(|r| r.workloads, |r| r.consumers)
    }

    /// Per C, (smallest W, largest W) when there are two.
    fn workload_pairs(&self) -> impl Iterator<Item = (&Round, &Round)> {
        self.extremes(|r| r.consumers, |r| r.workloads)
    }

    /// For each value of `fixed` (in the order first run), the rounds with the smallest
    /// and the largest `varied`, if they differ.
    fn extremes(
        &self,
        fixed: impl Fn(&Round) -> usize,
        varied: impl Fn(&Round) -> usize,
    ) -> impl Iterator<Item = (&Round, &Round)> {
        let mut groups: Vec<usize> = Vec::new();
        for r in &self.rounds {
            if !groups.contains(&fixed(r)) {
                groups.push(fixed(r));
            }
        }
        let pairs: Vec<(&Round, &Round)> = groups
            .into_iter()
            .filter_map(|group| {
                let same = || self.rounds.iter().filter(|r| fixed(r) == group);
                let low = same().min_by_key(|r| varied(r))?;
                let high = same().max_by_key(|r| varied(r))?;
                (varied(low) != varied(high)).then_some((low, high))
            })
            .collect();
        pairs.into_iter()
    }
}

/// `b`'s calls per hour over `a`'s.
fn ratio(a: &Round, b: &Round) -> Option<f64> {
    Some(b.calls_per_hour()? / a.calls_per_hour()?)
}

/// `d` in milliseconds, 3 decimals, as a number.
fn msf(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
