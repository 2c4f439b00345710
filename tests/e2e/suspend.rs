//! Fault: the host suspended past every X.509-SVID's lifetime (20 s SVIDs, 30 s away),
//! then resumed. Steeple recovers by itself, in the same process, with no panic, and from
//! the moment of resume never serves an expired certificate over SDS (serving nothing for
//! a while is fine):
//!
//! - Whole host (SPIRE server and agent, Steeple, an Envoy mTLS pair) resumed at once:
//!   Steeple serves fresh certificates within 30 s, both Envoys hold one valid now, and a
//!   request through the pair succeeds again over a new connection and a full mTLS
//!   handshake (a pooled connection or a resumed TLS session would not look at the
//!   certificates, so neither counts).
//! - Steeple alone suspended while SPIRE went on rotating: it catches up to the SPIRE
//!   agent's current SVID within 10 s.
//! - The SPIRE server still unreachable for 5 s after resume (the network not back yet):
//!   meanwhile Steeple withdraws its expired SVID, and serves a fresh one once SPIRE is.
//!
//! A suspend is emulated by freezing the processes with SIGSTOP and resuming them with
//! SIGCONT. That does wake every process with all its deadlines passed at once, to be
//! handled in whatever order its runtime picks. What it cannot show:
//! - SIGSTOP is not a suspend. CLOCK_MONOTONIC keeps running while a process is stopped,
//!   so every monotonic timer (tokio's, Go's) is already due at SIGCONT and fires at once.
//!   In a real suspend CLOCK_MONOTONIC stops too (only CLOCK_REALTIME and CLOCK_BOOTTIME
//!   advance): a timer armed before it still has its whole remainder to run after resume,
//!   though the wall-clock deadline it stood for has passed. Code that learns of expiry
//!   from a monotonic sleep alone passes here and still misbehaves after a real suspend.
//! - A real wall-clock jump cannot be injected: SPIRE is Go, which reads the clock through
//!   the vDSO (no LD_PRELOAD hook such as libfaketime takes), and setting the host clock
//!   needs CAP_SYS_TIME and would move every other process on the machine.
//! - Only workload SVIDs expire: the SPIRE agent's own SVID lives 1 h and the CA 168 h (the
//!   harness's production-like settings). An agent whose own SVID expired would need
//!   re-attestation, which a join token cannot do.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use steeple_e2e::Suite;
use steeple_e2e::process::tail;
use steeple_e2e::sds_client;
use steeple_e2e::suite::MtlsPair;

mod pair;
mod support;

