//! N consumers of the agent's AWS-backed secrets: `StreamSecrets` streams that behave like
//! Envoys (an Envoy node, an ACK for every response), each subscribed to the same
//! resources, counting the responses they receive.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use steeple_e2e::sds_client::{self, SdsClient};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Streams per HTTP/2 connection, as in `sds_fanout`.
const PER_CONNECTION: usize = 100;

/// What the streams report, shared.
#[derive(Debug, Default)]
struct Counters {
    /// Streams that have received every resource at least once.
    ready: AtomicUsize,
    /// Responses received, all streams together.
    responses: AtomicU64,
    /// Streams that failed.
    failed: AtomicUsize,
}

/// Open consumer streams.
#[derive(Debug)]
pub struct Consumers {
    count: usize,
    counters: Arc<Counters>,
    tasks: JoinSet<()>,
}

impl Consumers {
    /// Opens `count` streams on `socket`, each subscribed to `resources`.
    pub fn open(socket: &Path, count: usize, resources: &[&str]) -> Self {
        let counters = Arc::new(Counters::default());
        let resources: Arc<[String]> = resources.iter().map(|r| (*r).to_owned()).collect();
        let mut tasks = JoinSet::new();
        let mut client: Option<SdsClient> = None;
        for i in 0..count {
            let client = match &client {
                Some(c) if i % PER_CONNECTION != 0 => c.clone(),
                _ => client.insert(sds_client::connect(socket)).clone(),
            };
            let (counters, resources) = (counters.clone(), resources.clone());
            tasks.spawn(async move {
                if follow(client, &resources, &counters).await.is_err() {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Self {
            count,
            counters,
            tasks,
        }
    }

    /// Waits until every stream has received every resource, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let failed = self.counters.failed.load(Ordering::Relaxed);
            anyhow::ensure!(failed == 0, "{failed} consumer streams failed");
            let ready = self.counters.ready.load(Ordering::Relaxed);
            if ready == self.count {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "only {ready} of {} consumers received every resource within {timeout:?}",
                self.count
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Responses received so far, all streams together.
    pub fn responses(&self) -> u64 {
        self.counters.responses.load(Ordering::Relaxed)
    }

    /// Streams that failed so far.
    pub fn failed(&self) -> usize {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Cancels every stream and drops the connections.
    pub async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn follow(
    mut client: SdsClient,
    resources: &[String],
    counters: &Counters,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(2);
    let node = sds_client::envoy_node("steeple-bench-consumer");
    tx.send(request(Some(node), resources, "", "")).await?;
    let mut inbound = client
        .stream_secrets(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut seen = HashSet::new();
    let mut ready = false;
    while let Some(response) = inbound.message().await? {
        tx.send(request(
            None,
            resources,
            &response.version_info,
            &response.nonce,
        ))
        .await?;
        counters.responses.fetch_add(1, Ordering::Relaxed);
        for secret in sds_client::decode(&response)? {
            seen.insert(secret.name);
        }
        if !ready && resources.iter().all(|r| seen.contains(r)) {
            ready = true;
            counters.ready.fetch_add(1, Ordering::Relaxed);
        }
    }
    anyhow::bail!("the agent ended the stream")
}

/// The first request (with the node) or an ACK of `version`/`nonce`.
fn request(
    node: Option<Node>,
    resources: &[String],
    version: &str,
    nonce: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        resource_names: resources.to_vec(),
        type_url: SECRET_TYPE_URL.to_owned(),
        ..Default::default()
    }
}
