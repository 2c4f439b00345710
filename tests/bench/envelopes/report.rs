//! The Markdown report: one section per part, with the targets checked ✔/✘; in part 1
//! the floor's rows, if it ran, next to Steeple's.

use std::fmt::Write as _;
use std::time::Duration;

use crate::args::Server;
use crate::fetch::{self, FetchResults, FetchRound};
use crate::profile::{self, Profile};
use crate::resolve::{self, ResolveResults};
use crate::stats::{ms, us};
use crate::upstream::{self, UpstreamResults};

/// The agent's FetchSecrets handler, as the profile names it: the hand-routed service's
/// unary call, into which the release build inlines `SdsService::fetch_secrets`.
const FETCH_HANDLER: &str = "steeple::sds::server::FetchSecrets::call";
/// Part 1's target: p99 at 1000 concurrent clients.
const P99_TARGET: Duration = Duration::from_millis(1);
const TARGET_CONCURRENCY: usize = 1000;

/// The whole run, ready to print.
#[derive(Debug)]
pub struct Report {
    /// When the run started (UTC).
    pub date: String,
    /// Machine description.
    pub machine: String,
    /// `git describe` of the tree measured.
    pub git_rev: String,
    /// The command that produced it.
    pub command: String,
    /// Part 1, if run.
    pub fetch: Option<FetchResults>,
    /// Part 2, if run.
    pub resolve: Option<ResolveResults>,
    /// Part 3, if run: its results or why it could not run.
    pub upstream: Option<Result<UpstreamResults, String>>,
}

impl Report {
    /// The Markdown document.
    pub fn markdown(&self) -> String {
        let mut out =
            String::from("# Envelopes: SDS fetch latency, KMS resolve, upstream calls\n\n");
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(
            out,
            "- Steeple: {} (release build, log level info)",
            self.git_rev
        );
        let _ = writeln!(out, "- Command: `{}`", self.command);
        let _ = writeln!(
            out,
            "- The agent, moto and the benchmark's clients (a 2-worker tokio runtime) share \
             the machine with whatever else runs on it (see *other processes*).\n"
        );
        if let Some(fetch) = &self.fetch {
            out.push_str(&fetch_section(fetch));
        }
        if let Some(resolve) = &self.resolve {
            out.push_str(&resolve_section(resolve));
        }
        match &self.upstream {
            Some(Ok(upstream)) => out.push_str(&upstream_section(upstream)),
            Some(Err(why)) => {
                let _ = writeln!(
                    out,
                    "## 3. Upstream calls per hour vs consumers\n\nCould not run: {why}\n"
                );
            }
            None => {}
        }
        out
    }
}

fn fetch_section(results: &FetchResults) -> String {
    let mut out = String::from("## 1. FetchSecrets of a resolved envelope\n\n");
    let _ = writeln!(
        out,
        "`steeple dev` serving one `local` envelope ({} B plaintext) as generic secret `{}`; \
         unary FetchSecrets over its SDS socket, {} s measured after a 2 s warm-up. CPU \
         columns: CPU time used in the window ÷ requests completed; *other processes*: cores \
         the rest of the machine kept busy meanwhile (from `/proc/stat`).\n",
        fetch::PLAINTEXT_BYTES,
        fetch::LOGICAL_PATH,
        results.window.as_secs()
    );
    let labelled = with_floor(results);
    if labelled {
        let _ = writeln!(
            out,
            "The **floor** rows are a measuring stick, not a fake of a peer: a bare tonic/h2 \
             relay (this benchmark's binary in a process of its own, tokio's default workers) \
             in front of the same `steeple dev`, holding one `StreamSecrets` stream for `{}` \
             and answering every FetchSecrets with the shared, already-encoded bytes of \
             Steeple's last response — no authorization, no audit, no store, no name lookup. \
             It shows what tokio + tonic + hyper + h2 alone cost per FetchSecrets at the same \
             load. On its rows *agent CPU* is the floor process's (Steeple idles meanwhile). \
             Each round runs on Steeple, then on the floor.\n",
            fetch::LOGICAL_PATH,
        );
    }
    let _ = writeln!(
        out,
        "**Closed loop**: C tasks, each keeping one request in flight (back to back).\n\n\
         |{}concurrent requests | HTTP/2 connections | requests | req/s | p50 (ms) | p99 (ms) \
         | max (ms) | C ÷ req/s (ms) | agent CPU / req (µs) | client CPU / req (µs) \
         | other processes (cores) |\n\
         |{}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        server_header(labelled),
        server_rule(labelled),
    );
    for r in results.rounds.iter().filter(|r| r.offered.is_none()) {
        let _ = writeln!(
            out,
            "|{}{} | {} | {} | {:.0} | {} | {} | {} | {:.2} | {} | {} | {:.2} |",
            server_cell(labelled, r),
            r.concurrency,
            r.connections,
            r.latency.count,
            r.per_second,
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.max),
            r.concurrency as f64 / r.per_second * 1000.0,
            us(r.agent_cpu_per_request),
            us(r.client_cpu_per_request),
            r.other_cores,
        );
    }
    out.push('\n');
    out.push_str(&open_loop_table(results));
    if labelled {
        out.push_str(&over_floor(results));
    }
    out.push_str(&fetch_target(results));
    match &results.profile {
        Some(Ok(profile)) => out.push_str(&profile_section(profile, &results.rounds)),
        Some(Err(why)) => {
            let _ = writeln!(out, "Profile: not taken ({why}).\n");
        }
        None => {}
    }
    out
}

