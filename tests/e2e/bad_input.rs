//! Garbage, oversized and out-of-order SDS requests get a gRPC error or are ignored, as
//! the protocol says; memory stays bounded; other streams keep being served.

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use steeple_e2e::{Suite, sds_client};
use tokio::io::AsyncWriteExt;

const WORKLOAD: &str = "spiffe://example.org/workload";
const LATE: &str = "spiffe://example.org/late";

async fn one_shot(
    client: &mut sds_client::SdsClient,
    request: DiscoveryRequest,
) -> Result<Option<()>, tonic::Status> {
    let mut stream = client
        .stream_secrets(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
        Ok(message) => message.map(|m| m.map(|_| ())),
        Err(_) => Ok(None), // ignored: no answer, stream still open
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_alone_and_memory_stays_bounded() -> anyhow::Result<()> {
    let suite = Suite::with_spire("1h", &[WORKLOAD])?;
    let sds = suite.steeple.sds_socket();
    sds_client::wait_for(sds, &["default"], Duration::from_secs(60)).await?;

    // A healthy stream that waits for a name that does not exist yet.
    let mut healthy_client = sds_client::connect(sds);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(sds_client::request(&[LATE])).await?;
    let mut healthy = healthy_client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();

    let mut client = sds_client::connect(sds);
    let ten_thousand: Vec<String> = (0..10_000).map(|i| format!("name-{i}")).collect();
    let names: Vec<&str> = ten_thousand.iter().map(String::as_str).collect();
    let err = one_shot(&mut client, sds_client::request(&names))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let huge = "n".repeat(1024 * 1024);
    let err = one_shot(&mut client, sds_client::request(&[&huge]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    let mut foreign = sds_client::request(&["default"]);
    foreign.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    assert_eq!(
        one_shot(&mut client, foreign).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    // Out of order: an ACK and a NACK for nonces never sent are ignored, not answered.
    let mut stale_ack = sds_client::request(&[LATE]);
    stale_ack.response_nonce = "424242".into();
    assert_eq!(one_shot(&mut client, stale_ack).await?, None);
    let mut early_nack = sds_client::request(&[LATE]);
    early_nack.response_nonce = "7".into();
    early_nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "nope".into(),
        details: vec![],
    });
    assert_eq!(one_shot(&mut client, early_nack).await?, None);

    // Garbage bytes and a broken HTTP/2 connection, many times over; RSS must not climb.
    let rss_before = suite.steeple.rss_kib()?;
    for round in 0..300 {
        let mut raw = tokio::net::UnixStream::connect(sds).await?;
        let junk: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ round as u8)
            .collect();
        if round % 2 == 0 {
            raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        }
        let _ = raw.write_all(&junk).await;
        drop(raw);
        let _ = one_shot(&mut client, sds_client::request(&names)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = suite.steeple.rss_kib()?;
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB under bad input"
    );

    // Everything else still works: a fetch, and the healthy stream gets its secret.
    sds_client::fetch(&mut client, &["default", "ROOTCA"]).await?;
    suite
        .spire
        .create_entry(LATE, &suite.uid_selector(), None)?;
    let response = tokio::time::timeout(Duration::from_secs(60), healthy.message()).await??;
    let secrets = sds_client::decode(&response.expect("stream open"))?;
    assert_eq!(secrets[0].name, LATE);
    drop(tx);
    Ok(())
}