use pair::Handshake;
use support::{Frozen, assert_alive, leaf, steeple_leaf, steeple_lines, unix_now};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";
const WORKLOAD: &str = "spiffe://example.org/sleeper";
/// X.509-SVID lifetime: every certificate is dead 20 s after issue.
const TTL: &str = "20s";
/// Longer than the TTL: whatever anyone held when frozen has expired at resume.
const FREEZE: Duration = Duration::from_secs(30);
/// From resume (or from the SPIRE server's return) to everything fresh again.
const RECOVERY: Duration = Duration::from_secs(30);
/// From resume to Steeple serving the SPIRE agent's current SVID.
const CATCH_UP: Duration = Duration::from_secs(10);
/// How long the SPIRE server stays unreachable after the rest has resumed.
const UNREACHABLE: Duration = Duration::from_secs(5);
/// Between two polls.
const POLL: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_host_suspend_past_every_ttl_recovers_without_restart() -> anyhow::Result<()> {
    let suite = Suite::with_spire(TTL, &[SERVER, CLIENT])?;
    let sds = suite.steeple.sds_socket().to_owned();
    sds_client::wait_for(&sds, &[SERVER, CLIENT, "ROOTCA"], Duration::from_secs(60)).await?;
    let pair = suite.mtls_pair(SERVER, CLIENT, "ok").await?;
    pair::one_connection_per_request(&pair).await?;
    let steeple_pid = suite.steeple.pid();

    let mut frozen = Frozen::freeze(&[
        ("spire-server", spire_pid(suite.spire.server_pid())?),
        ("spire-agent", spire_pid(suite.spire.agent_pid())?),
        ("steeple", steeple_pid),
        ("envoy server", pair.server.pid()),
        ("envoy client", pair.client.pid()),
    ])?;
    tokio::time::sleep(FREEZE).await;
    frozen.thaw()?;
    let recovery = recover(&pair, &sds).await.with_context(|| logs(&suite))?;
    eprintln!("whole-host suspend: {recovery:?}");
    assert_alive(steeple_pid, suite.steeple.pid(), &suite.steeple.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_steeple_catches_up_with_spire_rotation() -> anyhow::Result<()> {
    let suite = Suite::with_spire(TTL, &[WORKLOAD])?;
    let sds = suite.steeple.sds_socket().to_owned();
    sds_client::wait_for(&sds, &[WORKLOAD], Duration::from_secs(60)).await?;
    let mut steeple = sds_client::connect(&sds);
    let mut spire = sds_client::connect(suite.spire.agent_socket());
    let held = steeple_leaf(&mut steeple, WORKLOAD)
        .await?
        .context("Steeple serves no SVID before the freeze")?;
    let steeple_pid = suite.steeple.pid();

    let mut frozen = Frozen::freeze(&[("steeple", steeple_pid)])?;
    tokio::time::sleep(FREEZE).await;
    // SPIRE went on: the agent serves a newer SVID, and the one Steeple holds is dead.
    let rotated = leaf(&mut spire, WORKLOAD)
        .await?
        .context("the SPIRE agent serves no SVID")?;
    anyhow::ensure!(
        rotated.der != held.der && held.not_after < unix_now(),
        "SPIRE did not rotate past Steeple's SVID during the freeze"
    );
    frozen.thaw()?;
    let resumed = Instant::now();
    loop {
        let served = steeple_leaf(&mut steeple, WORKLOAD).await;
        let served = served.with_context(|| format!("{:?} after resume", resumed.elapsed()));
        let served = served.with_context(|| logs(&suite))?;
        if served.is_some() && served == leaf(&mut spire, WORKLOAD).await? {
            break;
        }
        anyhow::ensure!(
            resumed.elapsed() < CATCH_UP,
            "Steeple did not serve SPIRE's current SVID within {CATCH_UP:?} of resume{}",
            logs(&suite)
        );
        tokio::time::sleep(POLL / 2).await;
    }
    eprintln!(
        "steeple-only suspend: caught up with SPIRE {:?} after resume",
        resumed.elapsed()
    );
    assert_alive(steeple_pid, suite.steeple.pid(), &suite.steeple.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_before_the_spire_server_is_reachable_serves_nothing_expired() -> anyhow::Result<()>
{
    let suite = Suite::with_spire(TTL, &[WORKLOAD])?;
    let sds = suite.steeple.sds_socket().to_owned();
    sds_client::wait_for(&sds, &[WORKLOAD], Duration::from_secs(60)).await?;
    let steeple_pid = suite.steeple.pid();

    let mut server = Frozen::freeze(&[("spire-server", spire_pid(suite.spire.server_pid())?)])?;
    let mut host = Frozen::freeze(&[
        ("spire-agent", spire_pid(suite.spire.agent_pid())?),
        ("steeple", steeple_pid),
    ])?;
    tokio::time::sleep(FREEZE).await;
    host.thaw()?;
    let resumed = Instant::now();
    // Every fetch of the window, not just the first bad one: an expired SVID served once
    // right at resume is a wake-up race, served all along it is never withdrawn.
    let mut steeple = sds_client::connect(&sds);
    let (mut fetches, mut expired) = (0, Vec::new());
    while resumed.elapsed() < UNREACHABLE {
        let asked_at = unix_now();
        if let Some(leaf) = leaf(&mut steeple, WORKLOAD).await?
            && leaf.expired_before(asked_at)
        {
            expired.push((resumed.elapsed(), asked_at - leaf.not_after));
        }
        fetches += 1;
        tokio::time::sleep(POLL).await;
    }
    if let (Some(first), Some(last)) = (expired.first(), expired.last()) {
        anyhow::bail!(
            "while the SPIRE server was unreachable, Steeple served an expired {WORKLOAD} on \
             {} of {fetches} fetches, from {:?} after resume ({} s past notAfter) to {:?} \
             ({} s past){}",
            expired.len(),
            first.0,
            first.1,
            last.0,
            last.1,
            logs(&suite)
        );
    }
    server.thaw()?;
    let back = Instant::now();
    loop {
        let served = steeple_leaf(&mut steeple, WORKLOAD).await;
        let served = served.with_context(|| format!("{:?} after SPIRE's return", back.elapsed()));
        let served = served.with_context(|| logs(&suite))?;
        if served.is_some_and(|l| l.valid_at(unix_now())) {
            break;
        }
        anyhow::ensure!(
            back.elapsed() < RECOVERY,
            "no fresh SVID within {RECOVERY:?} of the SPIRE server's return{}",
            logs(&suite)
        );
        tokio::time::sleep(POLL).await;
    }
    eprintln!(
        "resume before SPIRE: {fetches} fetches in {UNREACHABLE:?}, none expired; fresh {:?} after SPIRE's return",
        back.elapsed()
    );
    assert_alive(steeple_pid, suite.steeple.pid(), &suite.steeple.logs())
}

/// How long after resume each sign of recovery first showed.
#[derive(Debug, Default)]
struct Recovery {
    /// Steeple served certificates valid now for both IDs.
    sds_fresh: Option<Duration>,
    /// Both Envoys hold (`/certs`) a certificate valid now.
    envoys_fresh: Option<Duration>,
    /// A request through the pair answered 200 over a full mTLS handshake.
    request_ok: Option<Duration>,
    /// Before that: requests that answered 200 over a resumed TLS session, requests that
    /// failed, and the last failure.
    resumed_ok: u32,
    failed: u32,
    last_failure: Option<String>,
    /// SDS fetches after resume; each one that served a certificate was checked.
    fetches: u32,
}

/// Polls from resume until everything has recovered (at most [`RECOVERY`]), failing at
/// the first expired certificate Steeple serves.
async fn recover(pair: &MtlsPair, sds: &std::path::Path) -> anyhow::Result<Recovery> {
    let resumed = Instant::now();
    let mut client = sds_client::connect(sds);
    let mut seen = Recovery::default();
    while seen.request_ok.is_none() || seen.envoys_fresh.is_none() || seen.sds_fresh.is_none() {
        anyhow::ensure!(
            resumed.elapsed() < RECOVERY,
            "not recovered within {RECOVERY:?} of resume: {seen:?}"
        );
        let mut fresh = true;
        for id in [SERVER, CLIENT] {
            let served = steeple_leaf(&mut client, id).await;
            let served = served.with_context(|| format!("{:?} after resume", resumed.elapsed()))?;
            seen.fetches += 1;
            fresh &= served.is_some_and(|leaf| leaf.valid_at(unix_now()));
        }
        if fresh {
            seen.sds_fresh.get_or_insert(resumed.elapsed());
        }
        if seen.envoys_fresh.is_none()
            && pair::holds_valid(&pair.server, SERVER).await
            && pair::holds_valid(&pair.client, CLIENT).await
        {
            seen.envoys_fresh = Some(resumed.elapsed());
        }
        if seen.request_ok.is_none() {
            match pair::request(pair).await {
                Ok(Handshake::Full) => seen.request_ok = Some(resumed.elapsed()),
                Ok(Handshake::Resumed) => seen.resumed_ok += 1,
                Err(e) => {
                    seen.failed += 1;
                    seen.last_failure = Some(format!("{e:#}"));
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(seen)
}

/// A SPIRE process id, which the harness knows while the process runs.
fn spire_pid(pid: Option<u32>) -> anyhow::Result<u32> {
    pid.context("a SPIRE process is not running")
}

/// Steeple's and the SPIRE agent's last log lines, for failure messages.
fn logs(suite: &Suite) -> String {
    format!(
        "\n--- steeple ---\n{}\n--- spire agent ---\n{}",
        steeple_lines(&suite.steeple.logs(), 30),
        tail(&suite.spire.agent_logs(), 15)
    )
}
