//! The loop every SDS stream runs: requests from the client and store changes in, responses
//! out, until the client leaves, a request is refused, the caller loses its rights to what
//! it watches (a reloaded policy), or the agent shuts down.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt as _};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Status, Streaming};

use super::own_identity::{self, Verdict};
use super::wakes::{Wait, Wakes};
use crate::authz::{Grant, Policy};
use crate::metrics::{SdsFlavour, StreamGauge, metrics};
use crate::store::{View, ViewChanges, ViewReceiver};

/// One flavour of the xDS protocol (state of the world, or delta) as a state machine.
pub trait Protocol: Send + Unpin + 'static {
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
        snapshot: &View,
    ) -> Result<Option<Self::Response>, Status>;

    /// Reacts to a store change: a response if anything the client watches changed.
    fn on_snapshot(&mut self, snapshot: &View) -> Option<Self::Response>;

    /// The names `request` subscribes to; `None` for a wildcard (every resource).
    fn requested_names<'a>(&self, request: &'a Self::Request) -> Option<Vec<&'a str>>;

    /// The names the stream watches now; `None` for a wildcard.
    fn watched(&self) -> Option<Vec<&str>>;
}

/// What one event makes of a stream: go on, with a response to send or not
/// (`Ok`), or end, telling the client why or not (`Err`).
type Step<R> = Result<Option<R>, Option<Status>>;

/// One stream's responses, as the gRPC response body that hyper polls: each poll runs
/// the stream's loop until it has a response to send. No task and no channel of its own
/// sit between the loop and the connection, so a push is one wake-up of the stream, not
/// three; the client leaving drops the body and with it everything the stream holds.
pub type Responses<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Runs `protocol` over one gRPC stream for the caller holding `grant`; when `policy`
/// changes, the grant is recomputed and everything the stream watches checked again.
/// `held` (its place under the stream limit, say) is kept until the stream ends.
pub fn run<P: Protocol, H: Send + Unpin + 'static>(
    grant: Grant,
    protocol: P,
    inbound: Streaming<P::Request>,
    store: ViewReceiver,
    policy: watch::Receiver<Arc<Policy>>,
    shutdown: &CancellationToken,
    held: H,
) -> Responses<P::Response> {
    // The waits on the stores, the policy and shutdown are made once, not at each turn of
    // the loop: each made anew registers with (and, when another is ready first, leaves)
    // a waiter list every stream shares, under its lock.
    Box::pin(Running {
        grant,
        protocol,
        inbound,
        changes: store.changes(),
        store,
        policy_changes: WatchStream::from_changes(policy.clone()),
        policy_seen: policy,
        cancelled: Box::pin(shutdown.clone().cancelled_owned()),
        wakes: Wakes::new(),
        judge_later: false,
        ended: false,
        _open: metrics().sds_stream_opened(P::FLAVOUR),
        _held: held,
    })
}

/// An open stream: its state between two responses, and its waits.
struct Running<P: Protocol, H> {
    grant: Grant,
    protocol: P,
    inbound: Streaming<P::Request>,
    store: ViewReceiver,
    changes: ViewChanges,
    /// The policy in force, and whether it changed since the stream last looked.
    policy_seen: watch::Receiver<Arc<Policy>>,
    /// Wakes the stream when the policy changes.
    policy_changes: WatchStream<Arc<Policy>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Which of the waits above to poll.
    wakes: Wakes,
    /// A request named an SVID before the caller's own identity was known (delegated
    /// mode).
    judge_later: bool,
    /// The stream said its last word.
    ended: bool,
    _open: StreamGauge<'static>,
    _held: H,
}

impl<P: Protocol, H: Unpin> Stream for Running<P, H> {
    type Item = Result<P::Response, Status>;

    /// The next response, or the stream's end (with a status for the client, or without).
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        this.wakes.begin(cx);
        loop {
            // A replaced policy comes first, seen by a look at the channel's version that
            // takes no lock; then the waits that fired.
            let step = match this.policy_seen.has_changed() {
                Err(_) => Err(None),
                Ok(true) => reauthorize(&mut this.grant, &this.protocol, &mut this.policy_seen),
                Ok(false) => match this.poll_waits() {
                    Poll::Ready(step) => step,
                    Poll::Pending => return Poll::Pending,
                },
            };
            match step {
                Ok(None) => {}
                Ok(Some(response)) => {
                    metrics().sds_response_sent(P::FLAVOUR);
                    return Poll::Ready(Some(Ok(response)));
                }
                Err(why) => {
                    this.ended = true;
                    return Poll::Ready(why.map(Err));
                }
            }
        }
    }
}

