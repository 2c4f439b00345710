//! Fault: the SPIRE server down past the SVIDs' rotation point. Steeple keeps serving the
//! last good SVID, raises the alarm before it expires (a WARN naming the SPIFFE ID, and
//! `steeple_svid_rotation_overdue` = 1 on `/metrics`), stops serving it once it expires —
//! never an expired certificate — and follows the new SVID once the server is back.

use std::time::{Duration, SystemTime};

use steeple_e2e::http::get;
use steeple_e2e::sds_client;
use steeple_e2e::{Suite, free_port};

const WORKLOAD: &str = "spiffe://example.org/outage";
/// X.509-SVID lifetime: SPIRE rotates at 12 s, Steeple alarms at 16 s, expiry at 24 s.
const TTL: &str = "24s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrotated_svid_alarms_then_expires_and_recovers() -> anyhow::Result<()> {
    let admin = free_port()?;
    let mut suite = Suite::with_spire_config(
        TTL,
        &[WORKLOAD],
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
    )?;
    let sds = suite.steeple.sds_socket().to_owned();
    sds_client::wait_for(&sds, &[WORKLOAD], Duration::from_secs(60)).await?;
    // Start the outage right after a rotation, so the served SVID is a fresh one.
    let first = expiry(admin).await?;
    wait_until(Duration::from_secs(40), "a rotated SVID", || async {
        Ok(expiry(admin).await? != first)
    })
    .await?;
    suite.spire.stop_server()?;
    let not_after = expiry(admin).await?;

    let overdue = format!("steeple_svid_rotation_overdue{{spiffe_id=\"{WORKLOAD}\"}} 1");
    wait_until(Duration::from_secs(30), "the overdue alarm", || async {
        let logs = suite.steeple.logs();
        let warned = logs.lines().any(|l| {
            l.contains("not rotated past two thirds of its lifetime") && l.contains(WORKLOAD)
        });
        Ok(warned
            && get(admin, "/metrics")
                .await?
                .1
                .lines()
                .any(|l| l == overdue))
    })
    .await?;
    let alarmed_at = unix_now();
    assert!(
        alarmed_at < not_after,
        "the alarm came at {alarmed_at}, after expiry at {not_after}"
    );

    // Until expiry it is served; from expiry on, never.
    wait_until(
        Duration::from_secs(40),
        "the expired SVID withdrawn",
        || async {
            let mut client = sds_client::connect(&sds);
            let served = sds_client::fetch(&mut client, &[WORKLOAD])
                .await
                .is_ok_and(|secrets| !secrets.is_empty());
            if served {
                // Served now: it must not be expired (one second of slack for the fetch).
                anyhow::ensure!(
                    unix_now() <= not_after + 1,
                    "an expired SVID was served at {} (notAfter {not_after})",
                    unix_now()
                );
            }
            Ok(!served)
        },
    )
    .await?;
    let (status, body) = get(admin, "/readyz").await?;
    assert_eq!(status, 503, "{body}");

    suite.spire.start_server()?;
    if let Err(e) = sds_client::wait_for(&sds, &[WORKLOAD], Duration::from_secs(90)).await {
        anyhow::bail!(
            "{e:#}\n--- steeple ---\n{}\n--- spire agent ---\n{}",
            tail(&suite.steeple.logs(), 25),
            tail(&suite.spire.agent_logs(), 25)
        );
    }
    let recovered = expiry(admin).await?;
    assert!(
        recovered > not_after,
        "the SVID served after recovery is not new"
    );
    let not_overdue = format!("steeple_svid_rotation_overdue{{spiffe_id=\"{WORKLOAD}\"}} 0");
    let metrics = get(admin, "/metrics").await?.1;
    assert!(metrics.lines().any(|l| l == not_overdue), "{metrics}");
    Ok(())
}

/// The workload SVID's notAfter from `/metrics` (0 when none is served).
async fn expiry(admin: u16) -> anyhow::Result<u64> {
    let prefix = format!("steeple_svid_expiry_timestamp_seconds{{spiffe_id=\"{WORKLOAD}\"}} ");
    let metrics = get(admin, "/metrics").await?.1;
    Ok(metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
