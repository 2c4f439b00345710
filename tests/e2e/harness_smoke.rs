//! The harness itself works against the real peers: SPIRE issues an X.509-SVID to this
//! process's uid over the Workload API and its own SDS and survives agent and server
//! restarts; Envoys start, report ready and answer on their admin API; the HTTP helpers
//! round-trip.

use std::time::Duration;

use steeple_e2e::{
    Envoy, RecordingUpstream, Spire, SpireOptions, current_uid, http, sds_client, wait_for,
};

const WORKLOAD: &str = "spiffe://example.org/harness";

/// Fetches this process's SVIDs with `spire-agent api fetch x509` until `spiffe_id` is among
/// them.
async fn fetch_svid(spire: &Spire, spiffe_id: &str) -> anyhow::Result<String> {
    wait_for(spiffe_id, Duration::from_secs(30), || async {
        let output = spire.agent_cli(&["api", "fetch", "x509"])?;
        anyhow::ensure!(output.contains(spiffe_id), "not yet issued: {output}");
        Ok(output)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spire_issues_svids_across_restarts() -> anyhow::Result<()> {
    let mut spire = Spire::start(SpireOptions::default())?;
    assert!(spire.agent_socket().as_os_str().len() < 108);
    let selector = format!("unix:uid:{}", current_uid());
    let entry = spire.create_entry(WORKLOAD, &selector, Some(600))?;
    assert!(!entry.is_empty());
    fetch_svid(&spire, WORKLOAD).await?;
    // SPIRE agent's own SDS (the benchmark baseline) is served on the same socket. (SPIRE
    // refuses "default" together with a SPIFFE ID in one request, hence two requests.)
    let timeout = Duration::from_secs(30);
    for names in [["default", "ROOTCA"], [WORKLOAD, "ALL"]] {
        let secrets = sds_client::wait_for(spire.agent_socket(), &names, timeout).await?;
        assert_eq!(secrets.len(), 2, "{names:?}");
    }

    spire.stop_agent()?;
    spire.start_agent()?;
    fetch_svid(&spire, WORKLOAD).await?;

    spire.stop_server()?;
    spire.start_server()?;
    let late = "spiffe://example.org/after-server-restart";
    spire.create_entry(late, &selector, None)?;
    fetch_svid(&spire, late).await?;

    spire.set_federated_bundle("other.org", &spire.bundle_pem()?)?;
    let bundles = spire.server_cli(&["bundle", "list"])?;
    assert!(bundles.contains("* other.org"), "{bundles}");
    spire.delete_federated_bundle("other.org")?;
    spire.delete_entry(&entry)?;

    assert!(spire.agent_logs().contains("Starting agent APIs"));
    assert!(!spire.server_logs().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_starts_and_answers_on_its_admin_api() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bootstrap = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
"#;
    let mut envoy = Envoy::start(bootstrap, dir.path())?;
    envoy.wait_ready(Duration::from_secs(30)).await?;
    assert_eq!(envoy.admin_get("/ready").await?.trim(), "LIVE");
    let stats = envoy.admin_get("/stats").await?;
    assert!(stats.contains("server.live"), "{stats}");
    assert_eq!(envoy.stat("server.live").await?, Some(1));

    // Two at once: each gets its own base id and admin port.
    let mut second = Envoy::start(bootstrap, dir.path())?;
    second.wait_ready(Duration::from_secs(30)).await?;
    assert_ne!(envoy.admin_port(), second.admin_port());
    Ok(())
}

#[tokio::test]
async fn recording_upstream_answers_and_records_headers() -> anyhow::Result<()> {
    let upstream = RecordingUpstream::start().await?;
    let response = http::request(upstream.port(), "GET", "/x", &[("X-Canary", "1")]).await?;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, RecordingUpstream::DEFAULT_BODY);
    assert_eq!(upstream.last_header("x-canary").as_deref(), Some("1"));
    assert_eq!(upstream.requests()[0].path, "/x");
    Ok(())
}