impl<P: Protocol, H> Running<P, H> {
    /// Polls the waits due, in this order, until one is ready: a store change (so a flood
    /// of requests cannot hold back a rotation), the client's next message, shutdown, and
    /// the policy's wait (there to wake an idle stream; the version check handles it).
    fn poll_waits(&mut self) -> Poll<Step<P::Response>> {
        let changes = &mut self.changes;
        if let Poll::Ready(changed) = self
            .wakes
            .poll(Wait::Store, |cx| changes.poll_next_unpin(cx))
        {
            return Poll::Ready(match changed {
                Some(()) => on_snapshot(
                    &mut self.grant,
                    &mut self.protocol,
                    &mut self.store,
                    &self.policy_seen,
                    &mut self.judge_later,
                ),
                None => Err(None),
            });
        }
        let inbound = &mut self.inbound;
        if let Poll::Ready(message) = self
            .wakes
            .poll(Wait::Client, |cx| inbound.poll_next_unpin(cx))
        {
            return Poll::Ready(on_message(
                &self.grant,
                &mut self.protocol,
                message.transpose(),
                &mut self.store,
                &mut self.judge_later,
            ));
        }
        let cancelled = &mut self.cancelled;
        if self
            .wakes
            .poll(Wait::Shutdown, |cx| cancelled.as_mut().poll(cx))
            .is_ready()
        {
            return Poll::Ready(Err(None));
        }
        let policy_changes = &mut self.policy_changes;
        if let Poll::Ready(changed) = self
            .wakes
            .poll(Wait::Policy, |cx| policy_changes.poll_next_unpin(cx))
        {
            return Poll::Ready(changed.map_or(Err(None), |_| Ok(None)));
        }
        Poll::Pending
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
    store: &mut ViewReceiver,
    judge_later: &mut bool,
) -> Step<P::Response> {
    match message {
        Ok(Some(request)) => {
            let verdict = answer(grant, protocol, request, store, judge_later);
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

/// A request. Names it adds to what the stream watches are authorized, and their
/// producers started, before the protocol sees it; an answer to a request that adds no
/// name goes out only once the caller's process is checked again. So a request that adds
/// nothing and gets no answer — an ACK or a NACK, half of what a fan-out handles — costs
/// no look at `/proc`, while nothing reaches the caller without one.
fn answer<P: Protocol>(
    grant: &Grant,
    protocol: &mut P,
    request: P::Request,
    store: &mut ViewReceiver,
    judge_later: &mut bool,
) -> Result<Option<P::Response>, Status> {
    let snapshot = store.borrow_and_update();
    let requested = protocol.requested_names(&request);
    let adds_names = adds_names(requested.as_deref(), protocol.watched());
    if adds_names {
        grant.authorize_request(requested.clone())?;
        own_svids_only(grant, &snapshot, requested.as_deref(), judge_later)?;
        store
            .want(requested.as_deref().unwrap_or_default())
            .map_err(super::demand_refused)?;
    }
    let response = protocol.on_request(request, &snapshot)?;
    if response.is_some() && !adds_names {
        grant.authorize([])?;
    }
    Ok(response)
}

/// Whether `requested` (`None`: every resource) names anything a stream watching
/// `watched` does not. What a stream watches is always authorized under its current grant
/// (a new policy or a new caller identity re-checks it), so only such names need a check.
fn adds_names(requested: Option<&[&str]>, watched: Option<Vec<&str>>) -> bool {
    match (requested, watched) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(requested), Some(watched)) => requested.iter().any(|n| !watched.contains(n)),
    }
}

/// A new store snapshot: pushed to a caller whose process still runs.
fn on_snapshot<P: Protocol>(
    grant: &mut Grant,
    protocol: &mut P,
    store: &mut ViewReceiver,
    policy: &watch::Receiver<Arc<Policy>>,
    judge_later: &mut bool,
) -> Step<P::Response> {
    let snapshot = store.borrow_and_update();
    if let Some(identity) = snapshot.own_identity()
        && grant.identity() != Some(identity.as_slice())
    {
        // The caller's SVIDs changed: what `[[callers]]` grants it may have too.
        *grant = grant.attested(&policy.borrow(), identity);
        if let Err(status) = grant.authorize_request(protocol.watched()) {
            metrics().sds_request_refused();
            tracing::warn!(code = ?status.code(), reason = status.message(), "the caller's new identity is not granted what this stream watches; closing it");
            return Err(Some(status));
        }
    }
    if *judge_later {
        own_svids_only(grant, &snapshot, protocol.watched().as_deref(), judge_later)
            .map_err(Some)?;
    }
    let response = protocol.on_snapshot(&snapshot);
    if response.is_some() {
        // A connection whose process is gone gets no more pushes.
        grant.authorize([]).map_err(Some)?;
    }
    Ok(response)
}

/// Delegated mode: refuses names of SVIDs that are not the caller's own (see
/// [`own_identity`]), or notes to judge them once its identity is known.
fn own_svids_only(
    grant: &Grant,
    view: &View,
    names: Option<&[&str]>,
    judge_later: &mut bool,
) -> Result<(), Status> {
    let names = names.unwrap_or_default();
    match own_identity::judge(view, names) {
        Verdict::Allowed => *judge_later = false,
        Verdict::Pending => *judge_later = true,
        Verdict::Foreign(name) => return Err(own_identity::refuse(grant.caller(), name)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::adds_names;

    #[test]
    fn only_names_a_stream_does_not_watch_yet_are_new() {
        let watched = || Some(vec!["ALL", "default"]);
        assert!(!adds_names(Some(&["default", "ALL"]), watched()), "an ACK");
        assert!(!adds_names(Some(&["ALL"]), watched()), "fewer names");
        assert!(!adds_names(Some(&[]), watched()), "a delta ACK");
        assert!(adds_names(Some(&["ALL", "ROOTCA"]), watched()));
        assert!(adds_names(None, watched()), "a wildcard");
        assert!(
            adds_names(Some(&["a"]), Some(Vec::new())),
            "a first request"
        );
        assert!(!adds_names(None, None), "a wildcard stream's ACK");
        assert!(!adds_names(Some(&["a"]), None));
    }
}
