//! A minimal SDS client for the suites: fetch and stream secrets from a Unix socket (also
//! as Envoy streams them, ACKing each response), and read what came back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{BuildVersion, Node, node::UserAgentVersionType};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret::Type};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// The SDS gRPC client type.
pub type SdsClient = SecretDiscoveryServiceClient<Channel>;

/// The type URL of an SDS `Secret`.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Connects (lazily) to the SDS server at `socket`.
pub fn connect(socket: &Path) -> SdsClient {
    let socket: PathBuf = socket.to_owned();
    let channel = Endpoint::from_static("http://localhost").connect_with_connector_lazy(
        tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }),
    );
    SecretDiscoveryServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024)
}

/// A request for `names`.
pub fn request(names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        ..Default::default()
    }
}

/// Fetches `names` once (FetchSecrets).
pub async fn fetch(client: &mut SdsClient, names: &[&str]) -> anyhow::Result<Vec<Secret>> {
    let response = client.fetch_secrets(request(names)).await?.into_inner();
    decode(&response)
}

/// Polls FetchSecrets until every name in `names` is served, at most `timeout`.
pub async fn wait_for(
    socket: &Path,
    names: &[&str],
    timeout: Duration,
) -> anyhow::Result<Vec<Secret>> {
    let mut client = connect(socket);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match fetch(&mut client, names).await {
            Ok(secrets) => return Ok(secrets),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("{names:?} not served within {timeout:?}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Streams `names` as Envoy 1.40 does: one `StreamSecrets` stream whose first request
/// carries an Envoy node named `node_id`, each response handed to `on_response` as soon as
/// it arrives and then ACKed (`version_info` + nonce) as Envoy does once it has applied
/// it. Returns only with an error: the stream failed, the server ended it, or
/// `on_response` failed.
pub async fn stream_like_envoy(
    client: &mut SdsClient,
    node_id: &str,
    names: &[&str],
    mut on_response: impl FnMut(&DiscoveryResponse) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(2);
    let envoy_request = |node: Option<Node>, version: &str, nonce: &str| DiscoveryRequest {
        node,
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        type_url: SECRET_TYPE_URL.to_owned(),
        ..request(names)
    };
    tx.send(envoy_request(Some(envoy_node(node_id)), "", ""))
        .await?;
    let mut inbound = client
        .stream_secrets(ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(response) = inbound.message().await? {
        on_response(&response)?;
        tx.send(envoy_request(None, &response.version_info, &response.nonce))
            .await?;
    }
    anyhow::bail!("the server ended the stream")
}

/// Decodes the `Secret`s of a response.
pub fn decode(response: &DiscoveryResponse) -> anyhow::Result<Vec<Secret>> {
    response
        .resources
        .iter()
        .map(|any| Secret::decode(any.value.as_slice()).context("resource is not a Secret"))
        .collect()
}

/// The inline bytes of a TLS certificate's private key, or of a generic secret.
pub fn secret_bytes(secret: &Secret) -> Option<Vec<u8>> {
    let source = match &secret.r#type {
        Some(Type::TlsCertificate(tls)) => tls.private_key.as_ref(),
        Some(Type::GenericSecret(generic)) => generic.secret.as_ref(),
        _ => None,
    }?;
    match &source.specifier {
        Some(Specifier::InlineBytes(bytes)) => Some(bytes.clone()),
        Some(Specifier::InlineString(text)) => Some(text.clone().into_bytes()),
        _ => None,
    }
}

/// The PEM certificate chain of a TLS certificate.
pub fn certificate_chain(secret: &Secret) -> Option<Vec<u8>> {
    match &secret.r#type {
        Some(Type::TlsCertificate(tls)) => {
            match tls.certificate_chain.as_ref()?.specifier.as_ref()? {
                Specifier::InlineBytes(bytes) => Some(bytes.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Asserts that no line of any secret's PEM/base64 body appears in `logs` — the canary
/// check every suite runs over the agent's captured output.
pub fn assert_not_in_logs(secrets: &[Vec<u8>], logs: &str) -> anyhow::Result<()> {
    for secret in secrets {
        let text = String::from_utf8_lossy(secret);
        for line in text
            .lines()
            .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
        {
            anyhow::ensure!(!logs.contains(line), "a secret leaked into the logs");
        }
    }
    Ok(())
}

/// The node an Envoy 1.40 sends (named `id`), so an agent serves it what it would serve
/// Envoy — the SPIFFE certificate validator among others.
pub fn envoy_node(id: &str) -> Node {
    let version = SemanticVersion {
        major_number: 1,
        minor_number: 40,
        patch: 0,
    };
    Node {
        id: id.to_owned(),
        cluster: id.to_owned(),
        user_agent_name: "envoy".to_owned(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(version),
            metadata: None,
        })),
        ..Default::default()
    }
}
