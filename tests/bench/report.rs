//! Figures per round, and the Markdown report: the table, the Steeple/SPIRE ratios,
//! Steeple's CPU over the floor's, and the targets with ✔/✘.

use std::fmt::Write as _;
use std::time::Duration;

use crate::figures::{Rotation, Target, mark, mib, ms, ratio};

/// Everything measured for one target at one N.
#[derive(Debug, Clone)]
pub struct Round {
    /// Which agent.
    pub target: Target,
    /// How many streams.
    pub streams: usize,
    /// From opening the first stream until every stream had its first response.
    pub establish: Duration,
    /// Why the streams could not be established as usual, and how they were instead.
    pub establish_note: Option<String>,
    /// Agent RSS before opening the streams, KiB.
    pub rss_before_kib: u64,
    /// Agent RSS once all streams were established, KiB.
    pub rss_after_kib: u64,
    /// Each rotation's figures.
    pub rotations: Vec<Rotation>,
}

impl Round {
    /// RSS growth per stream, KiB (negative if the agent shrank).
    pub fn rss_per_stream_kib(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) / self.streams as f64
    }

    /// The median over rotations of the agent's CPU per stream, µs.
    pub fn agent_cpu_per_stream_us(&self) -> f64 {
        self.median(|x| x.agent_cpu).as_secs_f64() * 1e6 / self.streams as f64
    }

    /// The median over rotations of the figure `pick` selects.
    pub fn median(&self, pick: impl Fn(&Rotation) -> Duration) -> Duration {
        let mut values: Vec<Duration> = self.rotations.iter().map(pick).collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or_default()
    }
}

/// The whole run, ready to print.
#[derive(Debug)]
pub struct Report {
    /// When the run started (UTC, as `date -u` prints it).
    pub date: String,
    /// Machine description.
    pub machine: String,
    /// Software and settings, one line.
    pub setup: String,
    /// Steeple's RSS after start, before any stream, KiB.
    pub steeple_idle_kib: u64,
    /// Every round, in the order run.
    pub rounds: Vec<Round>,
    /// Stream counts not run, with why.
    pub skipped: Vec<String>,
}

const IDLE_TARGET_KIB: u64 = 20 * 1024;
const P99_TARGET: Duration = Duration::from_millis(50);

