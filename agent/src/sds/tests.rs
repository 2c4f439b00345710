use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use steeple_plugin_api::SecretBytes;

use super::delta::DeltaStream;
use super::limits::SdsSettings;
use super::sotw::SotwStream;
use super::stream::Protocol;
use crate::store::{Secret, SecretStore, Source};

fn settings() -> Arc<SdsSettings> {
    Arc::new(SdsSettings {
        max_resource_names: 8,
        max_resource_name_len: 64,
        max_request_bytes: 64 * 1024,
        disable_spiffe_cert_validation: false,
        connections: super::admission::ConnectionLimits {
            max_connections: 16,
            max_connections_per_uid: 8,
            handshake_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            require_pid: false,
        },
        max_streams_per_connection: 64,
        max_streams: 256,
    })
}

fn generic(v: &[u8]) -> Secret {
    Secret::Generic(SecretBytes::copy_from(v))
}

fn req(names: &[&str], nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[test]
fn sotw_waits_for_an_unknown_name_then_sends_it_once() {
    let store = SecretStore::new();
    let mut s = SotwStream::new(settings());
    assert!(
        s.on_request(req(&["a"], ""), &store.view())
            .unwrap()
            .is_none()
    );
    store.sync_source(&Source::Envelopes, vec![("a".into(), generic(b"1"))]);
    let r = s.on_snapshot(&store.view()).unwrap();
    assert_eq!(r.resources.len(), 1);
    // ACK: nothing new.
    assert!(
        s.on_request(req(&["a"], &r.nonce), &store.view())
            .unwrap()
            .is_none()
    );
    // Another producer's unrelated change is not a re-push.
    store.sync_source(&Source::JwtBundles, vec![("b".into(), generic(b"2"))]);
    assert!(s.on_snapshot(&store.view()).is_none());
    store.sync_source(&Source::Envelopes, vec![("a".into(), generic(b"3"))]);
    assert!(s.on_snapshot(&store.view()).is_some());
}

#[test]
fn sotw_nack_and_stale_nonce_cause_no_resend_but_next_update_goes_out() {
    let store = SecretStore::new();
    store.sync_source(&Source::Envelopes, vec![("a".into(), generic(b"1"))]);
    let mut s = SotwStream::new(settings());
    let first = s
        .on_request(req(&["a"], ""), &store.view())
        .unwrap()
        .unwrap();
    let mut nack = req(&["a"], &first.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad cert".into(),
        details: vec![],
    });
    assert!(s.on_request(nack, &store.view()).unwrap().is_none());
    assert!(
        s.on_request(req(&["a", "b"], "999"), &store.view())
            .unwrap()
            .is_none()
    );
    store.sync_source(&Source::Envelopes, vec![("a".into(), generic(b"2"))]);
    let next = s.on_snapshot(&store.view()).unwrap();
    assert_ne!(next.nonce, first.nonce);
}

#[test]
fn oversized_and_foreign_requests_are_refused() {
    let store = SecretStore::new();
    let mut s = SotwStream::new(settings());
    let many: Vec<String> = (0..9).map(|i| i.to_string()).collect();
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(s.on_request(req(&names, ""), &store.view()).is_err());
    let long = "x".repeat(65);
    assert!(s.on_request(req(&[&long], ""), &store.view()).is_err());
    let mut foreign = req(&["a"], "");
    foreign.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    assert!(s.on_request(foreign, &store.view()).is_err());
}

#[test]
fn delta_sends_changes_only_and_removes_what_went_away() {
    let store = SecretStore::new();
    store.sync_source(
        &Source::Envelopes,
        vec![("a".into(), generic(b"1")), ("b".into(), generic(b"2"))],
    );
    let mut d = DeltaStream::new(settings());
    let first = DeltaDiscoveryRequest {
        resource_names_subscribe: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let r = d.on_request(first, &store.view()).unwrap().unwrap();
    assert_eq!(r.resources.len(), 2);
    store.sync_source(&Source::Envelopes, vec![("a".into(), generic(b"1"))]);
    let r = d.on_snapshot(&store.view()).unwrap();
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["b"]);
    assert!(d.on_snapshot(&store.view()).is_none());
}

#[test]
fn delta_skips_what_the_client_already_holds() {
    let store = SecretStore::new();
    store.sync_source(&Source::Envelopes, vec![("a".into(), generic(b"1"))]);
    let version = store.snapshot().get("a").unwrap().version.to_string();
    let mut d = DeltaStream::new(settings());
    let first = DeltaDiscoveryRequest {
        resource_names_subscribe: vec!["a".into()],
        initial_resource_versions: [("a".to_owned(), version)].into(),
        ..Default::default()
    };
    assert!(d.on_request(first, &store.view()).unwrap().is_none());
}

#[path = "grpc_tests.rs"]
mod grpc;

#[test]
fn a_delta_stream_cannot_accumulate_names_past_the_limit() {
    let store = SecretStore::new();
    let mut d = DeltaStream::new(settings());
    let subscribe = |names: std::ops::Range<usize>| DeltaDiscoveryRequest {
        resource_names_subscribe: names.map(|i| format!("n{i}")).collect(),
        ..Default::default()
    };
    // Eight names per request is within max_resource_names (8); a second eight is not.
    assert!(d.on_request(subscribe(0..8), &store.view()).is_ok());
    let err = d.on_request(subscribe(8..16), &store.view()).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("more than 8"), "{err}");
}
