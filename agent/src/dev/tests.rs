use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::Value;
use steeple_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use steeple_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svid,
    X509svidRequest,
};
use tonic::Code;
use tonic::transport::Channel;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::*;

const TD: &str = "spiffe://steeple.dev";
const ID: &str = "spiffe://steeple.dev/workload";
const ID2: &str = "spiffe://steeple.dev/second";

type Client = SpiffeWorkloadApiClient<Channel>;

struct Running {
    api: DevWorkloadApi,
    client: Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start(config: DevConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("workload.sock");
    let shutdown = CancellationToken::new();
    let api = DevWorkloadApi::start(config, &socket, shutdown.clone())
        .await
        .unwrap();
    let client = SpiffeWorkloadApiClient::new(crate::uds::lazy_channel(&socket));
    Running {
        api,
        client,
        shutdown,
        _dir: dir,
    }
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = tonic::metadata::MetadataValue::from_static("true");
    request
        .metadata_mut()
        .insert(steeple_proto::SECURITY_HEADER, value);
    request
}

fn jwt_request(audience: &[&str], spiffe_id: &str) -> tonic::Request<JwtsvidRequest> {
    with_header(JwtsvidRequest {
        audience: audience.iter().map(|a| (*a).to_owned()).collect(),
        spiffe_id: spiffe_id.to_owned(),
    })
}

/// Checks everything a relying party checks of an X.509-SVID; returns the leaf serial.
fn check_svid(svid: &X509svid, id: &str, ca_der: &[u8]) -> Vec<u8> {
    let (_, ca) = X509Certificate::from_der(ca_der).unwrap();
    let (rest, leaf) = X509Certificate::from_der(&svid.x509_svid).unwrap();
    assert!(rest.is_empty(), "x509_svid must be a single certificate");
    assert_eq!(svid.spiffe_id, id);
    assert_eq!(svid.bundle, ca_der);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names, [GeneralName::URI(id)]);
    assert!(!leaf.is_ca());
    assert!(leaf.validity().is_valid());
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &svid.x509_svid_key, &rng)
        .unwrap();
    assert_eq!(
        key.public_key().as_ref(),
        leaf.public_key().subject_public_key.data.as_ref(),
        "private key does not match the leaf"
    );
    leaf.raw_serial().to_vec()
}

fn decode_json(part: &str) -> Value {
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

/// Verifies `token` against the JWK set the way a relying party would; returns claims.
fn verify_with_jwks(token: &str, jwks: &[u8]) -> Value {
    let jwks: Value = serde_json::from_slice(jwks).unwrap();
    let jwk = &jwks["keys"][0];
    assert_eq!(
        (&jwk["kty"], &jwk["crv"], &jwk["use"]),
        (&"EC".into(), &"P-256".into(), &"jwt-svid".into())
    );
    let (input, signature) = token.rsplit_once('.').unwrap();
    let (header, payload) = input.split_once('.').unwrap();
    let header = decode_json(header);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], jwk["kid"]);
    let mut point = vec![4u8];
    point.extend(B64.decode(jwk["x"].as_str().unwrap()).unwrap());
    point.extend(B64.decode(jwk["y"].as_str().unwrap()).unwrap());
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(input.as_bytes(), &B64.decode(signature).unwrap())
        .unwrap();
    decode_json(payload)
}

#[tokio::test]
async fn requests_without_the_security_header_are_refused() {
    let mut run = start(DevConfig::default()).await;
    let codes = [
        run.client.fetch_x509svid(X509svidRequest {}).await.err(),
        run.client
            .fetch_x509_bundles(X509BundlesRequest {})
            .await
            .err(),
        run.client
            .fetch_jwt_bundles(JwtBundlesRequest {})
            .await
            .err(),
        run.client
            .fetch_jwtsvid(JwtsvidRequest::default())
            .await
            .err(),
        run.client
            .validate_jwtsvid(ValidateJwtsvidRequest::default())
            .await
            .err(),
    ];
    for status in codes {
        let status = status.expect("answered without the security header");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "security header missing from request");
    }
    run.shutdown.cancel();
}

#[tokio::test]
async fn issues_valid_svids_and_bundles() {
    let mut run = start(DevConfig {
        workload_ids: vec![ID.into(), ID2.into()],
        ..DevConfig::default()
    })
    .await;
    let ca_der = run.api.ca_der();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca.is_ca());
    let san = ca.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names, [GeneralName::URI(TD)]);
    ca.verify_signature(None).unwrap();

    let mut svids = run
        .client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let response = svids.message().await.unwrap().unwrap();
    assert_eq!(response.svids.len(), 2);
    check_svid(&response.svids[0], ID, &ca_der);
    check_svid(&response.svids[1], ID2, &ca_der);

    let mut bundles = run
        .client
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let bundle = bundles.message().await.unwrap().unwrap();
    assert_eq!(bundle.bundles.len(), 1);
    assert_eq!(bundle.bundles[TD], ca_der);
    run.shutdown.cancel();
}

