use std::time::{Duration, SystemTime};

use steeple_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use steeple_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest};

use super::*;
use crate::identity::jwt::token_times;
use crate::identity::request;
use crate::svid::validate_svid;

const ID: &str = "spiffe://steeple.dev/workload";

async fn start(
    ttl: Duration,
) -> (
    DevWorkloadApi,
    SpiffeWorkloadApiClient<tonic::transport::Channel>,
    tempfile::TempDir,
    CancellationToken,
) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("workload.sock");
    let shutdown = CancellationToken::new();
    let config = DevConfig {
        x509_svid_ttl: ttl,
        ..DevConfig::default()
    };
    let api = DevWorkloadApi::start(config, &socket, shutdown.clone())
        .await
        .unwrap();
    let client = SpiffeWorkloadApiClient::new(crate::uds::lazy_channel(&socket));
    (api, client, dir, shutdown)
}

#[tokio::test]
async fn requests_without_the_security_header_are_refused() {
    let (_api, mut client, _dir, shutdown) = start(Duration::from_secs(60)).await;
    let err = client.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    shutdown.cancel();
}

#[tokio::test]
async fn issues_valid_svids_and_rotates_them() {
    let (api, mut client, _dir, shutdown) = start(Duration::from_secs(2)).await;
    let mut stream = client
        .fetch_x509svid(request(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let svid = &first.svids[0];
    assert_eq!(svid.spiffe_id, ID);
    assert_eq!(svid.bundle, api.ca_der());
    validate_svid(
        ID,
        &svid.x509_svid,
        &svid.x509_svid_key,
        &[api.ca_der().to_vec()],
        SystemTime::now(),
    )
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(
        next.svids[0].x509_svid, svid.x509_svid,
        "no rotation within 5 s of a 2 s TTL"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn jwt_svids_validate_for_their_audience_only() {
    let (_api, mut client, _dir, shutdown) = start(Duration::from_secs(60)).await;
    let svid = client
        .fetch_jwtsvid(request(JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .svids
        .remove(0);
    assert_eq!(svid.spiffe_id, ID);
    token_times(&svid.svid, SystemTime::now()).unwrap();
    let ok = client
        .validate_jwtsvid(request(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: svid.svid.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.spiffe_id, ID);
    let wrong = client
        .validate_jwtsvid(request(ValidateJwtsvidRequest {
            audience: "other".into(),
            svid: svid.svid.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    let mut tampered = svid.svid.clone();
    tampered.insert(tampered.len() - 2, 'A');
    assert!(
        client
            .validate_jwtsvid(request(ValidateJwtsvidRequest {
                audience: "db".into(),
                svid: tampered
            }))
            .await
            .is_err()
    );
    let unknown = client
        .fetch_jwtsvid(request(JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: "spiffe://steeple.dev/other".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::PermissionDenied);
    shutdown.cancel();
}
