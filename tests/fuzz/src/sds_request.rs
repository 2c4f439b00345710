//! SDS requests: a sequence of length-delimited protobuf messages, each decoded as a
//! `DiscoveryRequest` (fed to a state-of-the-world stream and to `FetchSecrets`) and as a
//! `DeltaDiscoveryRequest` (fed to a delta stream), with a store change after each, for an
//! unrestricted and a restricted caller.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret as EnvoySecret;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use steeple::authz::{Caller, Grant, Policy, Rule, SharedPolicy};
use steeple::sds::activity::Activity;
use steeple::sds::admission::ConnectionLimits;
use steeple::sds::delta::DeltaStream;
use steeple::sds::peer::ConnectedCaller;
use steeple::sds::resources::SECRET_TYPE_URL;
use steeple::sds::sotw::SotwStream;
use steeple::sds::stream::Protocol;
use steeple::sds::wire::{DeltaResponse, SotwResponse, WireMessage};
use steeple::sds::{SdsService, SdsSettings};
use steeple::store::{Certificate, Secret, SecretStore, Source, TrustBundle, View};
use steeple_plugin_api::SecretBytes;

/// Requests after this many are ignored (a stream is short-lived state).
const MAX_FRAMES: usize = 16;
/// The caller every resource is granted to.
const UNRESTRICTED_UID: u32 = 0;
/// The caller granted only [`RESTRICTED_RESOURCES`].
const RESTRICTED_UID: u32 = 1000;
const RESTRICTED_RESOURCES: &[&str] = &["a", "default", "spiffe://example.org/*", "ROOT*"];

/// Responses produced for one input, over both callers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SdsOutcome {
    /// `StreamSecrets` responses.
    pub sotw_responses: usize,
    /// `DeltaSecrets` responses.
    pub delta_responses: usize,
    /// Successful `FetchSecrets` calls.
    pub fetches: usize,
    /// Requests refused (which ends the stream).
    pub refusals: usize,
}

/// Runs the requests in `data` for both callers.
pub fn run(data: &[u8]) -> SdsOutcome {
    let frames = frames(data);
    let mut outcome = SdsOutcome::default();
    for uid in [UNRESTRICTED_UID, RESTRICTED_UID] {
        Session::new(uid).run(&frames, &mut outcome);
    }
    outcome
}

/// Splits `data` into varint-length-prefixed frames; a length past the end takes the rest.
pub fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < MAX_FRAMES {
        let Ok(len) = prost::encoding::decode_varint(&mut data) else {
            break;
        };
        let len = usize::try_from(len).map_or(data.len(), |l| l.min(data.len()));
        let (frame, rest) = data.split_at(len);
        out.push(frame);
        data = rest;
    }
    out
}

/// One caller's streams over one store.
struct Session {
    store: Arc<SecretStore>,
    grant: Grant,
    service: SdsService,
    caller: Arc<Caller>,
    sotw: Option<SotwStream>,
    delta: Option<DeltaStream>,
    sotw_nonce: u64,
    delta_nonce: u64,
}

impl Session {
    fn new(uid: u32) -> Self {
        let settings = SdsSettings {
            max_resource_names: 8,
            max_resource_name_len: 64,
            max_request_bytes: 64 * 1024,
            disable_spiffe_cert_validation: false,
            connections: ConnectionLimits {
                max_connections: 16,
                max_connections_per_uid: 16,
                handshake_timeout: std::time::Duration::from_secs(10),
                idle_timeout: std::time::Duration::from_secs(60),
                require_pid: false,
            },
            max_streams_per_connection: 64,
            max_streams: 64,
        };
        let rule = |uid: u32, resources: &[&str]| Rule {
            spiffe_ids: Vec::new(),
            uids: vec![uid],
            gids: Vec::new(),
            exe: None,
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        };
        let policy = Policy::new(
            vec![
                rule(UNRESTRICTED_UID, &["*"]),
                rule(RESTRICTED_UID, RESTRICTED_RESOURCES),
            ],
            UNRESTRICTED_UID,
        );
        let store = Arc::new(SecretStore::new());
        store.sync_source(&Source::Envelopes, secrets(0));
        let caller = Arc::new(Caller::from_peer(uid, uid, None));
        let shared = Arc::new(settings.clone());
        Self {
            grant: Grant::new(caller.clone(), &policy),
            service: SdsService::new(
                store.clone(),
                settings,
                SharedPolicy::new(policy),
                tokio_util::sync::CancellationToken::new(),
            ),
            store,
            caller,
            sotw: Some(SotwStream::new(shared.clone())),
            delta: Some(DeltaStream::new(shared)),
            sotw_nonce: 0,
            delta_nonce: 0,
        }
    }