fn open_loop_table(results: &FetchResults) -> String {
    let open: Vec<_> = results
        .rounds
        .iter()
        .filter(|r| r.offered.is_some())
        .collect();
    let Some(first) = open.first() else {
        return String::new();
    };
    let labelled = with_floor(results);
    let mut out = format!(
        "**Open loop**: {} clients on {} connections, each sending at a fixed pace (phases \
         spread evenly). *Send lag*: how late the client sent after the scheduled time \
         (its 1 ms timer tick and scheduling), not part of the latency.\n\n\
         |{}offered req/s | per client req/s | served req/s | p50 (ms) | p99 (ms) | max (ms) \
         | send lag p99 (ms) | agent CPU / req (µs) | client CPU / req (µs) \
         | other processes (cores) |\n\
         |{}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        first.concurrency,
        first.connections,
        server_header(labelled),
        server_rule(labelled),
    );
    for r in open {
        let offered = r.offered.unwrap_or_default();
        let _ = writeln!(
            out,
            "|{}{offered} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} | {:.2} |",
            server_cell(labelled, r),
            offered as f64 / r.concurrency as f64,
            r.per_second,
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.max),
            r.send_lag_p99.map_or_else(|| "–".to_owned(), ms),
            us(r.agent_cpu_per_request),
            us(r.client_cpu_per_request),
            r.other_cores,
        );
    }
    out.push('\n');
    out
}

/// Whether the floor ran: then the tables get a `server` column.
fn with_floor(results: &FetchResults) -> bool {
    results.rounds.iter().any(|r| r.server == Server::Floor)
}

/// The `server` column's header, rule and cell (each with the space after `|`), or
/// nothing when only Steeple ran (the tables as they were before the floor).
fn server_header(labelled: bool) -> &'static str {
    if labelled { " server | " } else { " " }
}

fn server_rule(labelled: bool) -> &'static str {
    if labelled { "---|" } else { "" }
}

fn server_cell(labelled: bool, round: &FetchRound) -> String {
    match (labelled, round.server) {
        (false, _) => " ".to_owned(),
        (true, Server::Steeple) => " Steeple | ".to_owned(),
        (true, Server::Floor) => " floor | ".to_owned(),
    }
}

