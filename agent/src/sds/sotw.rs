//! State-of-the-world SDS (`StreamSecrets`): the client names what it wants, and every
//! response carries all of it that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Status;

use super::limits::SdsSettings;
use super::resources::{ClientCaps, SECRET_TYPE_URL, encoded};
use super::stream::Protocol;
use super::wire::SotwResponse;
use crate::metrics::{SdsFlavour, metrics};
use crate::store::View;

/// What a stream watches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Watch {
    /// Every resource (a request with no names, as SPIRE treats it).
    All,
    /// These names.
    Names(BTreeSet<String>),
}

/// One `StreamSecrets` stream.
#[derive(Debug)]
pub struct SotwStream {
    settings: Arc<SdsSettings>,
    caps: Option<ClientCaps>,
    watch: Watch,
    /// Name → store version of what the last response carried.
    sent: BTreeMap<String, u64>,
    nonce: u64,
}

impl SotwStream {
    /// A stream that has seen no request yet.
    pub fn new(settings: Arc<SdsSettings>) -> Self {
        Self {
            settings,
            caps: None,
            watch: Watch::Names(BTreeSet::new()),
            sent: BTreeMap::new(),
            nonce: 0,
        }
    }

    fn current(&self, snapshot: &View) -> BTreeMap<String, u64> {
        match &self.watch {
            Watch::All => snapshot
                .iter()
                .map(|(n, e)| (n.clone(), e.version))
                .collect(),
            Watch::Names(names) => names
                .iter()
                .filter_map(|n| snapshot.get(n).map(|e| (n.clone(), e.version)))
                .collect(),
        }
    }

    /// A response if what the client watches differs from what it last got. Never an
    /// empty one: Envoy rejects a response without its resource, and a name that is not
    /// there yet is sent as soon as it exists.
    fn respond(&mut self, snapshot: &View) -> Option<SotwResponse> {
        let caps = self.caps?;
        let current = self.current(snapshot);
        if current.is_empty() || current == self.sent {
            return None;
        }
        let resources = current
            .keys()
            .filter_map(|name| snapshot.get(name).map(|e| encoded(name, e, caps)))
            .collect();
        self.sent = current;
        self.nonce += 1;
        Some(SotwResponse {
            version_info: snapshot.generation().to_string(),
            resources,
            type_url: SECRET_TYPE_URL.to_owned(),
            nonce: self.nonce.to_string(),
        })
    }
}

impl Protocol for SotwStream {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const FLAVOUR: SdsFlavour = SdsFlavour::StateOfTheWorld;

    fn on_request(
        &mut self,
        request: DiscoveryRequest,
        snapshot: &View,
    ) -> Result<Option<SotwResponse>, Status> {
        SdsSettings::check_type_url(&request.type_url)?;
        self.settings.check_names(&request.resource_names)?;
        let first = self.caps.is_none();
        if first {
            let disabled = self.settings.disable_spiffe_cert_validation;
            self.caps = Some(ClientCaps::from_node(request.node.as_ref(), disabled));
        }
        if !request.response_nonce.is_empty() {
            if request.response_nonce != self.nonce.to_string() {
                tracing::debug!(nonce = %request.response_nonce, "stale SDS nonce ignored");
                return Ok(None);
            }
            if let Some(detail) = &request.error_detail {
                metrics().sds_nack(Self::FLAVOUR);
                tracing::warn!(
                    resources = ?request.resource_names,
                    rejected_version = %request.version_info,
                    reason = %detail.message,
                    "SDS client rejected (NACKed) a response; keeping its last accepted version"
                );
                return Ok(None);
            }
        }
        let watch = if request.resource_names.is_empty() {
            Watch::All
        } else {
            Watch::Names(request.resource_names.into_iter().collect())
        };
        if first || watch != self.watch {
            self.watch = watch;
            return Ok(self.respond(snapshot));
        }
        Ok(None)
    }

    fn on_snapshot(&mut self, snapshot: &View) -> Option<SotwResponse> {
        self.respond(snapshot)
    }

    fn watched(&self) -> Option<Vec<&str>> {
        match &self.watch {
            Watch::All => None,
            Watch::Names(names) => Some(names.iter().map(String::as_str).collect()),
        }
    }

    fn requested_names<'a>(&self, request: &'a DiscoveryRequest) -> Option<Vec<&'a str>> {
        (!request.resource_names.is_empty())
            .then(|| request.resource_names.iter().map(String::as_str).collect())
    }
}
