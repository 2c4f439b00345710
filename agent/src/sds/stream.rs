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

/// What one event makes of a stream: go on, with a response to send or not
/// (`Ok`), or end, telling the client why or not (`Err`).
type Step<R> = Result<Option<R>, Option<Status>>;

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
        let step = tokio::select! {
            () = shutdown.cancelled() => return,
            () = outbound.closed() => return,
            changed = policy.changed() => match changed {
                Ok(()) => reauthorize(&mut grant, &protocol, &mut policy),
                Err(_) => Err(None),
            },
            message = inbound.message() => on_message(&grant, &mut protocol, message, &mut store),
            changed = store.changed() => match changed {
                Ok(()) => on_snapshot(&grant, &mut protocol, &mut store),
                Err(_) => Err(None),
            },
        };
        match step {
            Ok(None) => {}
            Ok(Some(response)) => {
                if outbound.send(Ok(response)).await.is_err() {
                    return;
                }
                metrics().sds_response_sent(P::FLAVOUR);
            }
            Err(why) => {
                if let Some(status) = why {
                    let _ = outbound.send(Err(status)).await;
                }
                return;
            }
        }
    }
}

/// The grant under the replaced policy, which must still cover what the stream watches.
fn reauthorize<P: Protocol>(
    grant: &mut Grant,
    protocol: &P,
    policy: &mut watch::Receiver<Arc<Policy>>,
) -> Step<P::Response> {
    *grant = grant.under(&policy.borrow_and_update());
    if let Err(status) = grant.authorize_request(protocol.watched()) {
        metrics().sds_request_refused();
        tracing::warn!(code = ?status.code(), reason = status.message(), "the reloaded policy no longer grants what this stream watches; closing it");
        return Err(Some(status));
    }
    Ok(None)
}

/// One message from the client: a request answered if authorized, or the stream's end.
fn on_message<P: Protocol>(
    grant: &Grant,
    protocol: &mut P,
    message: Result<Option<P::Request>, Status>,
    store: &mut watch::Receiver<Arc<Snapshot>>,
) -> Step<P::Response> {
    match message {
        Ok(Some(request)) => {
            let snapshot = store.borrow_and_update().clone();
            let verdict = grant
                .authorize_request(protocol.requested_names(&request))
                .and_then(|()| protocol.on_request(request, &snapshot));
            verdict.map_err(|status| {
                metrics().sds_request_refused();
                tracing::warn!(code = ?status.code(), reason = status.message(), "SDS request refused; closing the stream");
                Some(status)
            })
        }
        Ok(None) => Err(None),
        Err(status) => {
            // A request the codec refused (too large, not protobuf) or a broken
            // transport: tell the client if it is still there, and end the stream.
            tracing::debug!(code = ?status.code(), reason = status.message(), "SDS stream ended by a bad request or the transport");
            Err(Some(status))
        }
    }
}

/// A new store snapshot: pushed to a caller whose process still runs.
fn on_snapshot<P: Protocol>(
    grant: &Grant,
    protocol: &mut P,
    store: &mut watch::Receiver<Arc<Snapshot>>,
) -> Step<P::Response> {
    // A connection whose process is gone gets no more pushes.
    grant.authorize([]).map_err(Some)?;
    let snapshot = store.borrow_and_update().clone();
    Ok(protocol.on_snapshot(&snapshot))
}
