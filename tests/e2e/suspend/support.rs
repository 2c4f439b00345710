//! The suspend suite's tools: freezing processes with SIGSTOP (undone on drop), reading
//! what a SDS server serves with its validity, and checking Steeple survived.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use base64::Engine as _;
use rustix::process::{Pid, Signal, kill_process};
use steeple_e2e::process::tail;
use steeple_e2e::sds_client::{self, SdsClient};

/// One SDS fetch may take this long before it counts as "not served".
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Processes frozen with SIGSTOP. Dropping this resumes them (SIGCONT), so a failed
/// assertion never leaves one frozen: their owners stop them with SIGTERM, which a stopped
/// process does not act on.
pub struct Frozen {
    processes: Vec<(&'static str, Pid)>,
}

impl Frozen {
    /// Sends SIGSTOP to each `(name, pid)` and waits (at most 5 s) until each is stopped.
    pub fn freeze(processes: &[(&'static str, u32)]) -> anyhow::Result<Self> {
        let mut frozen = Self {
            processes: Vec::new(),
        };
        for &(name, pid) in processes {
            let raw = i32::try_from(pid).ok().and_then(Pid::from_raw);
            let pid = raw.with_context(|| format!("{name} has an invalid pid {pid}"))?;
            kill_process(pid, Signal::STOP).with_context(|| format!("SIGSTOP to {name}"))?;
            frozen.processes.push((name, pid));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (name, pid) in &frozen.processes {
            while process_state(*pid) != Some('T') {
                anyhow::ensure!(Instant::now() < deadline, "{name} did not stop");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(frozen)
    }

    /// Sends SIGCONT to every frozen process, in the order they were frozen.
    pub fn thaw(&mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for (name, pid) in self.processes.drain(..) {
            if kill_process(pid, Signal::CONT).is_err() {
                failed.push(name);
            }
        }
        anyhow::ensure!(failed.is_empty(), "SIGCONT failed for {failed:?}");
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = self.thaw();
    }
}

/// What Steeple serves for `id` (see [`leaf`]); fails if that certificate had expired
/// before it was asked for (see [`Leaf::expired_before`]: slack for timer latency).
pub async fn steeple_leaf(client: &mut SdsClient, id: &str) -> anyhow::Result<Option<Leaf>> {
    let asked_at = unix_now();
    let served = leaf(client, id).await?;
    if let Some(leaf) = &served {
        anyhow::ensure!(
            !leaf.expired_before(asked_at),
            "Steeple served an expired {id}: notAfter {}, asked at {asked_at}",
            leaf.not_after
        );
    }
    Ok(served)
}

/// The leaf certificate served over SDS (FetchSecrets) for `id`; `None` when nothing is
/// served (an error, NotFound, no resource, a hang).
pub async fn leaf(client: &mut SdsClient, id: &str) -> anyhow::Result<Option<Leaf>> {
    let names = [id];
    let fetch = sds_client::fetch(client, &names);
    let Ok(Ok(secrets)) = tokio::time::timeout(FETCH_TIMEOUT, fetch).await else {
        return Ok(None);
    };
    let chain = secrets
        .iter()
        .find(|s| s.name == id)
        .and_then(sds_client::certificate_chain);
    chain.map(|pem| Leaf::from_pem(&pem)).transpose()
}

/// A leaf certificate: DER and validity, in Unix seconds.
#[derive(Debug, PartialEq, Eq)]
pub struct Leaf {
    pub der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
}

impl Leaf {
    /// The first certificate of a PEM chain.
    fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let text = std::str::from_utf8(pem).context("PEM chain is not text")?;
        let body: String = text
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .context("PEM body is not base64")?;
        let (not_before, not_after) = validity(&der).context("reading the leaf's validity")?;
        Ok(Self {
            der,
            not_before,
            not_after,
        })
    }

    /// Whether it had expired a full second before `unix` seconds (which were whole
    /// seconds when asked, so this is at least one second of slack).
    pub fn expired_before(&self, unix: i64) -> bool {
        unix > self.not_after
    }

    /// Whether it is valid at `unix` seconds.
    pub fn valid_at(&self, unix: i64) -> bool {
        self.not_before <= unix && unix < self.not_after
    }
}

/// notBefore and notAfter of a DER certificate, Unix seconds.
fn validity(cert: &[u8]) -> anyhow::Result<(i64, i64)> {
    let (_, cert, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(cert)?;
    // TBSCertificate: [0] version (optional), serial, signature algorithm, issuer, validity.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = der_element(tbs)?.2;
    }
    let (_, validity, _) = der_element(tbs)?;
    let (tag, not_before, rest) = der_element(validity)?;
    let not_before = asn1_time(tag, not_before)?;
    let (tag, not_after, _) = der_element(rest)?;
    Ok((not_before, asn1_time(tag, not_after)?))
}

/// The DER element at the start of `der`: (tag, contents, what follows).
fn der_element(der: &[u8]) -> anyhow::Result<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first().context("truncated DER")?;
    let (&first, rest) = rest.split_first().context("truncated DER")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        anyhow::ensure!(n <= 4 && rest.len() >= n, "bad DER length");
        let len = rest[..n]
            .iter()
            .fold(0, |acc, b| acc << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    anyhow::ensure!(rest.len() >= len, "truncated DER");
    Ok((tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn asn1_time(tag: u8, value: &[u8]) -> anyhow::Result<i64> {
    let text = std::str::from_utf8(value).context("ASN.1 time is not text")?;
    let digits = text.strip_suffix('Z').context("ASN.1 time is not UTC")?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i32 = digits.get(..2).context("short UTCTime")?.parse()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        0x18 => (
            digits.get(..4).context("short time")?.parse()?,
            &digits[4..],
        ),
        _ => anyhow::bail!("tag {tag:#x} is not an ASN.1 time"),
    };
    let field = |i: usize| -> anyhow::Result<u8> {
        let two = rest.get(i * 2..i * 2 + 2).context("short ASN.1 time")?;
        Ok(two.parse()?)
    };
    let month = time::Month::try_from(field(0)?)?;
    let date = time::Date::from_calendar_date(year, month, field(1)?)?;
    let at = date.with_hms(field(2)?, field(3)?, field(4)?)?.assume_utc();
    Ok(at.unix_timestamp())
}

/// Steeple is the process it was before the freeze, still running, and never panicked.
pub fn assert_alive(before: u32, now: u32, logs: &str) -> anyhow::Result<()> {
    anyhow::ensure!(before == now, "Steeple was replaced: pid {before} → {now}");
    let pid = i32::try_from(now).ok().and_then(Pid::from_raw);
    let state = pid.and_then(process_state);
    anyhow::ensure!(
        matches!(state, Some('R' | 'S' | 'D')),
        "Steeple (pid {now}) is not running: state {state:?}\n{}",
        tail(logs, 30)
    );
    anyhow::ensure!(
        !logs.contains("panicked"),
        "Steeple panicked:\n{}",
        tail(logs, 30)
    );
    Ok(())
}

/// Steeple's own log lines (its crate's targets, not its dependencies'), the last `lines`.
pub fn steeple_lines(logs: &str, lines: usize) -> String {
    let own: Vec<&str> = logs.lines().filter(|l| l.contains("steeple::")).collect();
    own[own.len().saturating_sub(lines)..].join("\n")
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T` stopped, `Z` exited...).
fn process_state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())).ok()?;
    // "pid (comm) state ...": comm may hold spaces and parentheses; the last ')' ends it.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
    since_epoch.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
