//! Figures per round, the Markdown report (tables, Steeple/SPIRE ratios, targets with
//! ✔/✘) and the same as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::figures::{Rotation, Target, mark, mib, ms, ratio};

/// How the workloads got their SVIDs.
#[derive(Debug, Clone)]
pub struct Establish {
    /// From letting the first workload connect until every workload had all three
    /// resources.
    pub all: Duration,
    /// Median over workloads of the same, each from when it was let connect.
    pub p50: Duration,
    /// CPU the agent under test used meanwhile.
    pub cpu: Duration,
    /// Agent RSS before the workloads started, KiB.
    pub rss_before_kib: u64,
    /// SPIRE agent's RSS before, when Steeple is measured, KiB.
    pub behind_before_kib: Option<u64>,
    /// CPU SPIRE agent used meanwhile (when Steeple is measured, its subscriptions).
    pub behind_cpu: Duration,
    /// Why the workloads could not connect all at once, and how they did instead.
    pub note: Option<String>,
}

/// What SPIRE agent spent behind Steeple in a Steeple round (the Delegated Identity
/// API's subscriptions): a node-agent deployment runs both.
#[derive(Debug, Clone, Copy)]
pub struct Behind {
    /// SPIRE agent's RSS before the workloads started, KiB.
    pub rss_before_kib: u64,
    /// SPIRE agent's RSS once they were served, KiB.
    pub rss_after_kib: u64,
    /// SPIRE agent's CPU while they were being served.
    pub establish_cpu: Duration,
}

/// One rotation as seen by every workload's `ALL` stream.
#[derive(Debug, Clone, Copy)]
pub struct NodeRotation {
    /// Fan-out figures over the `ALL` streams.
    pub fanout: Rotation,
    /// SPIRE agent's CPU in the same window, when Steeple is measured.
    pub behind_cpu: Option<Duration>,
    /// Responses besides each `ALL` stream's one carrying the new bundle.
    pub other_responses: usize,
}

/// Everything measured for one target at one W.
#[derive(Debug, Clone)]
pub struct Round {
    /// Which agent.
    pub target: Target,
    /// How many workload processes.
    pub workloads: usize,
    /// Until every workload had its SVID.
    pub establish: Establish,
    /// Agent RSS once every workload was served, KiB.
    pub rss_after_kib: u64,
    /// SPIRE agent behind Steeple (Steeple rounds only).
    pub behind: Option<Behind>,
    /// Each rotation's figures.
    pub rotations: Vec<NodeRotation>,
}

impl Round {
    /// The agent's RSS growth per workload, KiB.
    pub fn rss_per_workload_kib(&self) -> f64 {
        delta_per(
            self.establish.rss_before_kib,
            self.rss_after_kib,
            self.workloads,
        )
    }

    /// SPIRE agent's RSS growth per workload behind Steeple, KiB (0 for SPIRE rounds).
    pub fn behind_per_workload_kib(&self) -> f64 {
        self.behind.map_or(0.0, |b| {
            delta_per(b.rss_before_kib, b.rss_after_kib, self.workloads)
        })
    }

    /// The median over rotations of the figure `pick` selects.
    pub fn median(&self, pick: impl Fn(&NodeRotation) -> Duration) -> Duration {
        let mut values: Vec<Duration> = self.rotations.iter().map(pick).collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or_default()
    }

    fn p99(&self) -> Duration {
        self.median(|r| r.fanout.p99)
    }

    /// The agent's CPU per rotation, plus SPIRE agent's behind it.
    fn node_cpu(&self) -> Duration {
        self.median(|r| r.fanout.agent_cpu + r.behind_cpu.unwrap_or_default())
    }

    fn json(&self) -> Value {
        let rotations: Vec<Value> = self
            .rotations
            .iter()
            .map(|r| {
                json!({
                    "p50_ms": msf(r.fanout.p50), "p99_ms": msf(r.fanout.p99),
                    "max_ms": msf(r.fanout.max),
                    "last_after_set_ms": msf(r.fanout.last_after_set),
                    "agent_cpu_ms": msf(r.fanout.agent_cpu),
                    "spire_agent_behind_cpu_ms": r.behind_cpu.map(msf),
                    "client_cpu_ms": msf(r.fanout.client_cpu),
                    "other_responses": r.other_responses,
                })
            })
            .collect();
        json!({
            "target": self.target.label(),
            "workloads": self.workloads,
            "establish_all_ms": msf(self.establish.all),
            "establish_p50_ms": msf(self.establish.p50),
            "establish_agent_cpu_ms": msf(self.establish.cpu),
            "establish_note": self.establish.note,
            "rss_before_kib": self.establish.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "rss_per_workload_kib": self.rss_per_workload_kib(),
            "spire_agent_behind": self.behind.map(|b| json!({
                "rss_before_kib": b.rss_before_kib,
                "rss_after_kib": b.rss_after_kib,
                "rss_per_workload_kib": self.behind_per_workload_kib(),
                "establish_cpu_ms": msf(b.establish_cpu),
            })),
            "fanout_p99_ms_median": msf(self.p99()),
            "rotations": rotations,
        })
    }
}