/// Steeple's figures over the floor's, round by round: how far Steeple is from its stack.
fn over_floor(results: &FetchResults) -> String {
    let mut out = String::from(
        "**Steeple against the floor**, same round, same clients (ratios: Steeple ÷ floor).\n\n\
         | round | p50 (ms) Steeple / floor | p99 (ms) Steeple / floor \
         | agent CPU / req (µs) Steeple / floor | p99 ratio | agent CPU ratio |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let steeple = results
        .rounds
        .iter()
        .filter(|r| r.server == Server::Steeple);
    for s in steeple {
        let floor = results.rounds.iter().find(|f| {
            f.server == Server::Floor && f.concurrency == s.concurrency && f.offered == s.offered
        });
        let Some(f) = floor else { continue };
        let round = match s.offered {
            Some(rate) => format!("open loop, {rate} req/s"),
            None => format!("closed loop, C={}", s.concurrency),
        };
        let ratio = |a: Duration, b: Duration| match b.is_zero() {
            true => "n/a".to_owned(),
            false => format!("{:.2}", a.as_secs_f64() / b.as_secs_f64()),
        };
        let _ = writeln!(
            out,
            "| {round} | {} / {} | {} / {} | {} / {} | {} | {} |",
            ms(s.latency.p50),
            ms(f.latency.p50),
            ms(s.latency.p99),
            ms(f.latency.p99),
            us(s.agent_cpu_per_request),
            us(f.agent_cpu_per_request),
            ratio(s.latency.p99, f.latency.p99),
            ratio(s.agent_cpu_per_request, f.agent_cpu_per_request),
        );
    }
    out.push('\n');
    out
}

/// The targets, checked on Steeple's rounds (the floor is not held to them); nothing if
/// Steeple did not run.
fn fetch_target(results: &FetchResults) -> String {
    if !results.rounds.iter().any(|r| r.server == Server::Steeple) {
        return String::new();
    }
    let closed = results.rounds.iter().find(|r| {
        r.server == Server::Steeple && r.concurrency == TARGET_CONCURRENCY && r.offered.is_none()
    });
    let Some(r) = closed else {
        return "- – p99 ≤ 1 ms at 1000 concurrent clients: C=1000 not run.\n\n".to_owned();
    };
    let mut out = format!(
        "- {} p99 ≤ 1 ms at 1000 concurrent clients (1000 requests always in flight): {} ms. \
         With C requests always in flight, mean latency = C ÷ throughput (Little's law), so \
         this needs ≥ 1,000,000 req/s; here {:.0} req/s at {} + {} µs of CPU per request \
         (agent + client), sharing 2 cores.\n",
        mark(r.latency.p99 <= P99_TARGET),
        ms(r.latency.p99),
        r.per_second,
        us(r.agent_cpu_per_request),
        us(r.client_cpu_per_request),
    );
    let open = results
        .rounds
        .iter()
        .filter(|o| o.server == Server::Steeple && o.offered.is_some());
    for open in open {
        let _ = writeln!(
            out,
            "- {} p99 ≤ 1 ms with {} clients sending {} req/s in all: {} ms.",
            mark(open.latency.p99 <= P99_TARGET),
            open.concurrency,
            open.offered.unwrap_or_default(),
            ms(open.latency.p99),
        );
    }
    out.push('\n');
    out
}

fn profile_section(profile: &Profile, rounds: &[fetch::FetchRound]) -> String {
    let c = rounds.iter().map(|r| r.concurrency).max().unwrap_or(0);
    let mut out = format!(
        "### Where the agent's CPU goes at C={c}\n\n`perf record -e cpu-clock -F 999 \
         --call-graph dwarf` on the agent for 5 s of an extra, unmeasured closed-loop round \
         ({} samples); shares of the agent's CPU time.\n\n",
        profile.samples
    );
    let handler = profile
        .functions
        .iter()
        .find(|(f, _)| f == FETCH_HANDLER)
        .map_or(0.0, |(_, pct)| *pct);
    let h2 = profile
        .functions
        .iter()
        .filter(|(f, _)| f.starts_with(profile::H2_DRIVER))
        .map(|(_, pct)| *pct)
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "The FetchSecrets handler (`{FETCH_HANDLER}`: caller check, store lookup, encoding) \
         is {handler:.0} % of the agent's CPU, h2's connection driver (frames in and out of \
         the socket) {h2:.0} %; the rest is the runtime, hyper/tonic dispatch, protobuf coding \
         and allocation around them.\n"
    );
    out.push_str("| function (inclusive) | % |\n|---|---:|\n");
    for (function, pct) in &profile.functions {
        let _ = writeln!(out, "| `{function}` | {pct:.1} |");
    }
    out.push_str("\n| kernel (inclusive) | % |\n|---|---:|\n");
    for (what, pct) in &profile.kernel {
        let _ = writeln!(out, "| {what} | {pct:.1} |");
    }
    out.push_str("\n| self time by area | % |\n|---|---:|\n");
    for (area, pct) in &profile.areas {
        let _ = writeln!(out, "| {area} | {pct:.1} |");
    }
    out.push('\n');
    out
}

