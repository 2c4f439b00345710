//! SPIRE agent stopped for 35 s and started again: Steeple keeps serving its last good
//! SVIDs (to running and to newly started Envoys), no request fails, and it follows the
//! Workload API again once the agent is back.

use std::time::{Duration, Instant};

use steeple_e2e::bootstrap::{TlsNames, mtls_client};
use steeple_e2e::{Suite, http_get, sds_client};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";
const LATE: &str = "spiffe://example.org/late";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steeple_serves_through_a_spire_agent_outage_and_recovers() -> anyhow::Result<()> {
    let mut suite = Suite::with_spire("1h", &[SERVER, CLIENT])?;
    let sds = suite.steeple.sds_socket().to_owned();
    sds_client::wait_for(&sds, &[SERVER, CLIENT, "ROOTCA"], Duration::from_secs(60)).await?;
    let pair = suite.mtls_pair(SERVER, CLIENT, "ok").await?;
    let (server_port, client_port) = (pair.server_port, pair.client_port);
    let client_names = TlsNames {
        certificate: CLIENT,
        validation: Some("ROOTCA"),
        peer_id: SERVER,
    };

    suite.spire.stop_agent()?;
    let stopped = Instant::now();
    let mut late_client = None;
    while stopped.elapsed() < Duration::from_secs(35) {
        let (status, _) = http_get(client_port, "/").await?;
        assert_eq!(
            status,
            200,
            "request failed {:?} into the outage",
            stopped.elapsed()
        );
        // Steeple itself still answers with the last good SVIDs...
        let mut client = sds_client::connect(&sds);
        sds_client::fetch(&mut client, &[CLIENT, "ROOTCA"]).await?;
        // ...also to an Envoy that starts in the middle of the outage.
        if late_client.is_none() && stopped.elapsed() > Duration::from_secs(10) {
            let port = suite.port()?;
            let envoy = suite.envoy(&mtls_client(
                suite.port()?,
                port,
                server_port,
                &sds,
                &client_names,
            ))?;
            late_client = Some((envoy, port));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, late_port) = late_client.as_ref().expect("started during the outage");
    let (status, _) = suite.eventually_ok(*late_port).await?;
    assert_eq!(status, 200);

    suite.spire.start_agent()?;
    suite
        .spire
        .create_entry(LATE, &suite.uid_selector(), None)?;
    sds_client::wait_for(&sds, &[LATE], Duration::from_secs(90)).await?;
    let (status, _) = http_get(client_port, "/").await?;
    assert_eq!(status, 200);
    Ok(())
}