    /// As `sds::stream::run` does: authorize, handle, and on a refusal end the stream.
    fn run(mut self, frames: &[&[u8]], outcome: &mut SdsOutcome) {
        for (i, frame) in frames.iter().enumerate() {
            let snapshot = self.store.view();
            if let Ok(request) = DiscoveryRequest::decode(*frame) {
                self.fetch(request.clone(), &snapshot, outcome);
                self.sotw_request(request, &snapshot, outcome);
            } else {
                self.sotw = None;
            }
            if let Ok(request) = DeltaDiscoveryRequest::decode(*frame) {
                self.delta_request(request, &snapshot, outcome);
            } else {
                self.delta = None;
            }
            self.store.sync_source(&Source::Envelopes, secrets(i + 1));
            let snapshot = self.store.view();
            if let Some(response) = self.sotw.as_mut().and_then(|s| s.on_snapshot(&snapshot)) {
                self.check_sotw(&response, &snapshot, outcome);
            }
            if let Some(response) = self.delta.as_mut().and_then(|d| d.on_snapshot(&snapshot)) {
                self.check_delta(&response, &snapshot, outcome);
            }
        }
    }

    fn sotw_request(
        &mut self,
        request: DiscoveryRequest,
        snapshot: &View,
        outcome: &mut SdsOutcome,
    ) {
        let Some(stream) = self.sotw.as_mut() else {
            return;
        };
        let verdict = self
            .grant
            .authorize_request(stream.requested_names(&request))
            .and_then(|()| stream.on_request(request, snapshot));
        match verdict {
            Ok(Some(response)) => self.check_sotw(&response, snapshot, outcome),
            Ok(None) => {}
            Err(_) => {
                outcome.refusals += 1;
                self.sotw = None;
            }
        }
    }

