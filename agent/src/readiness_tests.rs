use std::time::{Duration, SystemTime};

use steeple_plugin_api::SecretBytes;

use super::*;
use crate::store::{Certificate, Source};

fn cert(not_after: SystemTime) -> Secret {
    Secret::Certificate(std::sync::Arc::new(Certificate {
        spiffe_id: "spiffe://example.org/web".into(),
        chain_der: vec![vec![1]],
        key_pkcs8: SecretBytes::copy_from(b"k"),
        not_before: SystemTime::now() - Duration::from_secs(60),
        not_after,
    }))
}

fn jwt_svid(audience: &str) -> JwtSvidConfig {
    JwtSvidConfig {
        audience: audience.into(),
        spiffe_id: None,
        resource_name: format!("jwt-svid:{audience}"),
    }
}

/// What is missing apart from envelopes: their gauge is process-wide, and other unit
/// tests running at the same time move it.
fn missing_outside_envelopes(readiness: &Readiness) -> Vec<String> {
    readiness
        .missing()
        .into_iter()
        .filter(|m| !m.contains("envelope"))
        .collect()
}

#[test]
fn ready_needs_an_svid_and_every_envelope() {
    let store = SecretStore::new();
    assert_eq!(
        missing_from(&store.snapshot(), &[], &[], 2),
        ["no X.509-SVID yet", "2 configured envelope(s) not served"]
    );
    let expired = cert(SystemTime::now() - Duration::from_secs(1));
    store.sync_source(&Source::X509Identity, vec![("default".into(), expired)]);
    assert_eq!(
        missing_from(&store.snapshot(), &[], &[], 0),
        ["no X.509-SVID yet"],
        "an expired SVID does not count"
    );
    let valid = cert(SystemTime::now() + Duration::from_secs(600));
    store.sync_source(&Source::X509Identity, vec![("default".into(), valid)]);
    assert_eq!(
        missing_from(&store.snapshot(), &[], &[], 1),
        ["1 configured envelope(s) not served"]
    );
    assert!(missing_from(&store.snapshot(), &[], &[], 0).is_empty());
}

#[test]
fn every_configured_jwt_svid_and_side_output_is_named_until_held() {
    let store = SecretStore::new();
    let valid = cert(SystemTime::now() + Duration::from_secs(600));
    store.sync_source(&Source::X509Identity, vec![("default".into(), valid)]);
    let names = ["jwt-svid:vault".to_owned(), "upstream-token".to_owned()];
    let outputs = [
        ("AWS credentials (aws-credentials)".to_owned(), false),
        ("Vault token".to_owned(), true),
    ];
    assert_eq!(
        missing_from(&store.snapshot(), &names, &outputs, 0),
        [
            "JWT-SVID \"jwt-svid:vault\" not held",
            "JWT-SVID \"upstream-token\" not held",
            "AWS credentials (aws-credentials) not held",
        ]
    );
    let token = Secret::Generic(SecretBytes::copy_from(b"eyJ"));
    store.sync_source(
        &Source::JwtSvid("upstream-token".into()),
        vec![("upstream-token".into(), token)],
    );
    assert_eq!(
        missing_from(&store.snapshot(), &names, &outputs[1..], 0),
        ["JWT-SVID \"jwt-svid:vault\" not held"]
    );
}

#[test]
fn side_outputs_follow_their_channels_and_jwt_svids_follow_reloads() {
    let store = Arc::new(SecretStore::new());
    let valid = cert(SystemTime::now() + Duration::from_secs(600));
    store.sync_source(&Source::X509Identity, vec![("default".into(), valid)]);
    let readiness = Readiness::new(store.clone(), &[jwt_svid("vault")]);
    let (tx, rx) = watch::channel(None::<u32>);
    readiness.require("Vault token", rx);
    assert_eq!(
        missing_outside_envelopes(&readiness),
        [
            "JWT-SVID \"jwt-svid:vault\" not held",
            "Vault token not held"
        ]
    );
    tx.send_replace(Some(1));
    readiness.set_jwt_svids(&[]);
    assert!(missing_outside_envelopes(&readiness).is_empty());
    tx.send_replace(None);
    assert_eq!(
        missing_outside_envelopes(&readiness),
        ["Vault token not held"],
        "an expired token makes the agent not ready again"
    );
    assert!(format!("{readiness:?}").contains("Vault token"));
}