fn resolve_section(results: &ResolveResults) -> String {
    let mut out = String::from("## 2. Cold resolve against moto KMS\n\n");
    let _ = writeln!(
        out,
        "`KmsEnvelopeResolver::resolve` called in-process on a row never resolved before \
         (validated from its fields first), credentials from moto's STS; sequential, \
         interleaved with a bare `Decrypt` of the same kind of ciphertext through \
         `aws-sdk-kms` (the anchor). moto {} (`moto_server`, one Python process) with its \
         request recorder on.\n",
        results.moto_version
    );
    let anchor = results.rows.first().map(|r| r.latency);
    out.push_str(
        "| call | payload | n | p50 (ms) | p99 (ms) | max (ms) | KMS Decrypt / call \
         | p50 ÷ bare p50 | p99 ÷ bare p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &results.rows {
        let ratio = |pick: fn(&crate::stats::Latency) -> Duration| match anchor {
            Some(a) if !pick(&a).is_zero() => {
                format!(
                    "{:.2}",
                    pick(&r.latency).as_secs_f64() / pick(&a).as_secs_f64()
                )
            }
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
            r.label,
            size(r.payload_bytes),
            r.latency.count,
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.max),
            r.decrypts_per_call,
            ratio(|l| l.p50),
            ratio(|l| l.p99),
        );
    }
    let _ = writeln!(
        out,
        "\nFirst resolve of a new resolver (builds the region's KMS client, opens the \
         connection): {} ms. Direct payloads are {}, data-key payloads {} \
         (`Decrypt` of the wrapped key + AES-256-GCM).\n",
        ms(results.first_resolve),
        size(resolve::DIRECT_BYTES),
        size(resolve::DATA_KEY_BYTES)
    );
    out
}

fn upstream_section(results: &UpstreamResults) -> String {
    let mut out = String::from("## 3. Upstream calls per hour vs consumers\n\n");
    let session = upstream::SESSION.as_secs_f64();
    let _ = writeln!(
        out,
        "`steeple dev` with `[aws]` against moto (`session_duration = \"{}s\"`, so an \
         exchange every {:.0}–{:.0} s: {:.0}–{:.0} STS calls/h expected) and one \
         `kms_envelope` row (`refresh_interval = \"{}s\"`: {:.0} Decrypt/h expected). Per N: \
         N SDS streams (100 per HTTP/2 connection, Envoy node, ACKing) follow `{}` and `{}`, \
         and N `steeple aws credential-process` calls are spread over the window; moto's \
         recorder counts the calls. Per hour = count × 3600 ÷ window.\n",
        session,
        session * 0.6,
        session * 0.75,
        3600.0 / (session * 0.75),
        3600.0 / (session * 0.6),
        upstream::REFRESH.as_secs(),
        3600.0 / upstream::REFRESH.as_secs_f64(),
        upstream::LOGICAL_PATH,
        upstream::CREDENTIALS,
    );
    out.push_str(
        "| N consumers | credential-process calls | window (s) | STS AssumeRoleWithWebIdentity \
         | STS / hour | KMS Decrypt | Decrypt / hour | all KMS calls | SDS pushes / consumer |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &results.rounds {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {:.0} | {} | {:.0} | {} | {:.1} |",
            r.consumers,
            r.credential_process_calls,
            r.window.as_secs_f64(),
            r.sts_calls,
            r.per_hour(r.sts_calls),
            r.decrypt_calls,
            r.per_hour(r.decrypt_calls),
            r.kms_calls,
            r.pushes_per_consumer,
        );
    }
    let flat = |pick: fn(&upstream::UpstreamRound) -> usize| {
        let counts: Vec<usize> = results.rounds.iter().map(pick).collect();
        let (min, max) = (counts.iter().min(), counts.iter().max());
        min.zip(max).is_some_and(|(min, max)| max - min <= 1)
    };
    let hours = results.total_time.as_secs_f64() / 3600.0;
    let _ = writeln!(
        out,
        "\nWhole part, {:.0} s (every window plus opening and closing the streams): {} STS \
         calls ({:.0}/h), {} KMS Decrypt ({:.0}/h).",
        results.total_time.as_secs_f64(),
        results.total_sts,
        results.total_sts as f64 / hours,
        results.total_decrypts,
        results.total_decrypts as f64 / hours,
    );
    let ok = flat(|r| r.sts_calls) && flat(|r| r.kms_calls);
    let _ = writeln!(
        out,
        "\n- {} Upstream calls do not grow with N (every window's STS and KMS counts within \
         one call of each other — a timer's phase in the window moves one call in or out).\n",
        mark(ok)
    );
    out
}

fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}
