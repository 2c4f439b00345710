//! Fault: Steeple itself killed with SIGKILL and restarted. Two Envoys doing mTLS with
//! SVIDs served by Steeple keep serving on their last secrets while it is gone (their SDS
//! connections drop), the restarted agent replaces the stale socket the killed one left,
//! and both Envoys' SDS streams come back to it.

use std::time::{Duration, Instant};

use steeple_e2e::{Envoy, SteepleProcess, Suite, http_get};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";
/// The SDS cluster of every harness bootstrap.
const SDS_ACTIVE: &str = "cluster.sds.upstream_cx_active";
const SDS_TOTAL: &str = "cluster.sds.upstream_cx_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_ride_out_a_killed_agent_and_reconnect_to_its_restart() -> anyhow::Result<()> {
    let mut suite = Suite::with_spire("1h", &[SERVER, CLIENT])?;
    let pair = suite.mtls_pair(SERVER, CLIENT, "hello").await?;
    assert_eq!(suite.eventually_ok(pair.client_port).await?.0, 200);
    for envoy in [&pair.server, &pair.client] {
        wait_stat(envoy, SDS_ACTIVE, 1).await?;
    }

    suite.steeple.kill()?;
    assert!(
        suite.steeple.sds_socket().exists(),
        "a SIGKILLed agent leaves its socket"
    );
    for envoy in [&pair.server, &pair.client] {
        wait_stat(envoy, SDS_ACTIVE, 0).await?;
    }
    // Meanwhile every request still succeeds on the secrets the Envoys hold.
    let outage = Instant::now();
    let mut requests = 0;
    while outage.elapsed() < Duration::from_secs(3) {
        let (status, body) = http_get(pair.client_port, "/").await?;
        assert_eq!((status, body.as_str()), (200, "hello"), "during the outage");
        requests += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let steeple_dir = suite.dir().join("steeple");
    suite.steeple = SteepleProcess::run(&steeple_dir, suite.spire.agent_socket(), "")?;
    for envoy in [&pair.server, &pair.client] {
        wait_stat(envoy, SDS_ACTIVE, 1).await?;
        let total = envoy.stat(SDS_TOTAL).await?.unwrap_or(0);
        assert!(total >= 2, "{SDS_TOTAL} = {total}: no new SDS connection");
    }
    assert_eq!(suite.eventually_ok(pair.client_port).await?.0, 200);
    assert!(requests >= 10, "only {requests} requests during the outage");
    Ok(())
}

/// Waits (at most 60 s: Envoy's gRPC reconnect backoff) until stat `name` is `value`.
async fn wait_stat(envoy: &Envoy, name: &str, value: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = envoy.stat(name).await?;
        if now == Some(value) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed {now:?}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
