//! What one SDS caller sees. In `self` mode that is the shared store. In delegated mode
//! (a node agent) it is the caller's *own* workload store — its SVIDs and the bundles they
//! federate with — over the shared store, of which the agent's own identity is hidden:
//! a caller gets its own identity, never the agent's nor another workload's.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use super::{Entry, Snapshot};

/// The stores one caller sees, at one moment.
#[derive(Debug, Clone)]
pub struct View {
    shared: Arc<Snapshot>,
    own: Option<Arc<Snapshot>>,
}

impl View {
    /// The shared store alone (`self` mode, or a caller the agent serves no identity).
    pub fn shared(shared: Arc<Snapshot>) -> Self {
        Self { shared, own: None }
    }

    /// A workload's own store over the shared one.
    pub fn delegated(shared: Arc<Snapshot>, own: Arc<Snapshot>) -> Self {
        Self {
            shared,
            own: Some(own),
        }
    }

    /// The caller's own workload store, in delegated mode.
    pub fn own(&self) -> Option<&Snapshot> {
        self.own.as_deref()
    }

    /// The caller's own SPIFFE IDs (those of its SVIDs), once SPIRE answered about it;
    /// `None` in `self` mode or before then.
    pub fn own_identity(&self) -> Option<Vec<String>> {
        let own = self.own.as_deref()?;
        if !own.has_synced(&super::Source::X509Identity) {
            return None;
        }
        let mut ids: Vec<String> = own
            .iter()
            .filter_map(|(_, e)| match &e.secret {
                super::Secret::Certificate(c) => Some(c.spiffe_id.clone()),
                _ => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    }

    /// The entry named `name` for this caller (see [`Snapshot::get`]).
    pub fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        match &self.own {
            None => self.shared.get(name),
            Some(own) => own.get(name).or_else(|| {
                self.shared
                    .get(name)
                    .filter(|e| !e.source.is_own_identity())
            }),
        }
    }

    /// Every entry this caller sees, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Entry>)> {
        let own = self.own.as_deref();
        let shared = self.shared.iter().filter(move |(name, entry)| match own {
            None => true,
            Some(own) => !entry.source.is_own_identity() && own.get(name).is_none(),
        });
        own.into_iter().flat_map(Snapshot::iter).chain(shared)
    }

    /// Bumped on every change of anything this caller sees (both stores' generations
    /// only grow, so their sum does too).
    pub fn generation(&self) -> u64 {
        self.shared.generation + self.own.as_ref().map_or(0, |own| own.generation)
    }
}

/// A producer started by demand: a caller naming a resource (a workload's JWT-SVID for
/// an audience, its role's credentials) starts what serves it.
pub trait OnDemand: Send + Sync + std::fmt::Debug {
    /// `names` were asked for; `Err` says why some will not be served.
    fn wanted(&self, names: &[&str]) -> Result<(), DemandRefused>;
}

/// Why a name asked for will not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemandRefused {
    /// The workload holds as many on-demand resources of the kind as it may.
    Limit(String),
    /// The workload may not have it (no role maps its identity).
    Denied(String),
}

impl std::fmt::Display for DemandRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Limit(why) | Self::Denied(why) => f.write_str(why),
        }
    }
}

/// A subscription to the stores one caller sees: woken when either changes.
#[derive(Debug)]
pub struct ViewReceiver {
    shared: watch::Receiver<Arc<Snapshot>>,
    own: Option<watch::Receiver<Arc<Snapshot>>>,
    demand: Option<Arc<dyn OnDemand>>,
}

impl ViewReceiver {
    /// The shared store alone.
    pub fn shared(shared: watch::Receiver<Arc<Snapshot>>) -> Self {
        Self {
            shared,
            own: None,
            demand: None,
        }
    }

    /// A workload's own store over the shared one; names asked for go to `demand`.
    pub fn delegated(
        shared: watch::Receiver<Arc<Snapshot>>,
        own: watch::Receiver<Arc<Snapshot>>,
        demand: Arc<dyn OnDemand>,
    ) -> Self {
        Self {
            shared,
            own: Some(own),
            demand: Some(demand),
        }
    }

    /// Tells the on-demand producers (if any) that `names` were asked for.
    pub fn want(&self, names: &[&str]) -> Result<(), DemandRefused> {
        self.demand.as_ref().map_or(Ok(()), |d| d.wanted(names))
    }

    /// A stream that yields once for each change of either store after now, and ends
    /// once a store is gone. It waits on receivers of its own: its wait stays registered
    /// between polls instead of being made anew (and unregistered) at each turn of a
    /// stream's loop, and what this receiver marks seen does not affect it.
    pub fn changes(&self) -> ViewChanges {
        ViewChanges {
            shared: WatchStream::from_changes(self.shared.clone()),
            own: self.own.clone().map(WatchStream::from_changes),
        }
    }

