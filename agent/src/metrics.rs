//! Prometheus metrics, process-wide: components record into [`metrics()`] (atomics and
//! small maps, no allocation on the SDS hot path), and the admin listener renders them in
//! the text exposition format together with what the store shows at scrape time (SVID
//! expiry, secrets by kind).
//!
//! Labels only ever carry fixed words and configuration (provider names, outcomes, SPIFFE
//! IDs) — never a secret, a logical path's value or a token.
//!
//! The exposition is written here by hand, not through a metrics crate: the SVID and
//! secret gauges are computed from the store's snapshot at each scrape, and the process
//! metrics are read from `/proc` then too. A registry of recorded values would need a
//! collector hook for both and would add nothing to the counters and histograms below.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use crate::store::{Secret, Snapshot};

mod process;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The SDS protocol flavour of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdsFlavour {
    /// StreamSecrets / FetchSecrets.
    StateOfTheWorld,
    /// DeltaSecrets.
    Delta,
}

impl SdsFlavour {
    fn index(self) -> usize {
        match self {
            Self::StateOfTheWorld => 0,
            Self::Delta => 1,
        }
    }
}

const FLAVOURS: [(SdsFlavour, &str); 2] = [
    (SdsFlavour::StateOfTheWorld, "sotw"),
    (SdsFlavour::Delta, "delta"),
];

