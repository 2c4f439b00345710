//! The SDS server over a real Unix socket with tonic's client.

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::sds::{SdsService, serve};

type Client = SecretDiscoveryServiceClient<tonic::transport::Channel>;

struct Harness {
    store: Arc<SecretStore>,
    client: Client,
    socket: std::path::PathBuf,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sds.sock");
    let store = Arc::new(SecretStore::new());
    let shutdown = CancellationToken::new();
    let listener = crate::uds::bind_socket(&socket, 0o600).unwrap();
    let mut s = (*settings()).clone();
    s.max_request_bytes = 16 * 1024;
    let service = SdsService::new(store.clone(), s, shutdown.clone());
    tokio::spawn(serve(listener, service, shutdown.clone()));
    let client = SecretDiscoveryServiceClient::new(crate::uds::lazy_channel(&socket));
    Harness {
        store,
        client,
        socket,
        shutdown,
        _dir: dir,
    }
}

async fn open(
    client: &mut Client,
    name: &str,
) -> (
    tokio::sync::mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(req(&[name], "")).await.unwrap();
    let stream = client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

#[tokio::test]
async fn a_stream_receives_a_secret_once_it_exists() {
    let mut h = start().await;
    let (_tx, mut stream) = open(&mut h.client, "later").await;
    h.store
        .sync_source("t", vec![("later".into(), generic(b"v"))]);
    let r = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.resources.len(), 1);
    h.shutdown.cancel();
}

#[tokio::test]
async fn an_oversized_request_fails_alone_and_others_keep_being_served() {
    let mut h = start().await;
    h.store.sync_source("t", vec![("a".into(), generic(b"v"))]);
    let (_keep, mut healthy) = open(&mut h.client, "a").await;
    assert!(healthy.message().await.unwrap().is_some());

    let huge = "n".repeat(1024 * 1024);
    let (_tx, mut bad) = open(&mut h.client, &huge).await;
    let err = bad.message().await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument
        ),
        "{err:?}"
    );

    // Raw garbage on a fresh connection must not disturb anything either.
    let mut raw = tokio::net::UnixStream::connect(&h.socket).await.unwrap();
    raw.write_all(&[0xde; 4096]).await.unwrap();
    drop(raw);

    h.store.sync_source("t", vec![("a".into(), generic(b"w"))]);
    let update = tokio::time::timeout(Duration::from_secs(5), healthy.message())
        .await
        .unwrap();
    assert!(update.unwrap().is_some());
    let fetched = h
        .client
        .fetch_secrets(req(&["a"], ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.resources.len(), 1);
    h.shutdown.cancel();
}

#[tokio::test]
async fn fetch_of_an_unknown_name_is_not_found() {
    let mut h = start().await;
    let err = h
        .client
        .fetch_secrets(req(&["missing"], ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    h.shutdown.cancel();
}
