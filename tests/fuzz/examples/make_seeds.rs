//! Writes the binary seeds (`seeds/sds_request/*.bin`, `seeds/svid/*.bin`); the text seeds
//! are written by hand. Run from tests/fuzz: `cargo run --example make_seeds`. Keys are
//! fresh each run, so the certificates differ every time; commit the result.

use std::collections::HashMap;
use std::path::Path;

use envoy_types::pb::envoy::config::core::v3::{BuildVersion, Node, node::UserAgentVersionType};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PKCS_ED25519, SanType,
    date_time_ymd,
};

type Error = Box<dyn std::error::Error>;
/// Seed files by name.
type Seeds = Vec<(&'static str, Vec<u8>)>;

fn main() -> Result<(), Error> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (name, bytes) in sds_seeds() {
        std::fs::write(seeds.join("sds_request").join(name), bytes)?;
    }
    for (name, bytes) in svid_seeds()? {
        std::fs::write(seeds.join("svid").join(name), bytes)?;
    }
    Ok(())
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// An Envoy 1.30 node that opts out of nothing.
fn node() -> Node {
    let opt_out = Value {
        kind: Some(Kind::BoolValue(false)),
    };
    Node {
        id: "fuzz-envoy".into(),
        cluster: "fuzz".into(),
        user_agent_name: "envoy".into(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(SemanticVersion {
                major_number: 1,
                minor_number: 30,
                patch: 0,
            }),
            metadata: None,
        })),
        metadata: Some(Struct {
            fields: [("disable_spiffe_cert_validation".to_owned(), opt_out)].into(),
        }),
        ..Default::default()
    }
}

fn frames<M: Message>(messages: &[M]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(Message::encode_length_delimited_to_vec)
        .collect()
}

fn sds_seeds() -> Seeds {
    let sotw = |names_: &[&str], nonce: &str| DiscoveryRequest {
        resource_names: names(names_),
        response_nonce: nonce.into(),
        type_url: steeple::sds::resources::SECRET_TYPE_URL.into(),
        ..Default::default()
    };
    let first = DiscoveryRequest {
        node: Some(node()),
        ..sotw(&["a", "default"], "")
    };
    let nack = DiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: "rejected".into(),
            details: Vec::new(),
        }),
        version_info: "2".into(),
        ..sotw(&["a", "ROOTCA", "ALL"], "2")
    };
    let delta_first = DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: steeple::sds::resources::SECRET_TYPE_URL.into(),
        resource_names_subscribe: names(&["a", "default"]),
        initial_resource_versions: HashMap::from([("b".to_owned(), "1".to_owned())]),
        ..Default::default()
    };
    let delta_next = DeltaDiscoveryRequest {
        resource_names_subscribe: names(&["ROOTCA", "spiffe://example.org/x"]),
        resource_names_unsubscribe: names(&["a"]),
        response_nonce: "1".into(),
        ..Default::default()
    };
    let delta_wildcard = DeltaDiscoveryRequest {
        resource_names_subscribe: names(&["*"]),
        response_nonce: "2".into(),
        ..Default::default()
    };
    vec![
        (
            "sotw.bin",
            frames(&[
                first,
                sotw(&["a", "default"], "1"),
                sotw(&["a", "ROOTCA", "ALL"], "1"),
                nack,
            ]),
        ),
        (
            "sotw_wildcard.bin",
            frames(&[sotw(&[], ""), sotw(&[], "1")]),
        ),
        (
            "fetch.bin",
            frames(&[sotw(&["a", "b", "spiffe://other.org"], "")]),
        ),
        (
            "delta.bin",
            frames(&[delta_first, delta_next, delta_wildcard]),
        ),
    ]
}

/// `u16 BE key length ‖ key ‖ u16 BE chain length ‖ chain ‖ roots`.
fn svid_input(
    key: &[u8],
    chain: &[u8],
    roots: &[u8],
) -> Result<Vec<u8>, std::num::TryFromIntError> {
    let mut out = Vec::new();
    out.extend_from_slice(&u16::try_from(key.len())?.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&u16::try_from(chain.len())?.to_be_bytes());
    out.extend_from_slice(chain);
    out.extend_from_slice(roots);
    Ok(out)
}

/// A CA certificate (self-signed when `issuer` is `None`) and its issuer.
fn ca(
    uri: &str,
    issuer: Option<&Issuer<'static, KeyPair>>,
) -> Result<(Vec<u8>, Issuer<'static, KeyPair>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    params.not_before = date_time_ymd(2025, 1, 1);
    params.not_after = date_time_ymd(2035, 1, 1);
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer)?,
        None => params.self_signed(&key)?,
    };
    Ok((cert.der().to_vec(), Issuer::new(params, key)))
}

/// A leaf for the fuzz target's SPIFFE ID: its DER and PKCS#8 key.
fn leaf(
    key: KeyPair,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<(Vec<u8>, Vec<u8>), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![SanType::URI(steeple_fuzz::svid::SPIFFE_ID.try_into()?)];
    params.not_before = date_time_ymd(2025, 1, 1);
    params.not_after = date_time_ymd(2035, 1, 1);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

fn svid_seeds() -> Result<Seeds, Error> {
    let (root, root_issuer) = ca("spiffe://example.org", None)?;
    let (leaf_der, key) = leaf(KeyPair::generate()?, &root_issuer)?;
    let (ed_der, ed_key) = leaf(KeyPair::generate_for(&PKCS_ED25519)?, &root_issuer)?;
    let (mid, mid_issuer) = ca("spiffe://example.org/intermediate", Some(&root_issuer))?;
    let (deep_der, deep_key) = leaf(KeyPair::generate()?, &mid_issuer)?;
    let (other_root, _) = ca("spiffe://other.org", None)?;
    let chain = [deep_der, mid].concat();
    let two_roots = [other_root, root.clone()].concat();
    Ok(vec![
        ("p256.bin", svid_input(&key, &leaf_der, &root)?),
        ("ed25519.bin", svid_input(&ed_key, &ed_der, &root)?),
        (
            "intermediate.bin",
            svid_input(&deep_key, &chain, &two_roots)?,
        ),
        ("bare_der.bin", chain),
    ])
}