#[tokio::test]
async fn open_streams_receive_rotated_svids_and_end_at_shutdown() {
    let mut run = start(DevConfig {
        x509_svid_ttl: Duration::from_secs(2),
        ..DevConfig::default()
    })
    .await;
    let mut stream = run
        .client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let first_serial = check_svid(&first.svids[0], ID, &run.api.ca_der());
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no rotation within 5 s of a 2 s TTL")
        .unwrap()
        .unwrap();
    let next_serial = check_svid(&next.svids[0], ID, &run.api.ca_der());
    assert_ne!(first_serial, next_serial);
    assert_ne!(first.svids[0].x509_svid_key, next.svids[0].x509_svid_key);

    run.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("stream still open after shutdown");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}

#[tokio::test]
async fn jwt_svids_verify_against_the_jwks_and_validate_for_their_audience_only() {
    let mut run = start(DevConfig::default()).await;
    let mut response = run
        .client
        .fetch_jwtsvid(jwt_request(&["db", "cache"], ""))
        .await;
    let svid = response.as_mut().unwrap().get_mut().svids.remove(0);
    assert_eq!(svid.spiffe_id, ID);
    let mut bundles = run
        .client
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let jwks = bundles.message().await.unwrap().unwrap().bundles;
    let claims = verify_with_jwks(&svid.svid, &jwks[TD]);
    assert_eq!(claims["sub"], ID);
    assert_eq!(claims["aud"], serde_json::json!(["db", "cache"]));
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64());
    assert_eq!(exp, Some(iat + 300));

    let validate = |audience: &str, svid: &str| {
        with_header(ValidateJwtsvidRequest {
            audience: audience.into(),
            svid: svid.into(),
        })
    };
    let ok = run
        .client
        .validate_jwtsvid(validate("cache", &svid.svid))
        .await;
    let ok = ok.unwrap().into_inner();
    assert_eq!(ok.spiffe_id, ID);
    assert!(ok.claims.unwrap().fields.contains_key("exp"));
    for (audience, token) in [
        ("other", svid.svid.clone()),
        ("db", format!("{}A", svid.svid)),
        ("db", "not.a.jwt".to_owned()),
        ("db", String::new()),
        ("", svid.svid.clone()),
    ] {
        let err = run
            .client
            .validate_jwtsvid(validate(audience, &token))
            .await;
        assert_eq!(err.unwrap_err().code(), Code::InvalidArgument, "{token}");
    }
    run.shutdown.cancel();
}

#[tokio::test]
async fn jwt_svid_requests_are_checked() {
    let mut run = start(DevConfig {
        workload_ids: vec![ID.into(), ID2.into()],
        ..DevConfig::default()
    })
    .await;
    let all = run
        .client
        .fetch_jwtsvid(jwt_request(&["db"], ""))
        .await
        .unwrap();
    let ids: Vec<_> = all
        .into_inner()
        .svids
        .into_iter()
        .map(|s| s.spiffe_id)
        .collect();
    assert_eq!(ids, [ID, ID2]);
    let one = run
        .client
        .fetch_jwtsvid(jwt_request(&["db"], ID2))
        .await
        .unwrap();
    assert_eq!(one.into_inner().svids.len(), 1);
    let unknown = run
        .client
        .fetch_jwtsvid(jwt_request(&["db"], "spiffe://steeple.dev/other"))
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::PermissionDenied);
    let no_audience = run.client.fetch_jwtsvid(jwt_request(&[], ID)).await;
    assert_eq!(no_audience.unwrap_err().code(), Code::InvalidArgument);
    run.shutdown.cancel();
}

#[tokio::test]
async fn bad_configs_are_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("workload.sock");
    let bad = [
        DevConfig {
            trust_domain: "Steeple.Dev".into(),
            ..DevConfig::default()
        },
        DevConfig {
            workload_ids: Vec::new(),
            ..DevConfig::default()
        },
        DevConfig {
            workload_ids: vec!["spiffe://other.dev/workload".into()],
            ..DevConfig::default()
        },
        DevConfig {
            workload_ids: vec!["spiffe://steeple.dev".into()],
            ..DevConfig::default()
        },
        DevConfig {
            workload_ids: vec!["spiffe://steeple.dev/a/../b".into()],
            ..DevConfig::default()
        },
        DevConfig {
            x509_svid_ttl: Duration::ZERO,
            ..DevConfig::default()
        },
        DevConfig {
            jwt_svid_ttl: Duration::MAX,
            ..DevConfig::default()
        },
    ];
    for config in bad {
        let shown = format!("{config:?}");
        let started = DevWorkloadApi::start(config, &socket, CancellationToken::new()).await;
        assert!(started.is_err(), "accepted {shown}");
    }
    assert!(!socket.exists());
}