/// The whole run, ready to print.
#[derive(Debug)]
pub struct Report {
    /// When the run started (UTC, as `date -u` prints it).
    pub date: String,
    /// Machine description, and its limits that matter here.
    pub machine: String,
    /// Software and settings, one line.
    pub setup: String,
    /// The exact command.
    pub command: String,
    /// Steeple's RSS after start, before any workload, KiB.
    pub steeple_idle_kib: u64,
    /// Every round, in the order run.
    pub rounds: Vec<Round>,
    /// Workload counts not run, with why.
    pub skipped: Vec<String>,
}

impl Report {
    /// The Markdown document.
    pub fn markdown(&self) -> String {
        let mut out =
            String::from("# Node agent: Steeple (delegated mode) vs SPIRE agent's SDS\n\n");
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(out, "- Setup: {}", self.setup);
        let _ = writeln!(out, "- Command: `{}`", self.command);
        let _ = writeln!(
            out,
            "- Steeple idle RSS: {:.1} MiB\n",
            mib(self.steeple_idle_kib)
        );
        out.push_str(&self.establish_table());
        out.push('\n');
        out.push_str(&self.fanout_table());
        out.push('\n');
        out.push_str(&self.ratios());
        for skipped in &self.skipped {
            let _ = writeln!(out, "\nSkipped: {skipped}");
        }
        out.push('\n');
        out.push_str(&self.targets());
        out
    }

    /// The same figures as JSON.
    pub fn json(&self) -> Value {
        let ratios: Vec<Value> = self
            .pairs()
            .map(|(spire, steeple)| {
                json!({
                    "workloads": spire.workloads,
                    "establish_all": ratio_value(steeple.establish.all.as_secs_f64(), spire.establish.all.as_secs_f64()),
                    "rss_per_workload": ratio_value(steeple.rss_per_workload_kib(), spire.rss_per_workload_kib()),
                    "rss_per_workload_with_spire_agent_behind": ratio_value(steeple.rss_per_workload_kib() + steeple.behind_per_workload_kib(), spire.rss_per_workload_kib()),
                    "fanout_p99": ratio_value(steeple.p99().as_secs_f64(), spire.p99().as_secs_f64()),
                    "cpu_per_rotation_with_spire_agent_behind": ratio_value(steeple.node_cpu().as_secs_f64(), spire.node_cpu().as_secs_f64()),
                })
            })
            .collect();
        json!({
            "date": self.date,
            "machine": self.machine,
            "setup": self.setup,
            "command": self.command,
            "steeple_idle_kib": self.steeple_idle_kib,
            "rounds": self.rounds.iter().map(Round::json).collect::<Vec<_>>(),
            "ratios_steeple_over_spire": ratios,
            "skipped": self.skipped,
        })
    }

