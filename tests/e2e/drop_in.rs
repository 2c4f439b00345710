//! Drop-in: the Envoy bootstrap that works against SPIRE agent's built-in SDS (resource
//! names `default`, `ROOTCA`, `ALL`) works against Steeple unchanged — only the socket
//! path differs.

use std::time::Duration;

use steeple_e2e::{Suite, sds_client};

const WORKLOAD: &str = "spiffe://example.org/workload";
const BOOTSTRAP: &str = include_str!("../../deploy/envoy/dev-bootstrap.yaml");

/// The shipped bootstrap with its fixed ports moved to free ones.
fn bootstrap(
    suite: &Suite,
    socket: &std::path::Path,
    validation: &str,
) -> anyhow::Result<(String, u16)> {
    let (admin, client, server) = (suite.port()?, suite.port()?, suite.port()?);
    let yaml = BOOTSTRAP
        .replace("port_value: 9901", &format!("port_value: {admin}"))
        .replace("port_value: 10080", &format!("port_value: {client}"))
        .replace("port_value: 10443", &format!("port_value: {server}"))
        .replace("name: ROOTCA", &format!("name: {validation}"))
        .replace("__SDS_SOCKET__", &socket.display().to_string())
        .replace("__SPIFFE_ID__", WORKLOAD);
    Ok((yaml, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spire_sds_bootstrap_works_against_steeple_unchanged() -> anyhow::Result<()> {
    let suite = Suite::with_spire("1h", &[WORKLOAD])?;
    sds_client::wait_for(
        suite.steeple.sds_socket(),
        &["default", "ROOTCA", "ALL"],
        Duration::from_secs(60),
    )
    .await?;
    for validation in ["ROOTCA", "ALL"] {
        let mut statuses = Vec::new();
        for socket in [suite.spire.agent_socket(), suite.steeple.sds_socket()] {
            let (yaml, port) = bootstrap(&suite, socket, validation)?;
            let _envoy = suite.envoy(&yaml)?;
            let (status, body) = suite.eventually_ok(port).await?;
            assert_eq!(body, "hello over SPIFFE mTLS\n");
            statuses.push(status);
        }
        assert_eq!(
            statuses,
            [200, 200],
            "with {validation}: SPIRE agent, then Steeple"
        );
    }
    Ok(())
}
