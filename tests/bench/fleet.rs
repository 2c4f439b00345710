//! A fleet of `StreamSecrets` streams that behave like Envoys watching `ALL`: each one
//! sends an Envoy 1.40 node, ACKs every response, and reports when it received which
//! partner.org bundle.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher as _;
use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{BuildVersion, Node, node::UserAgentVersionType};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, SpiffeCertValidatorConfig, secret::Type,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use prost::Message as _;
use steeple_e2e::sds_client::{self, SdsClient};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

/// The resource every stream watches: the bundle set, own and federated.
pub const RESOURCE: &str = "ALL";
/// The federated trust domain whose bundle the benchmark rotates.
pub const PARTNER_TRUST_DOMAIN: &str = "partner.org";
const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// One response as one stream saw it.
#[derive(Debug)]
struct Event {
    stream: usize,
    at: Instant,
    first: bool,
    /// Fingerprint of the partner.org bundle in the SPIFFE validator, or why the stream
    /// failed.
    partner: Result<Option<u64>, String>,
}

/// N open streams and what they report.
#[derive(Debug)]
pub struct Fleet {
    streams: usize,
    started: Instant,
    tasks: JoinSet<()>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Fleet {
    /// Opens `streams` streams to the SDS server at `socket`, `per_connection` of them
    /// on each HTTP/2 connection (a tonic channel of its own), all at once.
    pub fn open(socket: &Path, streams: usize, per_connection: usize) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        let mut client = sds_client::connect(socket);
        for stream in 0..streams {
            if stream > 0 && stream % per_connection == 0 {
                client = sds_client::connect(socket);
            }
            tasks.spawn(follow(stream, client.clone(), tx.clone()));
        }
        Self {
            streams,
            started,
            tasks,
            events,
        }
    }

    /// When the fleet started opening its streams.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits until every stream has received a response carrying the partner.org bundle
    /// with fingerprint `partner`, and returns for each stream the instant it did. With
    /// `first_only`, every stream's first response must be that one.
    pub async fn arrivals(
        &mut self,
        partner: u64,
        first_only: bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Instant>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut arrived: Vec<Option<Instant>> = vec![None; self.streams];
        let mut missing = self.streams;
        while missing > 0 {
            let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => anyhow::bail!("every stream task ended"),
                Err(_) => anyhow::bail!(
                    "{missing} of {} streams did not receive the expected bundle within {timeout:?}",
                    self.streams
                ),
            };
            match event.partner {
                Err(e) => anyhow::bail!("stream {} failed: {e}", event.stream),
                Ok(Some(got)) if got == partner => {
                    let slot = &mut arrived[event.stream];
                    if slot.is_none() {
                        *slot = Some(event.at);
                        missing -= 1;
                    }
                }
                Ok(got) if first_only && event.first => anyhow::bail!(
                    "stream {}'s first response {}",
                    event.stream,
                    if got.is_some() {
                        "carried another partner.org bundle"
                    } else {
                        "had no partner.org bundle in a SPIFFE validator"
                    }
                ),
                Ok(_) => {}
            }
        }
        Ok(arrived.into_iter().flatten().collect())
    }

    /// Cancels every stream (RST_STREAM) and drops the connections.
    pub async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Fingerprint of the certificates in a PEM text, independent of line endings.
pub fn pem_fingerprint(pem: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for line in pem.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if !line.is_empty() && !line.starts_with(b"-----") {
            hasher.write(line);
        }
    }
    hasher.finish()
}

async fn follow(stream: usize, client: SdsClient, events: mpsc::UnboundedSender<Event>) {
    if let Err(e) = follow_stream(stream, client, &events).await {
        let _ = events.send(Event {
            stream,
            at: Instant::now(),
            first: false,
            partner: Err(format!("{e:#}")),
        });
    }
}

async fn follow_stream(
    stream: usize,
    mut client: SdsClient,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(2);
    tx.send(request(Some(envoy_node()), "", "")).await?;
    let mut inbound = client
        .stream_secrets(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut first = true;
    while let Some(response) = inbound.message().await? {
        let at = Instant::now();
        // ACK before anything else, as Envoy does once it has applied the secret.
        tx.send(request(None, &response.version_info, &response.nonce))
            .await?;
        let partner = Ok(partner_fingerprint(&response));
        events
            .send(Event {
                stream,
                at,
                first,
                partner,
            })
            .map_err(|_| anyhow::anyhow!("the benchmark stopped listening"))?;
        first = false;
    }
    anyhow::bail!("the server ended the stream")
}

/// The first request (with the node) or an ACK of `version`/`nonce`.
fn request(node: Option<Node>, version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        resource_names: vec![RESOURCE.to_owned()],
        type_url: SECRET_TYPE_URL.to_owned(),
        ..Default::default()
    }
}

/// An Envoy 1.40 node, so both agents serve the SPIFFE certificate validator.
fn envoy_node() -> Node {
    let version = SemanticVersion {
        major_number: 1,
        minor_number: 40,
        patch: 0,
    };
    Node {
        id: "steeple-bench".to_owned(),
        cluster: "steeple-bench".to_owned(),
        user_agent_name: "envoy".to_owned(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(version),
            metadata: None,
        })),
        ..Default::default()
    }
}

/// The fingerprint of the partner.org bundle in `ALL`'s SPIFFE validator, if there.
fn partner_fingerprint(response: &DiscoveryResponse) -> Option<u64> {
    let secret = response
        .resources
        .iter()
        .filter_map(|any| Secret::decode(any.value.as_slice()).ok())
        .find(|s| s.name == RESOURCE)?;
    let Some(Type::ValidationContext(context)) = secret.r#type else {
        return None;
    };
    let typed = context.custom_validator_config?.typed_config?;
    let config = SpiffeCertValidatorConfig::decode(typed.value.as_slice()).ok()?;
    let partner = config
        .trust_domains
        .into_iter()
        .find(|td| td.name.trim_start_matches("spiffe://") == PARTNER_TRUST_DOMAIN)?;
    match partner.trust_bundle?.specifier? {
        Specifier::InlineBytes(pem) => Some(pem_fingerprint(&pem)),
        Specifier::InlineString(pem) => Some(pem_fingerprint(pem.as_bytes())),
        _ => None,
    }
}