    fn establish_table(&self) -> String {
        let mut out = String::from(
            "| W | agent | all served (ms) | p50 per workload (ms) | agent CPU (ms) \
             | RSS before → after (MiB) | RSS Δ / workload (KiB) \
             | SPIRE agent behind: RSS Δ / workload (KiB), CPU (ms) |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut notes = Vec::new();
        for r in &self.rounds {
            let all = match &r.establish.note {
                Some(note) => {
                    notes.push(note.as_str());
                    format!("{} [{}]", ms(r.establish.all), notes.len())
                }
                None => ms(r.establish.all),
            };
            let behind = r.behind.map_or("–".to_owned(), |b| {
                format!(
                    "{:.1}, {}",
                    r.behind_per_workload_kib(),
                    ms(b.establish_cpu)
                )
            });
            let _ = writeln!(
                out,
                "| {} | {} | {all} | {} | {} | {:.1} → {:.1} | {:.1} | {behind} |",
                r.workloads,
                r.target.label(),
                ms(r.establish.p50),
                ms(r.establish.cpu),
                mib(r.establish.rss_before_kib),
                mib(r.rss_after_kib),
                r.rss_per_workload_kib(),
            );
        }
        for (i, note) in notes.iter().enumerate() {
            let _ = writeln!(out, "\n[{}] {note}", i + 1);
        }
        out
    }

    fn fanout_table(&self) -> String {
        let mut out = String::from(
            "| W | agent | `ALL` streams | fan-out p50 (ms) | fan-out p99 (ms) | fan-out max (ms) \
             | last after `bundle set` (ms) | agent CPU / rotation (ms) \
             | SPIRE agent behind, CPU / rotation (ms) | client CPU / rotation (ms) \
             | other responses / rotation |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rounds {
            let behind = match r.target {
                Target::Steeple => ms(r.median(|x| x.behind_cpu.unwrap_or_default())),
                Target::SpireAgent | Target::Floor => "–".to_owned(),
            };
            let mut others: Vec<usize> = r.rotations.iter().map(|x| x.other_responses).collect();
            others.sort_unstable();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {behind} | {} | {} |",
                r.workloads,
                r.target.label(),
                r.workloads,
                ms(r.median(|x| x.fanout.p50)),
                ms(r.p99()),
                ms(r.median(|x| x.fanout.max)),
                ms(r.median(|x| x.fanout.last_after_set)),
                ms(r.median(|x| x.fanout.agent_cpu)),
                ms(r.median(|x| x.fanout.client_cpu)),
                others.get(others.len() / 2).copied().unwrap_or_default(),
            );
        }
        out
    }

    fn ratios(&self) -> String {
        let mut out = String::from(
            "Steeple / SPIRE agent (below 1 = Steeple better):\n\n\
             | W | all served | RSS / workload | RSS / workload incl. SPIRE agent behind Steeple \
             | fan-out p99 | CPU / rotation incl. SPIRE agent behind Steeple |\n\
             |---:|---:|---:|---:|---:|---:|\n",
        );
        for (spire, steeple) in self.pairs() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                spire.workloads,
                ratio(
                    steeple.establish.all.as_secs_f64(),
                    spire.establish.all.as_secs_f64()
                ),
                ratio(steeple.rss_per_workload_kib(), spire.rss_per_workload_kib()),
                ratio(
                    steeple.rss_per_workload_kib() + steeple.behind_per_workload_kib(),
                    spire.rss_per_workload_kib()
                ),
                ratio(steeple.p99().as_secs_f64(), spire.p99().as_secs_f64()),
                ratio(
                    steeple.node_cpu().as_secs_f64(),
                    spire.node_cpu().as_secs_f64()
                ),
            );
        }
        out
    }

    fn targets(&self) -> String {
        let mut out = String::from("## Targets (issue 14)\n\n");
        for (spire, steeple) in self.pairs() {
            let (a, b) = (steeple.rss_per_workload_kib(), spire.rss_per_workload_kib());
            let _ = writeln!(
                out,
                "- {} W={}: Steeple RSS per workload ≤ ½ SPIRE agent's: {a:.1} KiB vs {b:.1} KiB \
                 (with SPIRE agent's own growth behind Steeple: {:.1} KiB)",
                mark(a <= b / 2.0),
                spire.workloads,
                a + steeple.behind_per_workload_kib(),
            );
            let (a, b) = (steeple.p99(), spire.p99());
            let _ = writeln!(
                out,
                "- {} W={}: Steeple fan-out p99 ≤ ½ SPIRE agent's: {} ms vs {} ms",
                mark(a.as_secs_f64() <= b.as_secs_f64() / 2.0),
                spire.workloads,
                ms(a),
                ms(b)
            );
        }
        out
    }

    /// (SPIRE agent, Steeple) rounds with the same W.
    fn pairs(&self) -> impl Iterator<Item = (&Round, &Round)> {
        self.rounds
            .iter()
            .filter(|r| r.target == Target::SpireAgent)
            .filter_map(|spire| {
                self.rounds
                    .iter()
                    .find(|r| r.target == Target::Steeple && r.workloads == spire.workloads)
                    .map(|steeple| (spire, steeple))
            })
    }
}

fn delta_per(before: u64, after: u64, count: usize) -> f64 {
    (after as f64 - before as f64) / count as f64
}

fn msf(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn ratio_value(a: f64, b: f64) -> Value {
    if b > 0.0 {
        json!((a / b * 100.0).round() / 100.0)
    } else {
        Value::Null
    }
}
