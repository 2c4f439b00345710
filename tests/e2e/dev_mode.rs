//! `steeple dev` — the README's first command — runs with nothing else installed: its
//! printed Envoy bootstrap gives a working mTLS hop, and its short-lived SVIDs rotate.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use steeple_e2e::bootstrap::dev_on_free_ports;
use steeple_e2e::suite::eventually_status;
use steeple_e2e::{Envoy, SteepleProcess, http_get};

const ID: &str = "spiffe://steeple.dev/workload";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_bootstrap_works_and_svids_rotate() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-dev-")
        .tempdir_in("/tmp")?;
    let dev = SteepleProcess::dev(dir.path(), "steeple.dev", ID, "6s")?;
    let (yaml, client) = dev_on_free_ports(&dev.printed_bootstrap()?)?;
    let envoy = Envoy::start(&yaml, dir.path())?;
    let (_, body) = eventually_status(client, 200).await?;
    assert_eq!(body, "hello over SPIFFE mTLS\n");

    let mut serials = BTreeSet::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(14) {
        let (status, _) = http_get(client, "/").await?;
        assert_eq!(status, 200);
        serials.extend(envoy.certificate_serials(ID).await?);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        serials.len() >= 3,
        "saw {} dev SVIDs in 14 s with a 6 s TTL",
        serials.len()
    );
    Ok(())
}
