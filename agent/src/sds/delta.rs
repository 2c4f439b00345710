//! Incremental SDS (`DeltaSecrets`): the client subscribes and unsubscribes names, each
//! response carries only what changed, and a resource that goes away is removed for real.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tonic::Status;

use super::limits::SdsSettings;
use super::resources::{ClientCaps, SECRET_TYPE_URL, encoded};
use super::stream::Protocol;
use super::wire::{DeltaResource, DeltaResponse};
use crate::metrics::{SdsFlavour, metrics};
use crate::store::View;

const WILDCARD: &str = "*";

/// One `DeltaSecrets` stream.
#[derive(Debug)]
pub struct DeltaStream {
    settings: Arc<SdsSettings>,
    caps: Option<ClientCaps>,
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// Name → version the client holds.
    sent: HashMap<String, String>,
    nonce: u64,
}

impl DeltaStream {
    /// A stream that has seen no request yet.
    pub fn new(settings: Arc<SdsSettings>) -> Self {
        Self {
            settings,
            caps: None,
            wildcard: false,
            subscribed: BTreeSet::new(),
            sent: HashMap::new(),
            nonce: 0,
        }
    }

    fn watches(&self, name: &str) -> bool {
        self.wildcard || self.subscribed.contains(name)
    }

    fn respond(&mut self, snapshot: &View) -> Option<DeltaResponse> {
        let caps = self.caps?;
        let mut resources = Vec::new();
        let candidates: Vec<&String> = if self.wildcard {
            snapshot.iter().map(|(n, _)| n).collect()
        } else {
            self.subscribed.iter().collect()
        };
        for name in candidates {
            let Some(entry) = snapshot.get(name) else {
                continue;
            };
            let version = entry.version.to_string();
            if self.sent.get(name) != Some(&version) {
                resources.push(DeltaResource {
                    name: name.clone(),
                    version: version.clone(),
                    resource: encoded(name, entry, caps),
                });
                self.sent.insert(name.clone(), version);
            }
        }
        let mut removed: Vec<String> = self
            .sent
            .keys()
            .filter(|n| snapshot.get(n).is_none() || !self.watches(n))
            .cloned()
            .collect();
        removed.sort_unstable();
        for name in &removed {
            self.sent.remove(name);
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        self.nonce += 1;
        Some(DeltaResponse {
            system_version_info: snapshot.generation().to_string(),
            resources,
            type_url: SECRET_TYPE_URL.to_owned(),
            removed_resources: removed,
            nonce: self.nonce.to_string(),
        })
    }
}

impl Protocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    const FLAVOUR: SdsFlavour = SdsFlavour::Delta;

    fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &View,
    ) -> Result<Option<DeltaResponse>, Status> {
        SdsSettings::check_type_url(&request.type_url)?;
        let settings = &self.settings;
        settings.check_names(&request.resource_names_subscribe)?;
        settings.check_names(&request.resource_names_unsubscribe)?;
        settings.check_names(request.initial_resource_versions.keys())?;
        if self.caps.is_none() {
            let disabled = settings.disable_spiffe_cert_validation;
            self.caps = Some(ClientCaps::from_node(request.node.as_ref(), disabled));
            // Legacy wildcard: a first request that subscribes to nothing.
            self.wildcard = request.resource_names_subscribe.is_empty();
            self.sent = request.initial_resource_versions;
        }
        for name in request.resource_names_subscribe {
            if name == WILDCARD {
                self.wildcard = true;
            } else {
                self.subscribed.insert(name);
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
            } else {
                self.subscribed.remove(name);
                self.sent.remove(name);
            }
        }
        // Each request is bounded; so is what a stream accumulates over many of them.
        if self.subscribed.len() > settings.max_resource_names {
            return Err(Status::resource_exhausted(format!(
                "this stream subscribes to more than {} resource names (sds.max_resource_names)",
                settings.max_resource_names
            )));
        }
        if let (false, Some(detail)) = (request.response_nonce.is_empty(), &request.error_detail) {
            metrics().sds_nack(Self::FLAVOUR);
            tracing::warn!(reason = %detail.message, nonce = %request.response_nonce, "SDS delta client rejected (NACKed) a response");
        }
        Ok(self.respond(snapshot))
    }

    fn on_snapshot(&mut self, snapshot: &View) -> Option<DeltaResponse> {
        self.respond(snapshot)
    }

    fn watched(&self) -> Option<Vec<&str>> {
        (!self.wildcard).then(|| self.subscribed.iter().map(String::as_str).collect())
    }

    fn requested_names<'a>(&self, request: &'a DeltaDiscoveryRequest) -> Option<Vec<&'a str>> {
        let names = &request.resource_names_subscribe;
        let legacy_wildcard = self.caps.is_none() && names.is_empty();
        if legacy_wildcard || names.iter().any(|n| n == WILDCARD) {
            return None;
        }
        Some(names.iter().map(String::as_str).collect())
    }
}
