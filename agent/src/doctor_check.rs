//! What a `steeple doctor` check is, below both the CLI that runs and prints them and the
//! sides (AWS, Vault) that check their own upstreams: one [`Check`] per line, what the
//! Workload API issued that the checks of an upstream need ([`Issued`]), the bound on each
//! call to a peer, and how times are shown.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Bound on each call to a peer (Workload API, STS, KMS, Vault).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The check passed.
    Ok,
    /// The check failed; the check carries a fix.
    Fail,
    /// The check did not run; its detail says why.
    Skipped,
}

/// One check: a stable name, its status, what was seen and, on failure, how to fix it.
/// Details name SPIFFE IDs, key ARNs, paths and expiry times — never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name, e.g. `workload_api.x509_svid` or `vault.login`.
    pub check: String,
    /// How it went.
    pub status: Status,
    /// What was seen (for a skipped check: why it did not run).
    pub detail: String,
    /// For a failure, one line saying what to change.
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn ok(check: &str, detail: impl Into<String>) -> Self {
        Self::new(check, Status::Ok, detail.into(), None)
    }

    /// A failed check with its fix.
    pub fn fail(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Status::Fail, detail.into(), Some(fix.into()))
    }

    /// A check that did not run, and why.
    pub fn skipped(check: &str, reason: impl Into<String>) -> Self {
        Self::new(check, Status::Skipped, reason.into(), None)
    }

    fn new(check: &str, status: Status, detail: String, fix: Option<String>) -> Self {
        Self {
            check: check.to_owned(),
            status,
            detail,
            fix,
        }
    }
}

/// What the Workload API issued: SPIFFE IDs, and the roots of every trust domain.
#[derive(Debug)]
pub struct Issued {
    /// The SPIFFE IDs of the valid SVIDs, default first.
    pub spiffe_ids: Vec<String>,
    /// Trust domain name → its X.509 roots (DER), own and federated.
    pub bundles: BTreeMap<String, Vec<Vec<u8>>>,
}

/// `at` as RFC 3339 (whole seconds, UTC) and how far from now.
pub fn expiry(at: SystemTime) -> String {
    let stamp = time::OffsetDateTime::from(at)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "?".to_owned());
    match at.duration_since(SystemTime::now()) {
        Ok(left) => format!("{stamp}, in {}", span(left)),
        Err(past) => format!("{stamp}, {} ago", span(past.duration())),
    }
}

/// `1h 2m`, `1h`, `3m 4s`, `3m` or `5s` (sub-second durations as `250ms`).
pub fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, 0) => format!("{}ms", duration.as_millis()),
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let cases = [
            (3600, "1h"),
            (3720, "1h 2m"),
            (180, "3m"),
            (184, "3m 4s"),
            (5, "5s"),
        ];
        for (secs, shown) in cases {
            assert_eq!(span(Duration::from_secs(secs)), shown);
        }
        assert_eq!(span(Duration::from_millis(250)), "250ms");
        assert!(expiry(SystemTime::now() + Duration::from_secs(90)).contains(", in 1m "));
    }
}
