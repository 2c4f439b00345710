//! A fleet of `StreamSecrets` streams that behave like Envoys watching `ALL`: each one
//! sends an Envoy 1.40 node, ACKs every response, and reports when it received which
//! partner.org bundle.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use steeple_e2e::bench_support;
use steeple_e2e::sds_client::{self, SdsClient};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::partner::PARTNER_TRUST_DOMAIN;

/// The resource every stream watches: the bundle set, own and federated.
pub const RESOURCE: &str = "ALL";

/// How often a long wait reports how many streams are still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// A wait in which no stream got its response for this long has stalled.
const STALLED_AFTER: Duration = Duration::from_secs(30);

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

/// Open streams and what they report.
#[derive(Debug)]
pub struct Fleet {
    socket: PathBuf,
    per_connection: usize,
    client: Option<SdsClient>,
    streams: usize,
    tasks: JoinSet<()>,
    tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Fleet {
    /// A fleet without streams yet, for the SDS server at `socket`, putting
    /// `per_connection` streams on each HTTP/2 connection (a tonic channel of its own).
    pub fn new(socket: &Path, per_connection: usize) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        Self {
            socket: socket.to_owned(),
            per_connection,
            client: None,
            streams: 0,
            tasks: JoinSet::new(),
            tx,
            events,
        }
    }

    /// How many streams were opened.
    pub fn len(&self) -> usize {
        self.streams
    }

    /// Opens `count` more streams at once and returns their indices.
    pub fn add(&mut self, count: usize) -> Range<usize> {
        let added = self.streams..self.streams + count;
        for stream in added.clone() {
            let client = match &self.client {
                Some(client) if stream % self.per_connection != 0 => client.clone(),
                _ => self
                    .client
                    .insert(sds_client::connect(&self.socket))
                    .clone(),
            };
            self.tasks.spawn(follow(stream, client, self.tx.clone()));
        }
        self.streams = added.end;
        added
    }

    /// Waits until each stream in `streams` has received a response carrying the
    /// partner.org bundle with fingerprint `partner`, and returns for each the instant it
    /// did. With `first_only`, each stream's first response must be that one. Fails after
    /// `timeout`, or once no stream has made progress for a while (a stalled server).
    pub async fn arrivals(
        &mut self,
        streams: Range<usize>,
        partner: u64,
        first_only: bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Instant>> {
        let total = streams.len();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut arrived: Vec<Option<Instant>> = vec![None; total];
        let mut missing = total;
        let mut progress_at = tokio::time::Instant::now() + PROGRESS_EVERY;
        let mut last_progress = tokio::time::Instant::now();
        while missing > 0 {
            let wake = deadline.min(progress_at);
            let event = match tokio::time::timeout_at(wake, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => anyhow::bail!("the event channel closed"),
                Err(_) if wake == deadline => anyhow::bail!(
                    "{missing} of {total} streams did not receive the expected bundle within {timeout:?}"
                ),
                Err(_) => {
                    eprintln!("bench:   {missing} of {total} streams still waiting");
                    anyhow::ensure!(
                        last_progress.elapsed() < STALLED_AFTER,
                        "stalled: {missing} of {total} streams still waiting, none answered for {STALLED_AFTER:?}"
                    );
                    progress_at += PROGRESS_EVERY;
                    continue;
                }
            };
            let Some(slot) = event.stream.checked_sub(streams.start) else {
                continue;
            };
            if slot < total && matches(&event, partner, first_only)? && arrived[slot].is_none() {
                arrived[slot] = Some(event.at);
                missing -= 1;
                last_progress = tokio::time::Instant::now();
            }
        }
        Ok(arrived.into_iter().flatten().collect())
    }

    /// Cancels every stream (RST_STREAM) and drops the connections.
    pub async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Whether `event` is the arrival of bundle `partner`; an error if the stream failed, or
/// (with `first_only`) if its first response carried something else.
fn matches(event: &Event, partner: u64, first_only: bool) -> anyhow::Result<bool> {
    match &event.partner {
        Err(e) => anyhow::bail!("stream {} failed: {e}", event.stream),
        Ok(Some(got)) if *got == partner => Ok(true),
        Ok(got) if first_only && event.first => anyhow::bail!(
            "stream {}'s first response {}",
            event.stream,
            if got.is_some() {
                "carried another partner.org bundle"
            } else {
                "had no partner.org bundle in a SPIFFE validator"
            }
        ),
        Ok(_) => Ok(false),
    }
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
    let mut first = true;
    sds_client::stream_like_envoy(&mut client, "steeple-bench", &[RESOURCE], |response| {
        let event = Event {
            stream,
            at: Instant::now(),
            first,
            partner: Ok(partner_fingerprint(response)),
        };
        first = false;
        events
            .send(event)
            .map_err(|_| anyhow::anyhow!("the benchmark stopped listening"))
    })
    .await
}

/// The fingerprint of the partner.org bundle in `ALL`'s SPIFFE validator, if there.
fn partner_fingerprint(response: &DiscoveryResponse) -> Option<u64> {
    bench_support::validator_bundle_fingerprint(response, RESOURCE, PARTNER_TRUST_DOMAIN)
}
