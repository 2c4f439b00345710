//! The Markdown report: header, part 1's latency tables, part 2's calls per hour, and
//! the targets with ✔/✘.

use std::fmt::Write as _;

use crate::calls::{CallsResults, REFRESH, TOKEN_TTL};
use crate::resolve::ResolveResults;
use crate::stats::{Latency, ms, us};

/// Everything measured in one run.
#[derive(Debug)]
pub struct Report {
    /// When it ran (UTC).
    pub date: String,
    /// CPUs, model and memory.
    pub machine: String,
    /// `git describe --always --dirty`.
    pub git_rev: String,
    /// The command that reproduces the run.
    pub command: String,
    /// `bao version`.
    pub openbao: String,
    /// Part 1, if run.
    pub resolve: Option<ResolveResults>,
    /// Part 2, if run.
    pub calls: Option<CallsResults>,
}

impl Report {
    /// The whole report.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Vault benchmark results\n");
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(out, "- Steeple: `{}` (release build)", self.git_rev);
        let _ = writeln!(out, "- Peer: {} (dev mode, loopback)", self.openbao);
        let _ = writeln!(out, "- Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "See [README.md](README.md#vault-bench) for what each figure means.\n"
        );
        let mut targets = Vec::new();
        if let Some(resolve) = &self.resolve {
            resolve_section(&mut out, resolve);
        }
        if let Some(calls) = &self.calls {
            calls_section(&mut out, calls, &mut targets);
        }
        if !targets.is_empty() {
            let _ = writeln!(out, "## Targets\n");
            for (ok, text) in targets {
                let _ = writeln!(out, "- {} {text}", if ok { "✔" } else { "✘" });
            }
        }
        out
    }
}

fn triple(l: &Latency) -> String {
    format!("{} / {} / {}", ms(l.p50), ms(l.p99), ms(l.max))
}

fn ratio(a: &Latency, b: &Latency) -> String {
    format!("{:.2}", a.p50.as_secs_f64() / b.p50.as_secs_f64())
}

fn resolve_section(out: &mut String, r: &ResolveResults) {
    let samples = r.kinds.first().map_or(0, |k| k.cold.count);
    let _ = writeln!(
        out,
        "## 1. Resolve latency (ms, p50 / p99 / max, {samples} each)\n"
    );
    let _ = writeln!(
        out,
        "Load average (1/5/15 min) before: {}, after: {}.\n",
        r.load.0, r.load.1
    );
    let _ = writeln!(
        out,
        "| envelope | payload | cold resolve | cold anchor | warm resolve | warm anchor | anchor call |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
    for k in &r.kinds {
        let _ = writeln!(
            out,
            "| {} | {} B | {} | {} | {} | {} | {} |",
            k.kind.label(),
            k.kind.payload_bytes(),
            triple(&k.cold),
            triple(&k.cold_anchor),
            triple(&k.warm),
            triple(&k.warm_anchor),
            k.kind.anchor(),
        );
    }
    let _ = writeln!(
        out,
        "\n| envelope | cold resolve / anchor (p50) | warm resolve / anchor (p50) |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    for k in &r.kinds {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            k.kind.label(),
            ratio(&k.cold, &k.cold_anchor),
            ratio(&k.warm, &k.warm_anchor),
        );
    }
    let _ = writeln!(
        out,
        "\nCold = a resolver built just before (client untimed; building a `VaultClient` \
         takes {} µs, once per agent) resolving a row never resolved before, on a new \
         connection; the cold anchor opens a new TCP connection too. Warm = one resolver \
         resolving the same row again, as on every refresh; the warm anchor reuses one \
         keep-alive connection.\n",
        us(r.client_build)
    );
}

/// Names of the counted endpoints, in `AuditCounts::as_array` order.
const ENDPOINTS: [&str; 6] = [
    "login",
    "renew-self",
    "lookup-self",
    "KV read",
    "transit decrypt",
    "other",
];

fn calls_section(out: &mut String, c: &CallsResults, targets: &mut Vec<(bool, String)>) {
    let _ = writeln!(out, "## 2. Vault calls per hour vs N consumers\n");
    let _ = writeln!(
        out,
        "`steeple dev` with one `vault_delegate` and one `vault_transit` row, refresh \
         every {} s, token TTL {} s. Load average (1/5/15 min) before: {}, after: {}.\n",
        REFRESH.as_secs(),
        TOKEN_TTL.as_secs(),
        c.load.0,
        c.load.1
    );
    let _ = writeln!(
        out,
        "| N | window | {} | total / h | SDS pushes / consumer |",
        ENDPOINTS.join(" / h | ") + " / h"
    );
    let _ = writeln!(
        out,
        "|---:|---:|{}---:|---:|",
        "---:|".repeat(ENDPOINTS.len())
    );
    for round in &c.rounds {
        let counts = round.counts.as_array();
        let cells: Vec<String> = counts
            .iter()
            .map(|&n| format!("{:.0} ({n})", round.per_hour(n)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {:.1} s | {} | {:.0} | {:.1} |",
            round.consumers,
            round.window.as_secs_f64(),
            cells.join(" | "),
            round.per_hour(counts.iter().sum()),
            round.pushes_per_consumer,
        );
    }
    let _ = writeln!(
        out,
        "\nEach cell: calls per hour (calls counted in the window).\n"
    );
    let flat = (0..ENDPOINTS.len()).all(|e| {
        let counts: Vec<usize> = c.rounds.iter().map(|r| r.counts.as_array()[e]).collect();
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
    });
    let ns: Vec<String> = c.rounds.iter().map(|r| r.consumers.to_string()).collect();
    targets.push((
        flat,
        format!(
            "Vault calls do not grow with N (N = {}): every endpoint's count within one call \
             across the windows",
            ns.join(", ")
        ),
    ));
    targets.push((
        c.logs_clean,
        "No canary plaintext in Steeple's log".to_owned(),
    ));
}
