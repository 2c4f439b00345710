//! The SDS server over a real Unix socket with tonic's client.

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::authz::{Policy, Rule, SharedPolicy};
use crate::sds::{SdsService, serve};

type Client = SecretDiscoveryServiceClient<tonic::transport::Channel>;

struct Harness {
    store: Arc<SecretStore>,
    policy: SharedPolicy,
    client: Client,
    socket: std::path::PathBuf,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    start_with(Policy::new(Vec::new(), rustix::process::geteuid().as_raw())).await
}

async fn start_with(policy: Policy) -> Harness {
    start_configured(policy, |_| {}).await
}

async fn start_configured(policy: Policy, configure: impl FnOnce(&mut SdsSettings)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sds.sock");
    let store = Arc::new(SecretStore::new());
    let shutdown = CancellationToken::new();
    let listener = crate::uds::bind_socket(&socket, 0o600).unwrap();
    let mut s = (*settings()).clone();
    s.max_request_bytes = 16 * 1024;
    configure(&mut s);
    let policy = SharedPolicy::new(policy);
    let service = SdsService::new(store.clone(), s, policy.clone(), shutdown.clone());
    tokio::spawn(serve(listener, service, shutdown.clone()));
    let client = SecretDiscoveryServiceClient::new(crate::uds::lazy_channel(&socket));
    Harness {
        store,
        policy,
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
        .sync_source(&Source::Envelopes, vec![("later".into(), generic(b"v"))]);
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
    h.store
        .sync_source(&Source::Envelopes, vec![("a".into(), generic(b"v"))]);
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

    h.store
        .sync_source(&Source::Envelopes, vec![("a".into(), generic(b"w"))]);
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

fn own_uid_rule(resources: &[&str]) -> Rule {
    Rule {
        uids: vec![rustix::process::geteuid().as_raw()],
        gids: Vec::new(),
        exe: None,
        spiffe_ids: vec![],
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
    }
}

#[tokio::test]
async fn every_requested_name_is_authorized_against_the_caller() {
    let me = rustix::process::geteuid().as_raw();
    let mut h = start_with(Policy::new(vec![own_uid_rule(&["app/*"])], me)).await;
    h.store.sync_source(
        &Source::Envelopes,
        vec![
            ("app/token".into(), generic(b"v")),
            ("default".into(), generic(b"k")),
        ],
    );
    let ok = h
        .client
        .fetch_secrets(req(&["app/token"], ""))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().resources.len(), 1);

    let denied = h
        .client
        .fetch_secrets(req(&["app/token", "default"], ""))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("\"default\""),
        "{}",
        denied.message()
    );

    let all = h
        .client
        .fetch_secrets(req(&[], ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.resources.len(),
        1,
        "a wildcard fetch shows only what is granted"
    );

    let (_tx, mut stream) = open(&mut h.client, "default").await;
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    h.shutdown.cancel();
}

#[tokio::test]
async fn a_caller_no_rule_matches_gets_nothing() {
    let other = Rule {
        uids: vec![rustix::process::geteuid().as_raw().wrapping_add(4242)],
        ..own_uid_rule(&["*"])
    };
    let mut h = start_with(Policy::new(vec![other], 0)).await;
    h.store
        .sync_source(&Source::Envelopes, vec![("a".into(), generic(b"v"))]);
    // Its connection is closed as it is accepted: no HTTP/2, no task, no stream.
    let err = h.client.fetch_secrets(req(&["a"], "")).await.unwrap_err();
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
        "{err:?}"
    );
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let streamed = h
        .client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    assert!(streamed.is_err(), "a stream was opened");
    h.shutdown.cancel();
}

#[tokio::test]
async fn a_reloaded_policy_reaches_streams_already_open() {
    let me = rustix::process::geteuid().as_raw();
    let mut h = start_with(Policy::new(vec![own_uid_rule(&["app/*", "keep"])], me)).await;
    h.store.sync_source(
        &Source::Envelopes,
        vec![
            ("app/token".into(), generic(b"v")),
            ("keep".into(), generic(b"k")),
        ],
    );
    let (_revoked_tx, mut revoked) = open(&mut h.client, "app/token").await;
    let (_kept_tx, mut kept) = open(&mut h.client, "keep").await;
    for stream in [&mut revoked, &mut kept] {
        let first = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
        assert_eq!(first.unwrap().unwrap().unwrap().resources.len(), 1);
    }

    h.policy
        .replace(Policy::new(vec![own_uid_rule(&["keep"])], me));
    let err = tokio::time::timeout(Duration::from_secs(5), revoked.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("\"app/token\""), "{}", err.message());

    // The stream whose names are still granted stays open and gets the next update.
    h.store.sync_source(
        &Source::Envelopes,
        vec![
            ("app/token".into(), generic(b"v")),
            ("keep".into(), generic(b"k2")),
        ],
    );
    let update = tokio::time::timeout(Duration::from_secs(5), kept.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(update.resources.len(), 1);
    let denied = h.client.fetch_secrets(req(&["app/token"], "")).await;
    assert_eq!(denied.unwrap_err().code(), tonic::Code::PermissionDenied);
    h.shutdown.cancel();
}

#[tokio::test]
async fn an_unused_connection_is_closed_and_one_carrying_a_stream_is_not() {
    let me = rustix::process::geteuid().as_raw();
    let idle = Duration::from_millis(300);
    let mut h = start_configured(Policy::new(Vec::new(), me), |s| {
        s.connections.idle_timeout = idle;
    })
    .await;
    h.store
        .sync_source(&Source::Envelopes, vec![("a".into(), generic(b"v1"))]);
    let (_tx, mut stream) = open(&mut h.client, "a").await;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert_eq!(first.unwrap().unwrap().unwrap().resources.len(), 1);

    // A client that speaks HTTP/2 and then uses nothing is closed.
    let mut unused = tokio::net::UnixStream::connect(&h.socket).await.unwrap();
    unused
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while matches!(
            tokio::io::AsyncReadExt::read(&mut unused, &mut sink).await,
            Ok(n) if n > 0
        ) {}
    })
    .await;
    assert!(closed.is_ok(), "the unused connection stayed open");
    assert!(started.elapsed() >= idle);

    // The stream, several idle timeouts old, still gets the next update.
    h.store
        .sync_source(&Source::Envelopes, vec![("a".into(), generic(b"v2"))]);
    let update = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert_eq!(update.unwrap().unwrap().unwrap().resources.len(), 1);
    h.shutdown.cancel();
}
