use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{BuildVersion, Node, node::UserAgentVersionType};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use steeple_plugin_api::SecretBytes;

use super::*;

fn envoy(major: u32, minor: u32) -> Node {
    Node {
        user_agent_version_type: Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(SemanticVersion {
                major_number: major,
                minor_number: minor,
                patch: 0,
            }),
            metadata: None,
        })),
        ..Default::default()
    }
}

fn decode(any: &Any) -> EnvoySecret {
    assert_eq!(any.type_url, SECRET_TYPE_URL);
    EnvoySecret::decode(any.value.as_slice()).unwrap()
}

fn bundle(td: &str) -> std::sync::Arc<TrustBundle> {
    std::sync::Arc::new(TrustBundle {
        trust_domain: td.into(),
        roots_der: vec![crate::test_support::TestCa::new(td).der],
    })
}

#[test]
fn spiffe_validator_follows_spire_rules() {
    assert!(ClientCaps::from_node(Some(&envoy(1, 40)), false).spiffe_validator);
    assert!(!ClientCaps::from_node(Some(&envoy(1, 17)), false).spiffe_validator);
    assert!(!ClientCaps::from_node(Some(&envoy(1, 40)), true).spiffe_validator);
    assert!(!ClientCaps::from_node(None, false).spiffe_validator);
    let mut opted_out = envoy(1, 40);
    opted_out.metadata = Some(Struct {
        fields: [(
            "disable_spiffe_cert_validation".to_owned(),
            Value {
                kind: Some(Kind::BoolValue(true)),
            },
        )]
        .into(),
    });
    assert!(!ClientCaps::from_node(Some(&opted_out), false).spiffe_validator);
}

#[test]
fn bundle_set_becomes_a_spiffe_validator_or_concatenated_roots() {
    let set = Secret::BundleSet(vec![bundle("a.org"), bundle("b.org")]);
    let spiffe = decode(&encode(
        "ALL",
        &set,
        ClientCaps {
            spiffe_validator: true,
        },
    ));
    let Some(Type::ValidationContext(vc)) = spiffe.r#type else {
        panic!("not a validation context")
    };
    let custom = vc.custom_validator_config.unwrap();
    assert_eq!(custom.name, "envoy.tls.cert_validator.spiffe");
    let config =
        SpiffeCertValidatorConfig::decode(custom.typed_config.unwrap().value.as_slice()).unwrap();
    let names: Vec<_> = config
        .trust_domains
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["a.org", "b.org"]);

    let plain = decode(&encode(
        "ALL",
        &set,
        ClientCaps {
            spiffe_validator: false,
        },
    ));
    let Some(Type::ValidationContext(vc)) = plain.r#type else {
        panic!("not a validation context")
    };
    let Some(Specifier::InlineBytes(pem)) = vc.trusted_ca.unwrap().specifier else {
        panic!()
    };
    assert_eq!(
        String::from_utf8(pem)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
}

#[test]
fn certificate_carries_pem_chain_and_pkcs8_key() {
    let ca = crate::test_support::TestCa::new("a.org");
    let leaf = ca.issue("spiffe://a.org/w", 60);
    let cert = Secret::Certificate(std::sync::Arc::new(Certificate {
        spiffe_id: "spiffe://a.org/w".into(),
        chain_der: vec![leaf.der],
        key_pkcs8: SecretBytes::new(leaf.key_pkcs8),
        not_before: std::time::SystemTime::now(),
        not_after: std::time::SystemTime::now(),
    }));
    let secret = decode(&encode(
        "default",
        &cert,
        ClientCaps {
            spiffe_validator: true,
        },
    ));
    assert_eq!(secret.name, "default");
    let Some(Type::TlsCertificate(tls)) = secret.r#type else {
        panic!("not a certificate")
    };
    let Some(Specifier::InlineBytes(key)) = tls.private_key.unwrap().specifier else {
        panic!()
    };
    assert!(key.starts_with(b"-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn generic_secret_carries_the_bytes() {
    let token = Secret::Generic(SecretBytes::copy_from(b"eyJ.token.sig"));
    let secret = decode(&encode(
        "jwt",
        &token,
        ClientCaps {
            spiffe_validator: true,
        },
    ));
    let Some(Type::GenericSecret(g)) = secret.r#type else {
        panic!("not generic")
    };
    let Some(Specifier::InlineBytes(bytes)) = g.secret.unwrap().specifier else {
        panic!()
    };
    assert_eq!(bytes, b"eyJ.token.sig");
}

#[test]
fn an_entry_is_encoded_once_per_variant_and_shared() {
    let store = crate::store::SecretStore::new();
    store.sync_source(
        &crate::store::Source::X509Identity,
        vec![
            (
                "ALL".into(),
                Secret::BundleSet(vec![bundle("a.org"), bundle("b.org")]),
            ),
            (
                "token".into(),
                Secret::Generic(SecretBytes::copy_from(b"jwt")),
            ),
        ],
    );
    let snapshot = store.snapshot();
    let caps = |spiffe_validator| ClientCaps { spiffe_validator };
    let all = snapshot.get("ALL").unwrap();
    let spiffe = encoded("ALL", all, caps(true));
    assert!(Arc::ptr_eq(&spiffe, &encoded("ALL", all, caps(true))));
    let plain = encoded("ALL", all, caps(false));
    assert!(!Arc::ptr_eq(&spiffe, &plain), "the variants differ");
    for (bytes, caps) in [(&spiffe, caps(true)), (&plain, caps(false))] {
        let any = Any::decode(bytes.expose()).unwrap();
        assert_eq!(any, encode("ALL", &all.secret, caps));
    }
    let token = snapshot.get("token").unwrap();
    assert!(
        Arc::ptr_eq(
            &encoded("token", token, caps(true)),
            &encoded("token", token, caps(false))
        ),
        "a generic secret is the same for every client"
    );
}