    fn delta_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &View,
        outcome: &mut SdsOutcome,
    ) {
        let Some(stream) = self.delta.as_mut() else {
            return;
        };
        let verdict = self
            .grant
            .authorize_request(stream.requested_names(&request))
            .and_then(|()| stream.on_request(request, snapshot));
        match verdict {
            Ok(Some(response)) => self.check_delta(&response, snapshot, outcome),
            Ok(None) => {}
            Err(_) => {
                outcome.refusals += 1;
                self.delta = None;
            }
        }
    }

    /// `FetchSecrets` through the service itself, with this connection's caller.
    fn fetch(&self, request: DiscoveryRequest, snapshot: &View, outcome: &mut SdsOutcome) {
        let mut request = tonic::Request::new(request);
        request.extensions_mut().insert(ConnectedCaller {
            caller: self.caller.clone(),
            activity: Activity::new(),
        });
        let Ok(response) = futures::executor::block_on(self.service.fetch_secrets(request)) else {
            return;
        };
        let response = on_the_wire(&response.into_inner());
        assert_eq!(response.type_url, SECRET_TYPE_URL);
        let names = self.check_resources(response.resources.iter(), snapshot);
        assert_eq!(names.len(), response.resources.len(), "a resource twice");
        outcome.fetches += 1;
    }

    /// Never an empty response; only granted, existing resources; nonces increase.
    fn check_sotw(&mut self, response: &SotwResponse, snapshot: &View, outcome: &mut SdsOutcome) {
        let response = on_the_wire(response);
        assert!(!response.resources.is_empty(), "an empty SotW response");
        assert_eq!(response.type_url, SECRET_TYPE_URL);
        let names = self.check_resources(response.resources.iter(), snapshot);
        assert_eq!(names.len(), response.resources.len(), "a resource twice");
        self.sotw_nonce = next_nonce(self.sotw_nonce, &response.nonce);
        outcome.sotw_responses += 1;
    }

    /// Never an empty response; only granted, existing resources; nothing both sent and
    /// removed; nonces increase.
    fn check_delta(&mut self, response: &DeltaResponse, snapshot: &View, outcome: &mut SdsOutcome) {
        let Ok(response) = DeltaDiscoveryResponse::decode(response.encode_to_vec().as_slice())
        else {
            panic!("a delta response that does not decode");
        };
        assert!(
            !response.resources.is_empty() || !response.removed_resources.is_empty(),
            "an empty delta response"
        );
        assert_eq!(response.type_url, SECRET_TYPE_URL);
        let mut names = Vec::new();
        for resource in &response.resources {
            let Some(any) = &resource.resource else {
                panic!("delta resource {:?} without a body", resource.name);
            };
            let name = self.check_resources(std::iter::once(any), snapshot);
            assert_eq!(
                name,
                std::slice::from_ref(&resource.name),
                "resource name differs"
            );
            names.push(resource.name.as_str());
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), response.resources.len(), "a resource twice");
        for removed in &response.removed_resources {
            assert!(
                !names.contains(&removed.as_str()),
                "{removed:?} both sent and removed"
            );
        }
        self.delta_nonce = next_nonce(self.delta_nonce, &response.nonce);
        outcome.delta_responses += 1;
    }

    /// Decodes each resource and checks it is a granted name present in `snapshot`;
    /// returns the distinct names.
    fn check_resources<'a>(
        &self,
        resources: impl Iterator<Item = &'a Any>,
        snapshot: &View,
    ) -> Vec<String> {
        let mut names: Vec<String> = resources
            .map(|any| {
                assert_eq!(any.type_url, SECRET_TYPE_URL);
                let Ok(secret) = EnvoySecret::decode(any.value.as_slice()) else {
                    panic!("a resource that does not decode as a Secret");
                };
                assert!(
                    self.grant.covers(&secret.name),
                    "served {:?} to a caller not granted it",
                    secret.name
                );
                assert!(
                    snapshot.get(&secret.name).is_some(),
                    "served a missing name"
                );
                secret.name
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// The store's content after `step` changes: some names come and go, `a` changes value.
fn secrets(step: usize) -> Vec<(String, Secret)> {
    let generic = |v: &str| Secret::Generic(SecretBytes::copy_from(v.as_bytes()));
    let bundle = |td: &str| {
        std::sync::Arc::new(TrustBundle {
            trust_domain: td.to_owned(),
            roots_der: vec![vec![0x30, 0x03, 0x02, 0x01, td.len() as u8]],
        })
    };
    let mut out = vec![
        ("a".to_owned(), generic(&format!("a-{}", step / 2))),
        (
            "default".to_owned(),
            Secret::Certificate(std::sync::Arc::new(Certificate {
                spiffe_id: "spiffe://example.org/workload".to_owned(),
                chain_der: vec![vec![0x30, 0x00], vec![0x30, 0x01, 0x00]],
                key_pkcs8: SecretBytes::copy_from(b"not a key"),
                not_before: std::time::UNIX_EPOCH,
                not_after: std::time::UNIX_EPOCH,
            })),
        ),
        (
            "ROOTCA".to_owned(),
            Secret::TrustBundle(bundle("example.org")),
        ),
        (
            "ALL".to_owned(),
            Secret::BundleSet(vec![bundle("example.org"), bundle("other.org")]),
        ),
        (
            "spiffe://other.org".to_owned(),
            Secret::TrustBundle(bundle("other.org")),
        ),
    ];
    if step % 3 != 1 {
        out.push(("b".to_owned(), generic("b")));
    }
    if step % 2 == 1 {
        out.push(("spiffe://example.org/x".to_owned(), generic("x")));
    }
    out
}

/// What a client receives for `response`.
fn on_the_wire(response: &SotwResponse) -> DiscoveryResponse {
    let Ok(decoded) = DiscoveryResponse::decode(response.encode_to_vec().as_slice()) else {
        panic!("a response that does not decode");
    };
    decoded
}

/// Parses a response nonce and checks it is above the previous one.
fn next_nonce(previous: u64, nonce: &str) -> u64 {
    let Ok(nonce) = nonce.parse::<u64>() else {
        panic!("nonce {nonce:?} is not a number");
    };
    assert!(nonce > previous, "nonce {nonce} after {previous}");
    nonce
}
