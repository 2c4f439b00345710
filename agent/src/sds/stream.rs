//! The loop every SDS stream runs: requests from the client and store changes in, responses
//! out, until the client leaves, a request is refused, the caller loses its rights to what
//! it watches (a reloaded policy), or the agent shuts down.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::authz::{Grant, Policy};
use crate::metrics::{SdsFlavour, metrics};
use crate::store::Snapshot;

/// One flavour of the xDS protocol (state of the world, or delta) as a state machine.
pub trait Protocol: Send + 'static {
    /// The client's message.
    type Request: Send + 'static;
    /// The server's message.
    type Response: Send + 'static;
    /// Which flavour this is, for metrics.
    const FLAVOUR: SdsFlavour;

    /// Handles a client request; `Err` ends the stream with that status.
    fn on_request(
        &mut self,
        request: Self::Request,
        snapshot: &Snapshot,
    ) -> Result<Option<Self::Response>, Status>;

    /// Reacts to a store change: a response if anything the client watches changed.
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Option<Self::Response>;

    /// The names `request` subscribes to; `None` for a wildcard (every resource).
    fn requested_names<'a>(&self, request: &'a Self::Request) -> Option<Vec<&'a str>>;

    /// The names the stream watches now; `None` for a wildcard.
    fn watched(&self) -> Option<Vec<&str>>;
}

/// Runs `protocol` over one gRPC stream for the caller holding `grant`; when `policy`
/// changes, the grant is recomputed and everything the stream watches checked again.
pub async fn run<P: Protocol>(
    mut grant: Grant,
    mut protocol: P,
    mut inbound: Streaming<P::Request>,
    outbound: mpsc::Sender<Result<P::Response, Status>>,
    mut store: watch::Receiver<Arc<Snapshot>>,
    mut policy: watch::Receiver<Arc<Policy>>,
    shutdown: CancellationToken,
) {
    let _open = metrics().sds_stream_opened(P::FLAVOUR);
    loop {
        let response = tokio::select! {
            () = shutdown.cancelled() => return,
            () = outbound.closed() => return,
            changed = policy.changed() => {
                if changed.is_err() {
                    return;
                }
                grant = grant.under(&policy.borrow_and_update());
                if let Err(status) = grant.authorize_request(protocol.watched()) {
                    metrics().sds_request_refused();
                    tracing::warn!(code = ?status.code(), reason = status.message(), "the reloaded policy no longer grants what this stream watches; closing it");
                    let _ = outbound.send(Err(status)).await;
                    return;
                }
                None
            }
            message = inbound.message() => match message {
                Ok(Some(request)) => {
                    let snapshot = store.borrow_and_update().clone();
                    let verdict = grant
                        .authorize_request(protocol.requested_names(&request))
                        .and_then(|()| protocol.on_request(request, &snapshot));
                    match verdict {
                        Ok(response) => response,
                        Err(status) => {
                            metrics().sds_request_refused();
                            tracing::warn!(code = ?status.code(), reason = status.message(), "SDS request refused; closing the stream");
                            let _ = outbound.send(Err(status)).await;
                            return;
                        }
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    // A request the codec refused (too large, not protobuf) or a broken
                    // transport: tell the client if it is still there, and end the stream.
                    tracing::debug!(code = ?status.code(), reason = status.message(), "SDS stream ended by a bad request or the transport");
                    let _ = outbound.send(Err(status)).await;
                    return;
                }
            },
            changed = store.changed() => {
                if changed.is_err() {
                    return;
                }
                // A connection whose process is gone gets no more pushes.
                if let Err(status) = grant.authorize([]) {
                    let _ = outbound.send(Err(status)).await;
                    return;
                }
                let snapshot = store.borrow_and_update().clone();
                protocol.on_snapshot(&snapshot)
            }
        };
        if let Some(response) = response {
            if outbound.send(Ok(response)).await.is_err() {
                return;
            }
            metrics().sds_response_sent(P::FLAVOUR);
        }
    }
}