/// A latency histogram with [`BUCKETS`].
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Every metric Steeple records.
#[derive(Debug, Default)]
pub struct Metrics {
    sds_streams: [AtomicI64; 2],
    sds_responses: [AtomicU64; 2],
    sds_nacks: [AtomicU64; 2],
    sds_refused: AtomicU64,
    sds_connections: AtomicI64,
    sds_connections_refused: AtomicU64,
    sds_callers_without_pid: AtomicU64,
    delegated_workloads: AtomicI64,
    delegated_without_svid: AtomicU64,
    svid_rotations: AtomicU64,
    /// SIGHUP reloads: [applied, refused].
    config_reloads: [AtomicU64; 2],
    envelopes_served: AtomicI64,
    envelopes_unserved: AtomicI64,
    envelope_unchanged: AtomicU64,
    /// (provider, outcome) → resolve latency.
    resolves: Mutex<BTreeMap<(String, &'static str), Histogram>>,
    /// (exchange, outcome) → exchange latency, e.g. ("aws-sts", "ok").
    exchanges: Mutex<BTreeMap<(String, &'static str), Histogram>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Counts an open SDS stream until dropped.
#[derive(Debug)]
pub struct StreamGauge<'a> {
    metrics: &'a Metrics,
    flavour: SdsFlavour,
}

impl Drop for StreamGauge<'_> {
    fn drop(&mut self) {
        self.metrics.sds_streams[self.flavour.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// An SDS stream opened; it counts until the guard drops.
    pub fn sds_stream_opened(&self, flavour: SdsFlavour) -> StreamGauge<'_> {
        self.sds_streams[flavour.index()].fetch_add(1, Ordering::Relaxed);
        StreamGauge {
            metrics: self,
            flavour,
        }
    }

    /// A response (push) was sent on an SDS stream.
    pub fn sds_response_sent(&self, flavour: SdsFlavour) {
        self.sds_responses[flavour.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A client NACKed a response.
    pub fn sds_nack(&self, flavour: SdsFlavour) {
        self.sds_nacks[flavour.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused (authorization, limits, malformed).
    pub fn sds_request_refused(&self) {
        self.sds_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// SDS connections open now.
    pub fn set_sds_connections(&self, open: usize) {
        self.sds_connections.store(gauge(open), Ordering::Relaxed);
    }

    /// An SDS connection was closed at accept (a limit, or a caller granted nothing).
    pub fn sds_connection_refused(&self) {
        self.sds_connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// An SDS caller came without a pid (another PID namespace): no liveness check.
    pub fn sds_caller_without_pid(&self) {
        self.sds_callers_without_pid.fetch_add(1, Ordering::Relaxed);
    }

    /// Workloads followed through the Delegated Identity API now (delegated mode).
    pub fn set_delegated_workloads(&self, live: usize) {
        self.delegated_workloads
            .store(gauge(live), Ordering::Relaxed);
    }

    /// SPIRE answered for an SDS caller with no SVID (no registration entry matches it).
    pub fn delegated_without_svid(&self) {
        self.delegated_without_svid.fetch_add(1, Ordering::Relaxed);
    }

    /// An X.509-SVID was replaced by a new one.
    pub fn svid_rotated(&self) {
        self.svid_rotations.fetch_add(1, Ordering::Relaxed);
    }

    /// A SIGHUP reload was applied (`true`) or refused.
    pub fn config_reload(&self, applied: bool) {
        let index = usize::from(!applied);
        self.config_reloads[index].fetch_add(1, Ordering::Relaxed);
    }

    /// One envelope resolve against `provider` ended with `outcome` (`ok` or an error
    /// kind) after `elapsed`.
    pub fn envelope_resolved(&self, provider: &str, outcome: &'static str, elapsed: Duration) {
        observe(
            &self.resolves,
            (provider.to_owned(), outcome),
            elapsed.as_secs_f64(),
        );
    }

    /// A refresh resolved the same value as before: nothing new pushed.
    pub fn envelope_unchanged(&self) {
        self.envelope_unchanged.fetch_add(1, Ordering::Relaxed);
    }

    /// How many configured envelopes are served and how many are not (pending, refused
    /// or failing).
    pub fn set_envelopes(&self, served: usize, unserved: usize) {
        self.envelopes_served
            .store(gauge(served), Ordering::Relaxed);
        self.envelopes_unserved
            .store(gauge(unserved), Ordering::Relaxed);
    }

    /// Configured envelopes not served right now.
    pub fn envelopes_unserved(&self) -> i64 {
        self.envelopes_unserved.load(Ordering::Relaxed)
    }

    /// One credential exchange (named by its task, e.g. `aws-sts`) ended with `outcome`.
    pub fn exchanged(&self, exchange: &str, outcome: &'static str, elapsed: Duration) {
        observe(
            &self.exchanges,
            (exchange.to_owned(), outcome),
            elapsed.as_secs_f64(),
        );
    }

    /// The text exposition of every metric, plus the SVIDs and secrets in `snapshot`,
    /// the build and the process's resources now.
    pub fn render(&self, snapshot: &Snapshot, now: SystemTime) -> String {
        let mut out = String::with_capacity(4096);
        self.render_sds(&mut out);
        counter(
            &mut out,
            "steeple_svid_rotations_total",
            "X.509-SVIDs replaced by a new one.",
            load(&self.svid_rotations),
        );
        let reloads = ["applied", "refused"]
            .into_iter()
            .zip(&self.config_reloads)
            .map(|(outcome, n)| (format!("outcome=\"{outcome}\""), load(n)));
        family(
            &mut out,
            ("steeple_config_reloads_total", "counter"),
            "SIGHUP configuration reloads by outcome.",
            reloads,
        );
        render_svids(&mut out, snapshot, now);
        self.render_envelopes(&mut out);
        render_histograms(
            &mut out,
            "steeple_exchange_duration_seconds",
            "Credential exchanges (one upstream call each) by exchange and outcome.",
            &lock(&self.exchanges)
                .iter()
                .map(|((e, o), h)| {
                    (
                        format!("exchange=\"{}\",outcome=\"{o}\"", escape(e)),
                        h.clone(),
                    )
                })
                .collect::<Vec<_>>(),
        );
        process::render(&mut out, &process::ProcessSample::read());
        out
    }

    /// Streams, responses, NACKs, refusals and connections of the SDS server.
    fn render_sds(&self, out: &mut String) {
        let by_protocol = |values: [u64; 2]| {
            FLAVOURS
                .iter()
                .map(|(flavour, name)| (format!("protocol=\"{name}\""), values[flavour.index()]))
                .collect::<Vec<_>>()
        };
        let streams = FLAVOURS
            .iter()
            .map(|(flavour, name)| {
                let open = self.sds_streams[flavour.index()].load(Ordering::Relaxed);
                (format!("protocol=\"{name}\""), open)
            })
            .collect::<Vec<_>>();
        family(
            out,
            ("steeple_sds_streams", "gauge"),
            "Open SDS streams.",
            streams,
        );
        let responses = by_protocol(self.sds_responses.each_ref().map(load));
        let help = "Responses (pushes) sent on SDS streams.";
        family(
            out,
            ("steeple_sds_responses_total", "counter"),
            help,
            responses,
        );
        let nacks = by_protocol(self.sds_nacks.each_ref().map(load));
        let help = "Responses SDS clients rejected.";
        family(out, ("steeple_sds_nacks_total", "counter"), help, nacks);
        counter(
            out,
            "steeple_sds_requests_refused_total",
            "SDS requests refused (authorization, limits, malformed).",
            load(&self.sds_refused),
        );
        header(
            out,
            "steeple_sds_connections",
            "gauge",
            "Open SDS connections.",
        );
        let open = self.sds_connections.load(Ordering::Relaxed);
        let _ = writeln!(out, "steeple_sds_connections {open}");
        counter(
            out,
            "steeple_sds_connections_refused_total",
            "SDS connections closed at accept (connection limits, or a caller granted nothing).",
            load(&self.sds_connections_refused),
        );
        counter(
            out,
            "steeple_sds_callers_without_pid_total",
            "SDS connections whose peer credentials had no pid (another PID namespace), so the exited-process check could not run.",
            load(&self.sds_callers_without_pid),
        );
        self.render_delegated(out);
    }

    /// Delegated mode: workloads followed, and callers SPIRE knows no entry for.
    fn render_delegated(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP steeple_delegated_workloads Local workloads whose own SVIDs are followed through SPIRE's Delegated Identity API (delegated mode).\n# TYPE steeple_delegated_workloads gauge\nsteeple_delegated_workloads {}",
            self.delegated_workloads.load(Ordering::Relaxed)
        );
        counter(
            out,
            "steeple_delegated_workloads_without_svid_total",
            "Times SPIRE answered for an SDS caller with no SVID (no registration entry matches it; its streams are held open).",
            load(&self.delegated_without_svid),
        );
    }

    /// Envelopes by state, cache hits and resolve durations.
    fn render_envelopes(&self, out: &mut String) {
        let states = [
            ("served", &self.envelopes_served),
            ("unserved", &self.envelopes_unserved),
        ]
        .map(|(state, n)| (format!("state=\"{state}\""), n.load(Ordering::Relaxed)));
        let help = "Configured envelopes by state.";
        family(out, ("steeple_envelopes", "gauge"), help, states);
        counter(
            out,
            "steeple_envelope_cache_hits_total",
            "Refreshes that resolved the value already served (no new SDS version).",
            load(&self.envelope_unchanged),
        );
        render_histograms(
            out,
            "steeple_envelope_resolve_duration_seconds",
            "Envelope resolves (one upstream call each) by provider and outcome.",
            &lock(&self.resolves)
                .iter()
                .map(|((p, o), h)| (format!("provider=\"{p}\",outcome=\"{o}\""), h.clone()))
                .collect::<Vec<_>>(),
        );
    }
}

fn load(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

/// One metric family: its header, then one sample per `(labels, value)`.
fn family(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    samples: impl IntoIterator<Item = (String, impl std::fmt::Display)>,
) {
    header(out, name, kind, help);
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn observe<K: Ord>(map: &Mutex<BTreeMap<K, Histogram>>, key: K, seconds: f64) {
    lock(map).entry(key).or_default().observe(seconds);
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Expiry of every served X.509-SVID, and the secrets held by kind.
fn render_svids(out: &mut String, snapshot: &Snapshot, now: SystemTime) {
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut svids: BTreeMap<&str, (SystemTime, bool)> = BTreeMap::new();
    for (_, entry) in snapshot.iter() {
        let kind = match &entry.secret {
            Secret::Certificate(cert) => {
                let overdue = cert.rotation_overdue_at() <= now;
                svids.insert(&cert.spiffe_id, (cert.not_after, overdue));
                "tls_certificate"
            }
            Secret::TrustBundle(_) | Secret::BundleSet(_) => "validation_context",
            Secret::Generic(_) => "generic_secret",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let by_id = |value: fn(&(SystemTime, bool)) -> u64| {
        svids
            .iter()
            .map(move |(id, svid)| (format!("spiffe_id=\"{}\"", escape(id)), value(svid)))
    };
    family(
        out,
        ("steeple_svid_expiry_timestamp_seconds", "gauge"),
        "notAfter of each X.509-SVID served, Unix time.",
        by_id(|(not_after, _)| unix_secs(*not_after)),
    );
    header(
        out,
        "steeple_svid_remaining_seconds",
        "gauge",
        "Seconds until the soonest-expiring X.509-SVID expires (negative: expired).",
    );
    if let Some((soonest, _)) = svids.values().min() {
        let remaining = match soonest.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        };
        let _ = writeln!(out, "steeple_svid_remaining_seconds {remaining:.0}");
    }
    family(
        out,
        ("steeple_svid_rotation_overdue", "gauge"),
        "1 while an X.509-SVID is served past two thirds of its lifetime (rotation failing).",
        by_id(|(_, overdue)| u64::from(*overdue)),
    );
    let kinds = kinds
        .into_iter()
        .map(|(kind, count)| (format!("kind=\"{kind}\""), count));
    family(
        out,
        ("steeple_secrets", "gauge"),
        "Secrets held, by SDS kind.",
        kinds,
    );
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn render_histograms(out: &mut String, name: &str, help: &str, series: &[(String, Histogram)]) {
    header(out, name, "histogram", help);
    for (labels, histogram) in series {
        for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}\n{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {}",
            histogram.count, histogram.sum, histogram.count
        );
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
