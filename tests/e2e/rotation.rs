//! SPIRE rotates short-lived X.509-SVIDs; Envoy picks each new certificate up over
//! Steeple's SDS without a restart, and requests keep succeeding across rotations.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use steeple_e2e::{Suite, http_get, sds_client};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_svid_rotation_without_failed_requests() -> anyhow::Result<()> {
    // 20 s SVIDs: SPIRE 1.15 backdates them (30 s valid) and rotates at half life, so
    // about every 5 s.
    let suite = Suite::with_spire("20s", &[SERVER, CLIENT])?;
    sds_client::wait_for(
        suite.steeple.sds_socket(),
        &[SERVER, CLIENT, "ROOTCA"],
        Duration::from_secs(60),
    )
    .await?;
    let mut pair = suite.mtls_pair(SERVER, CLIENT, "ok").await?;
    let client_port = pair.client_port;

    let mut serials = BTreeSet::new();
    let mut requests = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(35) {
        let (status, _) = http_get(client_port, "/").await?;
        assert_eq!(status, 200, "request {requests} failed during rotation");
        requests += 1;
        serials.extend(pair.client.certificate_serials(CLIENT).await?);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        serials.len() >= 3,
        "Envoy saw {} client certificate(s) in 35 s; expected at least two rotations",
        serials.len()
    );
    pair.client.ensure_running()?;
    assert!(requests > 50);
    Ok(())
}
