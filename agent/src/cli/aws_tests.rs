//! Unit tests for `steeple aws credential-process`, built with the `aws` feature (their
//! fixtures are the AWS side's own credential JSON).
#![cfg(feature = "aws")]

use super::*;
use crate::aws::delivery::credential_process_json;
use crate::sds::resources::{ClientCaps, encode};
use crate::store::{Secret as Stored, SecretStore, Source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CertificateValidationContext;
use envoy_types::pb::google::protobuf::Any;
use steeple_plugin_api::{AwsCredentials, SecretBytes};

const NAME: &str = "aws-credentials";
const SOCKET: &str = "/run/steeple/sds.sock";

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn credentials(expiration: SystemTime) -> SecretBytes {
    credential_process_json(&AwsCredentials {
        access_key_id: "ASIAEXAMPLE".into(),
        secret_access_key: SecretBytes::copy_from(b"secret/key+1"),
        session_token: SecretBytes::copy_from(b"token=="),
        expiration,
        account_id: Some("123456789012".into()),
    })
    .unwrap()
}

fn generic(name: &str, content: &SecretBytes) -> Any {
    let caps = ClientCaps {
        spiffe_validator: false,
    };
    encode(name, &Stored::Generic(content.clone()), caps)
}

fn output(resources: Vec<Any>) -> Result<Zeroizing<Vec<u8>>, CredentialProcessError> {
    let response = DiscoveryResponse {
        resources,
        ..Default::default()
    };
    credential_process_output(response, Path::new(SOCKET), NAME, at(1_800_000_000))
}

#[test]
fn returns_the_secret_exactly() {
    let json = credentials(at(1_800_003_600));
    let other = generic("jwt-svid:x", &SecretBytes::copy_from(b"jwt"));
    let out = output(vec![other, generic(NAME, &json)]).unwrap();
    assert_eq!(out.as_slice(), json.expose());
    let printed: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(printed["AccountId"], "123456789012");
}

#[test]
fn refuses_expired_credentials() {
    let err = output(vec![generic(NAME, &credentials(at(1_800_000_000)))]).unwrap_err();
    assert!(
        matches!(err, CredentialProcessError::Expired { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("2027-01-15T08:00:00Z"), "{err}");
}

#[test]
fn reports_a_missing_resource_by_name() {
    let err = output(Vec::new()).unwrap_err();
    assert!(
        matches!(err, CredentialProcessError::NotServed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"aws-credentials\""), "{err}");
    let status = tonic::Status::not_found("1 requested resource(s) not available (yet)");
    let err = from_status(&status, Path::new(SOCKET), NAME);
    assert!(
        matches!(err, CredentialProcessError::NotServed { .. }),
        "{err}"
    );
}

#[test]
fn refuses_other_secret_types_and_bad_json_without_echoing_content() {
    let bundle = Secret {
        name: NAME.to_owned(),
        r#type: Some(Type::ValidationContext(
            CertificateValidationContext::default(),
        )),
    };
    let any = Any {
        type_url: SECRET_TYPE_URL.to_owned(),
        value: bundle.encode_to_vec(),
    };
    let err = output(vec![any]).unwrap_err();
    assert!(
        matches!(err, CredentialProcessError::NotGeneric { .. }),
        "{err}"
    );
    let garbage = SecretBytes::copy_from(b"{\"SecretAccessKey\":\"canary-secret\"");
    let err = output(vec![generic(NAME, &garbage)]).unwrap_err();
    assert!(
        matches!(err, CredentialProcessError::Malformed { .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("canary"), "{err}");
}

#[tokio::test]
async fn fetches_from_a_running_sds_server() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sds.sock");
    let store = std::sync::Arc::new(SecretStore::new());
    let config = Config::parse("", Vec::new()).unwrap();
    let policy = crate::authz::SharedPolicy::new(crate::authz::Policy::new(
        Vec::new(),
        rustix::process::geteuid().as_raw(),
    ));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let service = crate::sds::SdsService::new(
        store.clone(),
        (&config.sds).into(),
        policy,
        shutdown.clone(),
    );
    let listener = crate::uds::bind_socket(&socket, 0o600).unwrap();
    tokio::spawn(crate::sds::serve(listener, service, shutdown.clone()));
    let err = fetch(&socket, NAME).await.unwrap_err();
    assert!(
        matches!(err, CredentialProcessError::NotServed { .. }),
        "{err}"
    );
    let json = credentials(SystemTime::now() + Duration::from_secs(3600));
    store.sync_source(
        &Source::JwtSvid("test".into()),
        vec![(NAME.to_owned(), Stored::Generic(json.clone()))],
    );
    assert_eq!(
        fetch(&socket, NAME).await.unwrap().as_slice(),
        json.expose()
    );
    shutdown.cancel();
}
