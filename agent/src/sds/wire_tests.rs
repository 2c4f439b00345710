use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use steeple_plugin_api::SecretBytes;

use super::*;

fn any(value: &[u8]) -> Any {
    Any {
        type_url: "type.googleapis.com/x".to_owned(),
        value: value.to_vec(),
    }
}

fn shared(any: &Any) -> Encoded {
    Arc::new(SecretBytes::new(any.encode_to_vec()))
}

#[test]
fn a_sotw_response_is_byte_for_byte_what_prost_writes() {
    let (a, b) = (any(b"first"), any(&[7u8; 300]));
    let ours = SotwResponse {
        version_info: "12".to_owned(),
        resources: vec![shared(&a), shared(&b)],
        type_url: "t".to_owned(),
        nonce: "3".to_owned(),
    };
    let prost = DiscoveryResponse {
        version_info: "12".to_owned(),
        resources: vec![a, b],
        type_url: "t".to_owned(),
        nonce: "3".to_owned(),
        ..Default::default()
    };
    assert_eq!(ours.encode_to_vec(), prost.encode_to_vec());
    assert_eq!(ours.encoded_len(), prost.encoded_len());
    let unary = SotwResponse {
        nonce: String::new(),
        ..ours
    };
    let decoded = DiscoveryResponse::decode(unary.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded.nonce, "", "no nonce field at all");
}

#[test]
fn a_delta_response_is_byte_for_byte_what_prost_writes() {
    let a = any(&[1u8; 200]);
    let ours = DeltaResponse {
        system_version_info: "9".to_owned(),
        resources: vec![DeltaResource {
            name: "default".to_owned(),
            version: "41".to_owned(),
            resource: shared(&a),
        }],
        type_url: "t".to_owned(),
        removed_resources: vec!["gone".to_owned(), "also".to_owned()],
        nonce: "2".to_owned(),
    };
    let prost = DeltaDiscoveryResponse {
        system_version_info: "9".to_owned(),
        resources: vec![Resource {
            name: "default".to_owned(),
            version: "41".to_owned(),
            resource: Some(a),
            ..Default::default()
        }],
        type_url: "t".to_owned(),
        removed_resources: vec!["gone".to_owned(), "also".to_owned()],
        nonce: "2".to_owned(),
        ..Default::default()
    };
    assert_eq!(ours.encode_to_vec(), prost.encode_to_vec());
    assert_eq!(ours.encoded_len(), prost.encoded_len());
}
