//! Many consumers of the credentials at once: SDS streams that ACK like Envoy and remember
//! every credential set pushed to them, and a poller of the container endpoint that
//! records any moment without valid credentials.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use steeple_e2e::sds_client;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use super::support::{SeenCredentials, container_credentials};

/// Streams per HTTP/2 connection, as in the fan-out bench.
const STREAMS_PER_CONNECTION: usize = 100;

/// Open SDS streams, each collecting the access key ids pushed to it.
pub struct Fleet {
    stop: tokio_util::sync::CancellationToken,
    tasks: JoinSet<anyhow::Result<(usize, BTreeSet<String>)>>,
}

impl Fleet {
    /// Opens `n` StreamSecrets streams for `name` and waits until each has its first
    /// response.
    pub async fn subscribe(socket: &Path, name: &str, n: usize) -> anyhow::Result<Self> {
        let stop = tokio_util::sync::CancellationToken::new();
        let (ready_tx, mut ready_rx) = mpsc::channel(n);
        let mut tasks = JoinSet::new();
        let mut client = sds_client::connect(socket);
        for i in 0..n {
            if i % STREAMS_PER_CONNECTION == 0 {
                client = sds_client::connect(socket);
            }
            tasks.spawn(consume(
                i,
                client.clone(),
                name.to_owned(),
                ready_tx.clone(),
                stop.clone(),
            ));
        }
        drop(ready_tx);
        let all_ready = async {
            for _ in 0..n {
                ready_rx
                    .recv()
                    .await
                    .ok_or_else(|| anyhow::anyhow!("a consumer ended before its first push"))?;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(60), all_ready).await??;
        Ok(Self { stop, tasks })
    }

    /// Closes every stream; returns what each saw, in consumer order.
    pub async fn finish(mut self) -> anyhow::Result<Vec<BTreeSet<String>>> {
        self.stop.cancel();
        let mut seen = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            seen.push(done??);
        }
        seen.sort_by_key(|(i, _)| *i);
        Ok(seen.into_iter().map(|(_, keys)| keys).collect())
    }
}

async fn consume(
    index: usize,
    mut client: sds_client::SdsClient,
    name: String,
    ready: mpsc::Sender<()>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(usize, BTreeSet<String>)> {
    let (requests, rx) = mpsc::channel(4);
    requests.send(sds_client::request(&[name.as_str()])).await?;
    let mut responses = client
        .stream_secrets(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut keys = BTreeSet::new();
    let mut announced = false;
    loop {
        let response = tokio::select! {
            () = stop.cancelled() => return Ok((index, keys)),
            next = responses.message() => next?,
        };
        let Some(response) = response else {
            anyhow::bail!("consumer {index}: the stream ended");
        };
        for secret in sds_client::decode(&response)? {
            let bytes = sds_client::secret_bytes(&secret).unwrap_or_default();
            keys.insert(SeenCredentials::parse(&bytes)?.access_key_id);
        }
        if !announced && !keys.is_empty() {
            announced = true;
            ready.send(()).await?;
        }
        requests
            .send(DiscoveryRequest {
                version_info: response.version_info.clone(),
                response_nonce: response.nonce.clone(),
                ..sds_client::request(&[name.as_str()])
            })
            .await?;
    }
}

/// What polling the container endpoint saw.
#[derive(Debug, Default)]
pub struct Polled {
    /// Every distinct access key id served.
    pub access_keys: BTreeSet<String>,
    /// Each poll that got no valid credentials, and why.
    pub failures: Vec<String>,
}

/// Polls the container endpoint every 250 ms for `window`.
pub async fn poll_container(port: u16, window: Duration) -> anyhow::Result<Polled> {
    let mut polled = Polled::default();
    let deadline = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < deadline {
        match container_credentials(port).await? {
            (200, Some(c)) if c.expiration > time::OffsetDateTime::now_utc() => {
                polled.access_keys.insert(c.access_key_id);
            }
            (200, Some(c)) => polled
                .failures
                .push(format!("expired credentials served: {}", c.expiration)),
            (status, _) => polled.failures.push(format!("status {status}")),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(polled)
}
