//! SDS responses as they go on the wire. Each resource is a `google.protobuf.Any` encoded
//! once per store entry and client variant ([`crate::store::Encodings`]) and shared by
//! every stream that sends it; a response only adds its few own fields around those bytes.
//! The bytes written are what prost writes for the `DiscoveryResponse` and
//! `DeltaDiscoveryResponse` with the same content (fields in tag order, as prost writes).

use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::store::Encoded;

/// A state-of-the-world response (`envoy.service.discovery.v3.DiscoveryResponse`), also
/// the answer to `FetchSecrets` (with no nonce).
#[derive(Debug, Clone, Default)]
pub struct SotwResponse {
    /// `version_info`.
    pub version_info: String,
    /// `resources`: encoded `Any`s.
    pub resources: Vec<Encoded>,
    /// `type_url`.
    pub type_url: String,
    /// `nonce`.
    pub nonce: String,
}

/// One resource of a delta response (`envoy.service.discovery.v3.Resource`).
#[derive(Debug, Clone)]
pub struct DeltaResource {
    /// `name`.
    pub name: String,
    /// `version`.
    pub version: String,
    /// `resource`: an encoded `Any`.
    pub resource: Encoded,
}

/// An incremental response (`envoy.service.discovery.v3.DeltaDiscoveryResponse`).
#[derive(Debug, Clone, Default)]
pub struct DeltaResponse {
    /// `system_version_info`.
    pub system_version_info: String,
    /// `resources`.
    pub resources: Vec<DeltaResource>,
    /// `type_url`.
    pub type_url: String,
    /// `removed_resources`.
    pub removed_resources: Vec<String>,
    /// `nonce`.
    pub nonce: String,
}

/// A response the SDS codec writes without building a prost message first.
pub trait WireMessage: Send + 'static {
    /// The encoded length in bytes.
    fn encoded_len(&self) -> usize;
    /// Writes the encoding to `buf`.
    fn encode_raw(&self, buf: &mut impl BufMut);
    /// The encoding, as a vector.
    fn encode_to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode_raw(&mut buf);
        buf
    }
}

impl WireMessage for SotwResponse {
    fn encoded_len(&self) -> usize {
        let resources: usize = self
            .resources
            .iter()
            .map(|r| embedded_len(2, r.len()))
            .sum();
        string_len(1, &self.version_info)
            + resources
            + string_len(4, &self.type_url)
            + string_len(5, &self.nonce)
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.version_info, buf);
        for resource in &self.resources {
            put_embedded(2, resource.expose(), buf);
        }
        put_string(4, &self.type_url, buf);
        put_string(5, &self.nonce, buf);
    }
}

impl DeltaResource {
    fn body_len(&self) -> usize {
        string_len(1, &self.version)
            + embedded_len(2, self.resource.len())
            + string_len(3, &self.name)
    }
}

impl WireMessage for DeltaResponse {
    fn encoded_len(&self) -> usize {
        let resources: usize = self
            .resources
            .iter()
            .map(|r| embedded_len(2, r.body_len()))
            .sum();
        let removed: usize = self
            .removed_resources
            .iter()
            .map(|n| embedded_len(6, n.len()))
            .sum();
        string_len(1, &self.system_version_info)
            + resources
            + string_len(4, &self.type_url)
            + removed
            + string_len(5, &self.nonce)
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.system_version_info, buf);
        for resource in &self.resources {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(resource.body_len() as u64, buf);
            put_string(1, &resource.version, buf);
            put_embedded(2, resource.resource.expose(), buf);
            put_string(3, &resource.name, buf);
        }
        put_string(4, &self.type_url, buf);
        put_string(5, &self.nonce, buf);
        for name in &self.removed_resources {
            put_embedded(6, name.as_bytes(), buf);
        }
    }
}

/// A singular `string` field: left out when empty, as proto3 does.
fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        embedded_len(tag, value.len())
    }
}

fn put_string(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        put_embedded(tag, value.as_bytes(), buf);
    }
}

/// A length-delimited field (an embedded message, a string) of `len` bytes.
fn embedded_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_embedded(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