    /// The current view, marking it seen.
    pub fn borrow_and_update(&mut self) -> View {
        View {
            shared: self.shared.borrow_and_update().clone(),
            own: self.own.as_mut().map(|own| own.borrow_and_update().clone()),
        }
    }
}

/// The changes of a caller's stores ([`ViewReceiver::changes`]).
pub struct ViewChanges {
    shared: WatchStream<Arc<Snapshot>>,
    own: Option<WatchStream<Arc<Snapshot>>>,
}

impl std::fmt::Debug for ViewChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewChanges")
            .field("delegated", &self.own.is_some())
            .finish_non_exhaustive()
    }
}

impl Stream for ViewChanges {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        // Both are polled, so both stay registered; either's end is the end.
        let own = match self.own.as_mut() {
            Some(own) => Pin::new(own).poll_next(cx),
            None => Poll::Pending,
        };
        let shared = Pin::new(&mut self.shared).poll_next(cx);
        match (own, shared) {
            (Poll::Ready(None), _) | (_, Poll::Ready(None)) => Poll::Ready(None),
            (Poll::Ready(Some(_)), _) | (_, Poll::Ready(Some(_))) => Poll::Ready(Some(())),
            (Poll::Pending, Poll::Pending) => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Secret, SecretStore, Source};
    use steeple_plugin_api::SecretBytes;

    fn generic(value: &[u8]) -> Secret {
        Secret::Generic(SecretBytes::copy_from(value))
    }

    #[test]
    fn a_delegated_view_hides_the_agents_own_identity_and_shows_the_workloads() {
        let shared = SecretStore::new();
        shared.sync_source(
            &Source::X509Identity,
            vec![("default".into(), generic(b"agent"))],
        );
        shared.sync_source(&Source::Envelopes, vec![("app/db".into(), generic(b"row"))]);
        let own = SecretStore::new();
        let alone = View::delegated(shared.snapshot(), own.snapshot());
        assert!(alone.get("default").is_none(), "never the agent's own SVID");
        assert!(alone.get("app/db").is_some());
        own.sync_source(
            &Source::X509Identity,
            vec![("default".into(), generic(b"mine"))],
        );
        let view = View::delegated(shared.snapshot(), own.snapshot());
        assert_eq!(
            view.get("default").map(|e| &e.secret),
            Some(&generic(b"mine"))
        );
        let mut names: Vec<&str> = view.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["app/db", "default"]);
        assert!(view.generation() > alone.generation());
        assert_eq!(
            View::shared(shared.snapshot())
                .get("default")
                .map(|e| &e.secret),
            Some(&generic(b"agent")),
            "self mode serves the agent's own identity"
        );
    }

    #[derive(Debug)]
    struct Nothing;

    impl OnDemand for Nothing {
        fn wanted(&self, _: &[&str]) -> Result<(), DemandRefused> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_change_in_either_store_is_a_change_of_the_view() {
        use futures::StreamExt as _;
        let shared = SecretStore::new();
        let own = SecretStore::new();
        let mut rx =
            ViewReceiver::delegated(shared.subscribe(), own.subscribe(), Arc::new(Nothing));
        let mut changes = rx.changes();
        own.sync_source(
            &Source::X509Identity,
            vec![("default".into(), generic(b"1"))],
        );
        assert_eq!(changes.next().await, Some(()));
        assert!(rx.borrow_and_update().get("default").is_some());
        shared.sync_source(&Source::Envelopes, vec![("x".into(), generic(b"2"))]);
        assert_eq!(changes.next().await, Some(()));
        assert!(rx.borrow_and_update().get("x").is_some());
        // Nothing changed since: no change to yield.
        assert!(futures::poll!(changes.next()).is_pending());
        drop(own);
        assert_eq!(changes.next().await, None, "a store gone ends the changes");
    }

    #[tokio::test]
    async fn the_changes_of_the_shared_store_alone_end_with_it() {
        use futures::StreamExt as _;
        let shared = SecretStore::new();
        let rx = ViewReceiver::shared(shared.subscribe());
        let mut changes = rx.changes();
        assert!(futures::poll!(changes.next()).is_pending(), "no change yet");
        shared.sync_source(&Source::Envelopes, vec![("x".into(), generic(b"2"))]);
        assert_eq!(changes.next().await, Some(()));
        drop(shared);
        assert_eq!(changes.next().await, None);
    }
}
