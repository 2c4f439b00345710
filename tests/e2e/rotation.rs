//! SPIRE rotates short-lived X.509-SVIDs; Envoy picks each new certificate up over
//! Steeple's SDS without a restart, and requests keep succeeding across rotations.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use steeple_e2e::bootstrap::{TlsNames, mtls_client, mtls_server};
use steeple_e2e::{Suite, http_get, sds_client};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_svid_rotation_without_failed_requests() -> anyhow::Result<()> {
    // 20 s SVIDs: SPIRE agent rotates at half life, so about every 10 s.
    let suite = Suite::with_spire("20s", &[SERVER, CLIENT])?;
    let sds = suite.steeple.sds_socket();
    sds_client::wait_for(sds, &[SERVER, CLIENT, "ROOTCA"], Duration::from_secs(60)).await?;
    let server_port = suite.port()?;
    let server_names = TlsNames {
        certificate: SERVER,
        validation: Some("ROOTCA"),
        peer_id: CLIENT,
    };
    let _server = suite.envoy(&mtls_server(
        suite.port()?,
        server_port,
        sds,
        &server_names,
        "ok",
    ))?;
    let client_port = suite.port()?;
    let client_names = TlsNames {
        certificate: CLIENT,
        validation: Some("ROOTCA"),
        peer_id: SERVER,
    };
    let mut client = suite.envoy(&mtls_client(
        suite.port()?,
        client_port,
        server_port,
        sds,
        &client_names,
    ))?;
    suite.eventually_ok(client_port).await?;

    let mut serials = BTreeSet::new();
    let mut requests = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(35) {
        let (status, _) = http_get(client_port, "/").await?;
        assert_eq!(status, 200, "request {requests} failed during rotation");
        requests += 1;
        serials.extend(client.certificate_serials(CLIENT).await?);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        serials.len() >= 3,
        "Envoy saw {} client certificate(s) in 35 s; expected at least two rotations",
        serials.len()
    );
    client.ensure_running()?;
    assert!(requests > 50);
    Ok(())
}
