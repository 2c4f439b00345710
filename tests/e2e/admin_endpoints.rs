//! The admin listener of a running agent (`steeple dev`, `[admin] listen`): `/readyz`
//! says 503 naming what is missing while a configured envelope is not served and 200 once
//! it is; `/metrics` shows the SVID's expiry, an open SDS stream and its pushes, the
//! envelope resolves by provider, the build and the process's resources — and never a
//! secret; `/healthz` is 200; anything else is 404 or 405. With `[aws]` and a JWT-SVID
//! configured, `/readyz` names the AWS credentials while STS is down (a real moto, stopped)
//! and is 200 once it answers, while `/healthz` stays 200 throughout.

use std::time::Duration;

use base64::Engine as _;
use steeple_e2e::http::{get, request};
use steeple_e2e::moto::Moto;
use steeple_e2e::sds_client;
use steeple_e2e::steeple::{seal_local, write_rows};
use steeple_e2e::{SteepleProcess, free_port};
use tokio_stream::StreamExt as _;

const GOOD: &str = "payments/api-token";
const LATE: &str = "payments/late-token";
const CANARY: &str = "canary-admin-metrics-0001";
const CANARY_LATE: &str = "canary-admin-metrics-0002";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_metrics_follow_the_agent() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-admin-")
        .tempdir_in("/tmp")?;
    let envelopes = dir.path().join("envelopes");
    std::fs::create_dir_all(&envelopes)?;
    let master = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let good = seal_local(&master, GOOD, "", CANARY)?;
    // A row for a provider that is not configured: never served until it is replaced.
    let mut late = seal_local(&master, LATE, "", CANARY_LATE)?;
    let sealed_late = late.clone();
    late["provider"] = "vault_transit".into();
    let rows = envelopes.join("rows.json");
    write_rows(&rows, &[good, late])?;
    let port = free_port()?;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\n\
         [envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
         local_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n",
        envelopes.display()
    );
    let steeple = SteepleProcess::dev_with(
        &dir.path().join("steeple"),
        &config,
        &[("STEEPLE_LOCAL_MASTER_KEY", master.as_str())],
    )?;
    sds_client::wait_for(steeple.sds_socket(), &[GOOD], Duration::from_secs(30)).await?;

    assert_eq!(get(port, "/healthz").await?, (200, "ok\n".to_owned()));
    let (status, body) = get(port, "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("1 configured envelope(s) not served"),
        "{body}"
    );

    // An open StreamSecrets stream, with its first response received.
    let mut client = sds_client::connect(steeple.sds_socket());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(sds_client::request(&[GOOD])).await?;
    let mut stream = client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await?;
    anyhow::ensure!(matches!(first, Some(Ok(_))), "no first SDS response");

    let (status, metrics) = get(port, "/metrics").await?;
    assert_eq!(status, 200);
    for expected in [
        "steeple_sds_streams{protocol=\"sotw\"} 1",
        "steeple_envelopes{state=\"served\"} 1",
        "steeple_envelopes{state=\"unserved\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == expected),
            "{expected} in\n{metrics}"
        );
    }
    let build_info = format!(
        "steeple_build_info{{version=\"{}\",features=\"",
        env!("CARGO_PKG_VERSION")
    );
    for prefix in [
        "steeple_svid_expiry_timestamp_seconds{spiffe_id=\"spiffe://",
        "steeple_envelope_resolve_duration_seconds_count{provider=\"local\",outcome=\"ok\"} ",
        "steeple_sds_responses_total{protocol=\"sotw\"} ",
        &build_info,
        "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        let line = metrics.lines().find(|l| l.starts_with(prefix));
        let value: f64 = line
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(value >= 1.0, "{prefix}… ≥ 1 in\n{metrics}");
    }
    assert!(
        metrics.contains("\nprocess_cpu_seconds_total "),
        "process_cpu_seconds_total in\n{metrics}"
    );
    assert!(!metrics.contains("canary"), "a secret in /metrics");

    // The row fixed: ready.
    write_rows(
        &rows,
        &[seal_local(&master, GOOD, "", CANARY)?, sealed_late],
    )?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(port, "/readyz").await?;
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not ready 30 s after the row was fixed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stream);
    drop(tx);

    assert_eq!(get(port, "/nope").await?.0, 404);
    assert_eq!(request(port, "POST", "/metrics", &[]).await?.status, 405);
    sds_client::assert_not_in_logs(
        &[CANARY.as_bytes().to_vec(), CANARY_LATE.as_bytes().to_vec()],
        &steeple.logs(),
    )?;
    Ok(())
}

/// `/readyz` until it answers 200 (at most `timeout`); its body then.
async fn ready_within(port: u16, timeout: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (status, body) = get(port, "/readyz").await?;
        if status == 200 {
            return Ok(body);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not ready after {timeout:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_aws_credentials_until_sts_answers() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-admin-aws-")
        .tempdir_in("/tmp")?;
    // STS is down from the start: moto started (for its port) and stopped.
    let mut sts = Moto::start().await?;
    sts.stop()?;
    let port = free_port()?;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\n\
         [[jwt_svids]]\naudience = \"upstream.example.org\"\n\
         [aws]\nenabled = true\nrole_arn = \"arn:aws:iam::123456789012:role/payments-api\"\n\
         sts_endpoint = \"{}\"\nregion = \"us-east-1\"\n",
        sts.endpoint()
    );
    let steeple = SteepleProcess::dev_with(&dir.path().join("steeple"), &config, &[])?;
    let names = ["default", "jwt-svid:upstream.example.org"];
    sds_client::wait_for(steeple.sds_socket(), &names, Duration::from_secs(30)).await?;

    // The SVID and the JWT-SVID are held; the credentials are not, and /readyz says so.
    for _ in 0..3 {
        let (status, body) = get(port, "/readyz").await?;
        assert_eq!(status, 503, "{body}");
        assert_eq!(
            body, "not ready: AWS credentials (aws-credentials) not held\n",
            "only the credentials are missing"
        );
        assert_eq!(get(port, "/healthz").await?, (200, "ok\n".to_owned()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // STS answers: ready, and the credentials are served.
    sts.start_again().await?;
    assert_eq!(
        ready_within(port, Duration::from_secs(60)).await?,
        "ready\n"
    );
    sds_client::wait_for(
        steeple.sds_socket(),
        &["aws-credentials"],
        Duration::from_secs(5),
    )
    .await?;
    Ok(())
}
