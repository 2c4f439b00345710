//! Turning store entries into Envoy `Secret` resources, as SPIRE agent's SDS does, with
//! the validation-context flavour chosen per client.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Node, TypedExtensionConfig, data_source::Specifier, node::UserAgentVersionType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, GenericSecret, Secret as EnvoySecret, SpiffeCertValidatorConfig,
    TlsCertificate, secret::Type, spiffe_cert_validator_config::TrustDomain,
};
use envoy_types::pb::google::protobuf::{Any, value::Kind};
use prost::Message;
use steeple_plugin_api::SecretBytes;
use zeroize::Zeroize;

use crate::store::{Certificate, Encoded, Entry, Secret, TrustBundle};
use crate::svid::{pem_encode, pem_encode_key};

/// The type URL of every SDS resource.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";
const SPIFFE_VALIDATOR_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";
/// Node metadata key by which a client opts out of the SPIFFE validator (as in SPIRE).
const DISABLE_SPIFFE_METADATA: &str = "disable_spiffe_cert_validation";

/// What a client can consume, fixed from the node of its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCaps {
    /// Send validation contexts as the SPIFFE certificate validator (Envoy ≥ 1.18),
    /// rather than a plain `trusted_ca`.
    pub spiffe_validator: bool,
}

impl ClientCaps {
    /// SPIRE's rule: the SPIFFE validator for Envoy ≥ 1.18 unless disabled globally or
    /// by the node's `disable_spiffe_cert_validation` metadata.
    pub fn from_node(node: Option<&Node>, disabled_globally: bool) -> Self {
        let Some(node) = node else {
            return Self {
                spiffe_validator: false,
            };
        };
        let recent_envoy = match &node.user_agent_version_type {
            Some(UserAgentVersionType::UserAgentBuildVersion(build)) => {
                build.version.as_ref().is_some_and(|v| {
                    (v.major_number == 1 && v.minor_number >= 18) || v.major_number > 1
                })
            }
            _ => false,
        };
        let opted_out = node
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get(DISABLE_SPIFFE_METADATA))
            .is_some_and(|v| matches!(v.kind, Some(Kind::BoolValue(true))));
        Self {
            spiffe_validator: recent_envoy && !disabled_globally && !opted_out,
        }
    }
}

/// The store entry `entry`, stored under `name`, as the encoded SDS resource (an `Any`)
/// for a client with `caps`: encoded the first time, then the same shared bytes for every
/// stream. Only validation contexts differ between client variants.
pub fn encoded(name: &str, entry: &Entry, caps: ClientCaps) -> Encoded {
    let variant = match &entry.secret {
        Secret::TrustBundle(_) | Secret::BundleSet(_) => usize::from(caps.spiffe_validator),
        Secret::Certificate(_) | Secret::Generic(_) => 0,
    };
    entry.encodings.get_or_encode(variant, || {
        let mut any = encode(name, &entry.secret, caps);
        let bytes = SecretBytes::new(any.encode_to_vec());
        any.value.zeroize();
        bytes
    })
}

/// Encodes the store entry `secret` as the SDS resource `name` for a client with `caps`.
pub fn encode(name: &str, secret: &Secret, caps: ClientCaps) -> Any {
    let kind = match secret {
        Secret::Certificate(cert) => return encode_certificate(name, cert),
        Secret::TrustBundle(bundle) => validation_context(std::slice::from_ref(bundle), caps),
        Secret::BundleSet(bundles) => validation_context(bundles, caps),
        Secret::Generic(bytes) => {
            let mut secret = envoy_secret(
                name,
                Type::GenericSecret(GenericSecret {
                    secret: Some(inline(bytes.expose().to_vec())),
                    ..Default::default()
                }),
            );
            let any = to_any(&secret);
            scrub(&mut secret);
            return any;
        }
    };
    to_any(&envoy_secret(name, Type::ValidationContext(kind)))
}

fn encode_certificate(name: &str, cert: &Certificate) -> Any {
    let chain: Vec<&[u8]> = cert.chain_der.iter().map(Vec::as_slice).collect();
    let key_pem = pem_encode_key(&cert.key_pkcs8);
    let mut secret = envoy_secret(
        name,
        Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(pem_encode("CERTIFICATE", &chain))),
            private_key: Some(inline(key_pem.expose().to_vec())),
            ..Default::default()
        }),
    );
    let any = to_any(&secret);
    scrub(&mut secret);
    any
}

fn validation_context(
    bundles: &[Arc<TrustBundle>],
    caps: ClientCaps,
) -> CertificateValidationContext {
    let pem = |b: &TrustBundle| {
        let roots: Vec<&[u8]> = b.roots_der.iter().map(Vec::as_slice).collect();
        pem_encode("CERTIFICATE", &roots)
    };
    if !caps.spiffe_validator {
        return CertificateValidationContext {
            trusted_ca: Some(inline(bundles.iter().flat_map(|b| pem(b)).collect())),
            ..Default::default()
        };
    }
    let config = SpiffeCertValidatorConfig {
        trust_domains: bundles
            .iter()
            .map(|b| TrustDomain {
                name: b.trust_domain.clone(),
                trust_bundle: Some(inline(pem(b))),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    CertificateValidationContext {
        custom_validator_config: Some(TypedExtensionConfig {
            name: SPIFFE_VALIDATOR.to_owned(),
            typed_config: Some(Any {
                type_url: SPIFFE_VALIDATOR_TYPE_URL.to_owned(),
                value: config.encode_to_vec(),
            }),
        }),
        ..Default::default()
    }
}

fn envoy_secret(name: &str, kind: Type) -> EnvoySecret {
    EnvoySecret {
        name: name.to_owned(),
        r#type: Some(kind),
    }
}

fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        ..Default::default()
    }
}

fn to_any(secret: &EnvoySecret) -> Any {
    Any {
        type_url: SECRET_TYPE_URL.to_owned(),
        value: secret.encode_to_vec(),
    }
}

/// Zeroizes the plaintext copies inside an encoded-and-done message.
fn scrub(secret: &mut EnvoySecret) {
    let sources: Vec<&mut DataSource> = match &mut secret.r#type {
        Some(Type::TlsCertificate(tls)) => tls.private_key.iter_mut().collect(),
        Some(Type::GenericSecret(generic)) => generic.secret.iter_mut().collect(),
        _ => Vec::new(),
    };
    for source in sources {
        if let Some(Specifier::InlineBytes(bytes)) = &mut source.specifier {
            bytes.zeroize();
        }
    }
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
