//! Two Envoys do mTLS with SPIRE-issued SVIDs they get only through Steeple's SDS, and a
//! client whose SPIFFE ID or trust domain is not allowed is refused.

use std::time::Duration;

use steeple_e2e::Suite;
use steeple_e2e::bootstrap::{TlsNames, mtls_client};
use steeple_e2e::sds_client::{self, assert_not_in_logs};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";
const INTRUDER: &str = "spiffe://example.org/intruder";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_do_mtls_with_svids_served_by_steeple_and_refuse_others() -> anyhow::Result<()> {
    let suite = Suite::with_spire("1h", &[SERVER, CLIENT, INTRUDER])?;
    let sds = suite.steeple.sds_socket();
    let wanted = [SERVER, CLIENT, INTRUDER, "ROOTCA"];
    let served = sds_client::wait_for(sds, &wanted, Duration::from_secs(60)).await?;
    let pair = suite.mtls_pair(SERVER, CLIENT, "hello").await?;
    let (status, body) = suite.eventually_ok(pair.client_port).await?;
    assert_eq!((status, body.as_str()), (200, "hello"));
    let server_stat = |name: &str| format!("listener.127.0.0.1_{}.ssl.{name}", pair.server_port);

    // Same trust domain, an ID the server does not accept: the handshake fails.
    let intruder_port = suite.port()?;
    let intruder = TlsNames {
        certificate: INTRUDER,
        validation: Some("ROOTCA"),
        peer_id: SERVER,
    };
    let intruder_yaml = mtls_client(
        suite.port()?,
        intruder_port,
        pair.server_port,
        sds,
        &intruder,
    );
    let _intruder = suite.envoy(&intruder_yaml)?;
    suite.eventually_status(intruder_port, 503).await?;
    let refused_san = pair.server.counter(&server_stat("fail_verify_san")).await?;
    assert!(
        refused_san >= 1,
        "the server did not refuse the intruder's SAN"
    );

    // Another trust domain (a `steeple dev` CA) with the accepted path: refused too. The
    // foreign client accepts any server, so the refusal seen is the server's.
    let foreign = suite.steeple_dev("example.org.evil", "spiffe://example.org.evil/client")?;
    let foreign_port = suite.port()?;
    let foreign_names = TlsNames {
        certificate: "default",
        validation: None,
        peer_id: SERVER,
    };
    let foreign_yaml = mtls_client(
        suite.port()?,
        foreign_port,
        pair.server_port,
        foreign.sds_socket(),
        &foreign_names,
    );
    let _foreign = suite.envoy(&foreign_yaml)?;
    suite.eventually_status(foreign_port, 503).await?;
    let refused_ca = pair
        .server
        .counter(&server_stat("fail_verify_error"))
        .await?;
    assert!(
        refused_ca >= 1,
        "the server did not refuse the foreign trust domain"
    );

    // The canary: private keys Steeple served never appear in its logs.
    let keys: Vec<Vec<u8>> = served.iter().filter_map(sds_client::secret_bytes).collect();
    assert_eq!(keys.len(), 3);
    assert_not_in_logs(&keys, &suite.steeple.logs())?;
    Ok(())
}