impl Report {
    /// The same figures for machines: every round's medians, and per N the Steeple /
    /// SPIRE agent ratios, and Steeple's CPU over the floor's, when both ran.
    pub fn json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let rounds: Vec<serde_json::Value> = self
            .rounds
            .iter()
            .map(|r| {
                serde_json::json!({
                    "agent": r.target.label(),
                    "streams": r.streams,
                    "establish_ms": ms(r.establish),
                    "establish_note": r.establish_note,
                    "fanout_p50_ms": ms(r.median(|x| x.p50)),
                    "fanout_p99_ms": ms(r.median(|x| x.p99)),
                    "fanout_max_ms": ms(r.median(|x| x.max)),
                    "last_after_set_ms": ms(r.median(|x| x.last_after_set)),
                    "agent_cpu_per_rotation_ms": ms(r.median(|x| x.agent_cpu)),
                    "agent_cpu_per_stream_us": r.agent_cpu_per_stream_us(),
                    "client_cpu_per_rotation_ms": ms(r.median(|x| x.client_cpu)),
                    "rss_before_kib": r.rss_before_kib,
                    "rss_after_kib": r.rss_after_kib,
                    "rss_per_stream_kib": r.rss_per_stream_kib(),
                })
            })
            .collect();
        let ratios: Vec<serde_json::Value> = self
            .pairs(Target::SpireAgent)
            .map(|(spire, steeple)| {
                let of = |pick: fn(&Rotation) -> Duration| {
                    let theirs = ms(spire.median(pick));
                    (theirs > 0.0).then(|| ms(steeple.median(pick)) / theirs)
                };
                serde_json::json!({
                    "streams": steeple.streams,
                    "fanout_p99": of(|x| x.p99),
                    "agent_cpu_per_rotation": of(|x| x.agent_cpu),
                    "rss_per_stream": steeple.rss_per_stream_kib() / spire.rss_per_stream_kib(),
                })
            })
            .collect();
        let over_floor: Vec<serde_json::Value> = self
            .pairs(Target::Floor)
            .map(|(floor, steeple)| {
                let theirs = ms(floor.median(|x| x.agent_cpu));
                serde_json::json!({
                    "streams": steeple.streams,
                    "agent_cpu_per_rotation": (theirs > 0.0)
                        .then(|| ms(steeple.median(|x| x.agent_cpu)) / theirs),
                })
            })
            .collect();
        serde_json::json!({
            "date": self.date,
            "machine": self.machine,
            "setup": self.setup,
            "steeple_idle_rss_kib": self.steeple_idle_kib,
            "rounds": rounds,
            "steeple_over_spire": ratios,
            "steeple_over_floor": over_floor,
            "skipped": self.skipped,
        })
    }

    /// The Markdown document.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# SDS fan-out: Steeple vs SPIRE agent\n");
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(out, "- Setup: {}", self.setup);
        let _ = writeln!(
            out,
            "- Steeple idle RSS: {:.1} MiB\n",
            mib(self.steeple_idle_kib)
        );
        out.push_str(&self.table());
        out.push('\n');
        out.push_str(&self.ratios());
        if self.pairs(Target::Floor).next().is_some() {
            out.push('\n');
            out.push_str(&self.over_floor());
        }
        for skipped in &self.skipped {
            let _ = writeln!(out, "\nSkipped: {skipped}");
        }
        out.push('\n');
        out.push_str(&self.targets());
        out
    }

    fn table(&self) -> String {
        let mut out = String::from(
            "| N | agent | establish (ms) | fan-out p50 (ms) | fan-out p99 (ms) | fan-out max (ms) \
             | last stream after `bundle set` (ms) | agent CPU / rotation (ms) \
             | client CPU / rotation (ms) | RSS before → after (MiB) | RSS Δ / stream (KiB) |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut notes = Vec::new();
        for r in &self.rounds {
            let establish = match &r.establish_note {
                Some(note) => {
                    notes.push(note.as_str());
                    format!("{} [{}]", ms(r.establish), notes.len())
                }
                None => ms(r.establish),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {establish} | {} | {} | {} | {} | {} | {} | {:.1} → {:.1} | {:.1} |",
                r.streams,
                r.target.label(),
                ms(r.median(|x| x.p50)),
                ms(r.median(|x| x.p99)),
                ms(r.median(|x| x.max)),
                ms(r.median(|x| x.last_after_set)),
                ms(r.median(|x| x.agent_cpu)),
                ms(r.median(|x| x.client_cpu)),
                mib(r.rss_before_kib),
                mib(r.rss_after_kib),
                r.rss_per_stream_kib(),
            );
        }
        for (i, note) in notes.iter().enumerate() {
            let _ = writeln!(out, "\n[{}] {note}", i + 1);
        }
        out
    }

    fn ratios(&self) -> String {
        let mut out = String::from(
            "| N | fan-out p99 Steeple/SPIRE | agent CPU per rotation Steeple/SPIRE \
             | RSS per stream Steeple/SPIRE |\n|---:|---:|---:|---:|\n",
        );
        for (spire, steeple) in self.pairs(Target::SpireAgent) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                spire.streams,
                ratio(
                    steeple.median(|x| x.p99).as_secs_f64(),
                    spire.median(|x| x.p99).as_secs_f64()
                ),
                ratio(
                    steeple.median(|x| x.agent_cpu).as_secs_f64(),
                    spire.median(|x| x.agent_cpu).as_secs_f64()
                ),
                ratio(steeple.rss_per_stream_kib(), spire.rss_per_stream_kib()),
            );
        }
        out
    }

    /// Steeple's agent CPU against the floor's: how far Steeple is from its stack's least.
    fn over_floor(&self) -> String {
        let mut out = String::from(
            "| N | agent CPU / rotation Steeple (ms) | floor (ms) | Steeple/floor \
             | agent CPU / stream Steeple (µs) | floor (µs) |\n\
             |---:|---:|---:|---:|---:|---:|\n",
        );
        for (floor, steeple) in self.pairs(Target::Floor) {
            let (a, b) = (
                steeple.median(|x| x.agent_cpu),
                floor.median(|x| x.agent_cpu),
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {:.1} |",
                steeple.streams,
                ms(a),
                ms(b),
                ratio(a.as_secs_f64(), b.as_secs_f64()),
                steeple.agent_cpu_per_stream_us(),
                floor.agent_cpu_per_stream_us(),
            );
        }
        out
    }

    fn targets(&self) -> String {
        let mut out = String::from("## Targets\n\n");
        let idle = self.steeple_idle_kib <= IDLE_TARGET_KIB;
        let at_1000 = self
            .pairs(Target::SpireAgent)
            .find(|(s, _)| s.streams == 1000);
        match at_1000 {
            Some((spire, steeple)) => {
                let p99 = steeple.median(|x| x.p99);
                let _ = writeln!(
                    out,
                    "- {} Fan-out to 1,000 streams p99 ≤ 50 ms: Steeple {} ms (SPIRE agent {} ms)",
                    mark(p99 <= P99_TARGET),
                    ms(p99),
                    ms(spire.median(|x| x.p99))
                );
            }
            None => out.push_str("- – Fan-out to 1,000 streams p99 ≤ 50 ms: N=1000 not run\n"),
        }
        for (spire, steeple) in self.pairs(Target::SpireAgent) {
            let (a, b) = (steeple.median(|x| x.p99), spire.median(|x| x.p99));
            let _ = writeln!(
                out,
                "- {} N={}: Steeple fan-out p99 ≤ ½ SPIRE agent's: {} ms vs {} ms",
                mark(a.as_secs_f64() <= b.as_secs_f64() / 2.0),
                spire.streams,
                ms(a),
                ms(b)
            );
            let (a, b) = (steeple.rss_per_stream_kib(), spire.rss_per_stream_kib());
            let _ = writeln!(
                out,
                "- {} N={}: Steeple memory per stream ≤ ½ SPIRE agent's: {a:.1} KiB vs {b:.1} KiB",
                mark(a <= b / 2.0),
                spire.streams,
            );
        }
        let _ = writeln!(
            out,
            "- {} Steeple idle RSS ≤ 20 MiB: {:.1} MiB",
            mark(idle),
            mib(self.steeple_idle_kib)
        );
        out
    }

    /// (`other`, Steeple) rounds with the same N.
    fn pairs(&self, other: Target) -> impl Iterator<Item = (&Round, &Round)> {
        self.rounds
            .iter()
            .filter(move |r| r.target == other)
            .filter_map(|theirs| {
                self.rounds
                    .iter()
                    .find(|r| r.target == Target::Steeple && r.streams == theirs.streams)
                    .map(|steeple| (theirs, steeple))
            })
    }
}
