//! One workload's own identity, followed through `SubscribeToX509SVIDs{pid}` into the
//! workload's own store for as long as any of its SDS streams is open.
//!
//! SPIRE attests the pid once, when the subscription opens; the answer is only used
//! while the process that connected to Steeple still runs (its pidfd, held since it
//! connected), so a pid reused by another process never gets the first one's SVIDs, nor
//! the first one the newcomer's. What expired is withdrawn; an outage keeps the last good
//! SVIDs until they expire, never after; an empty answer (no entry matches any more)
//! withdraws everything at once.

use std::sync::Arc;
use std::time::SystemTime;

use spire_api::pb::spire::api::agent::delegatedidentity::v1::SubscribeToX509sviDsResponse;
use steeple_plugin_api::wall_clock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use super::DelegatedClient;
use super::convert::{BundleMap, WorkloadSvids};
use super::holder_waits::HolderWaits;
use crate::authz::Caller;
use crate::identity::x509::Follower;

/// What one workload's follower needs.
pub(crate) struct WorkloadFollow {
    /// The Delegated Identity API.
    pub(crate) client: DelegatedClient,
    /// The workload's process, as it connected.
    pub(crate) caller: Arc<Caller>,
    /// Its pid as Steeple sees it.
    pub(crate) pid: i32,
    /// Every bundle SPIRE agent tracks.
    pub(crate) bundles: watch::Receiver<Arc<BundleMap>>,
    /// `workload_api.default_svid_hint`.
    pub(crate) default_hint: Option<String>,
    /// Writes the workload's own store.
    pub(crate) follower: Follower,
    /// Role leases waiting for a holder of an identity this workload may bring.
    pub(crate) holder_waits: Arc<HolderWaits>,
}

/// Follows the workload until `stop` (its last stream ended) or its process exits.
pub(crate) async fn follow(mut w: WorkloadFollow, stop: CancellationToken) {
    let mut last: Option<WorkloadSvids> = None;
    let mut stream: Option<Streaming<SubscribeToX509sviDsResponse>> = None;
    let mut attested = false;
    // Until SPIRE first answers, the store stays unsynced: "not known yet", not "none".
    let mut answered = false;
    let mut retry_at = tokio::time::Instant::now();
    let mut overdue_at = None;
    loop {
        if !w.caller.still_running() {
            tracing::debug!(caller = %w.caller.describe(), "delegated: the workload's process exited; its identity is no longer followed");
            return;
        }
        let next = if answered {
            w.follower
                .withdraw_expired(&mut overdue_at, SystemTime::now())
        } else {
            None
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wall_clock::nap_towards(next)) => {}
            () = tokio::time::sleep_until(retry_at), if stream.is_none() => {
                // Boxed: opening is rare, and inline its future would size every
                // workload's task for it the whole time.
                stream = Box::pin(w.open(&stop)).await;
                attested = false;
                if stream.is_none() {
                    retry_at = tokio::time::Instant::now() + w.follower.backoff.next_delay();
                }
            }
            changed = w.bundles.changed() => {
                if changed.is_err() {
                    return;
                }
                // Marked seen whether or not there is anything to re-apply yet.
                let bundles = w.bundles.borrow_and_update().clone();
                if let Some(svids) = &last {
                    overdue_at = w.follower.apply_parsed(svids.svids(), svids.visible_bundles(&bundles));
                }
            }
            message = next_message(&mut stream) => match message {
                Ok(Some(update)) => {
                    if !attested && !w.caller.still_running() {
                        // Attested after the process exited: the pid may be another's.
                        return;
                    }
                    attested = true;
                    answered = true;
                    let svids = WorkloadSvids::new(update.x509_svids, update.federates_with, w.default_hint.as_deref());
                    let bundles = w.bundles.borrow_and_update().clone();
                    overdue_at = w.follower.apply_parsed(svids.svids(), svids.visible_bundles(&bundles));
                    w.holder_waits.arrived(svids.svids().iter().map(|s| s.spiffe_id.as_str()));
                    w.note_if_empty(&svids);
                    last = Some(svids);
                }
                Ok(None) | Err(_) => {
                    let why = message.err().map_or("stream closed by SPIRE agent".to_owned(), |s| super::explain(&s));
                    super::log_failure(&mut w.follower.errors, "SubscribeToX509SVIDs", &why);
                    stream = None;
                    retry_at = tokio::time::Instant::now() + w.follower.backoff.next_delay();
                }
            },
        }
    }
}

impl WorkloadFollow {
    /// Opens the subscription (SPIRE attests the pid now), or logs why not.
    async fn open(
        &mut self,
        stop: &CancellationToken,
    ) -> Option<Streaming<SubscribeToX509sviDsResponse>> {
        let opened = tokio::select! {
            () = stop.cancelled() => return None,
            r = self.client.subscribe_to_x509_svids(self.pid) => r,
        };
        let why = match opened {
            Ok(stream) => return Some(stream),
            Err(status) => super::explain(&status),
        };
        super::log_failure(&mut self.follower.errors, "SubscribeToX509SVIDs", &why);
        None
    }

    /// A workload SPIRE knows no entry for: its streams stay open (an entry created
    /// later is served to them), and the operator is told.
    fn note_if_empty(&self, svids: &WorkloadSvids) {
        if svids.is_empty() {
            crate::metrics::metrics().delegated_without_svid();
            tracing::warn!(caller = %self.caller.describe(), "delegated: no registration entry matches this SDS caller; it gets no SVID until one does (its streams stay open)");
        }
    }
}

async fn next_message(
    stream: &mut Option<Streaming<SubscribeToX509sviDsResponse>>,
) -> Result<Option<SubscribeToX509sviDsResponse>, tonic::Status> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}
