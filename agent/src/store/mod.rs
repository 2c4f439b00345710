//! The secret store: the single in-memory, versioned map `resource name → secret` that
//! every producer writes and every consumer (SDS streams) subscribes to.
//!
//! Readers never lock: the store publishes immutable [`Snapshot`]s through a
//! `tokio::sync::watch` channel, so a change wakes every subscriber once and each one
//! compares the versions of the names it watches.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use steeple_plugin_api::SecretBytes;
use tokio::sync::watch;

pub mod encodings;
pub mod names;
pub mod public_entries;
pub mod sources;
pub mod view;

pub use encodings::{Encoded, Encodings};
pub use public_entries::PublicEntries;
pub use sources::Source;
pub use view::{DemandRefused, OnDemand, View, ViewChanges, ViewReceiver};

/// The next entry version. One counter for every store in the process, so an entry's
/// version never repeats, even across the stores one SDS caller sees together ([`View`]).
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// A version no entry had before.
fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

/// A trust domain's X.509 roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    /// Trust domain name without scheme, e.g. `example.org`.
    pub trust_domain: String,
    /// DER-encoded CA certificates.
    pub roots_der: Vec<Vec<u8>>,
}

impl TrustBundle {
    /// Whether `der` is exactly these roots, concatenated (as the Workload API sends a
    /// bundle): an unchanged bundle need not be parsed again.
    pub fn is_concatenation(&self, der: &[u8]) -> bool {
        let mut rest = der;
        for root in &self.roots_der {
            match rest.strip_prefix(root.as_slice()) {
                Some(after) => rest = after,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

/// An X.509-SVID ready to be served as a TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The SPIFFE ID in the leaf's URI SAN.
    pub spiffe_id: String,
    /// DER certificates, leaf first.
    pub chain_der: Vec<Vec<u8>>,
    /// PKCS#8 DER private key.
    pub key_pkcs8: SecretBytes,
    /// The leaf's `notBefore`.
    pub not_before: SystemTime,
    /// The leaf's `notAfter`.
    pub not_after: SystemTime,
}

impl Certificate {
    /// When this SVID counts as overdue for rotation: two thirds into its lifetime. SPIRE
    /// rotates at half-life, so an SVID still served past this point means rotation is
    /// failing (e.g. the SPIRE server is down) and expiry is a third of a lifetime away.
    pub fn rotation_overdue_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime * 2 / 3
    }
}

/// What a store entry holds; the SDS layer decides how each kind is encoded for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A TLS certificate and key (`tls_certificate`), shared by the names it is served
    /// under (`default` and its SPIFFE ID).
    Certificate(Arc<Certificate>),
    /// One trust domain's roots (`validation_context`), shared by every name and store
    /// serving them.
    TrustBundle(Arc<TrustBundle>),
    /// Every trust domain's roots, own and federated (`validation_context`, the SPIFFE
    /// validator when the client supports it).
    BundleSet(Vec<Arc<TrustBundle>>),
    /// Opaque bytes (`generic_secret`), e.g. a JWT-SVID.
    Generic(SecretBytes),
}

/// One stored secret and the version it got when it last changed.
#[derive(Debug)]
pub struct Entry {
    /// Bumped (process-wide monotonic) whenever the secret's content changes.
    pub version: u64,
    /// Which producer owns the entry (see [`SecretStore::sync_source`]).
    pub source: Source,
    /// The secret.
    pub secret: Secret,
    /// What consumers encoded `secret` into, made once and shared (see [`Encodings`]).
    pub encodings: Encodings,
}

impl Entry {
    /// Whether the entry may be served at `now`: not a certificate past its `notAfter`.
    fn is_live(&self, now: SystemTime) -> bool {
        !matches!(&self.secret, Secret::Certificate(c) if c.not_after <= now)
    }
}

/// An immutable view of the whole store.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Bumped on every change of any entry.
    pub generation: u64,
    entries: HashMap<String, Arc<Entry>>,
    /// The sources that have synced at least once (even with nothing).
    synced: Vec<Source>,
}

impl Snapshot {
    /// The entry named `name`, if present — never a certificate past its `notAfter`: the
    /// producer withdraws it, but a reader may come first (e.g. just after the host woke
    /// from a suspend).
    pub fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        let now = SystemTime::now();
        self.entries.get(name).filter(|entry| entry.is_live(now))
    }

    /// Every entry, in no particular order (expired certificates left out, as in
    /// [`Snapshot::get`]).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Entry>)> {
        let now = SystemTime::now();
        self.entries
            .iter()
            .filter(move |(_, entry)| entry.is_live(now))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Whether `source` has synced at least once, even with nothing: what it holds is
    /// known, not merely not arrived yet.
    pub fn has_synced(&self, source: &Source) -> bool {
        self.synced.contains(source)
    }

    /// The SPIFFE ID of the X.509-SVID served as `default_name` (the workload's default
    /// identity), if there is one.
    pub fn default_identity(&self, default_name: &str) -> Option<&str> {
        match &self.get(default_name)?.secret {
            Secret::Certificate(c) => Some(&c.spiffe_id),
            _ => None,
        }
    }
}

/// The store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SecretStore {
    tx: watch::Sender<Arc<Snapshot>>,
    /// Where its bundle entries come from when they are shared with other stores.
    public: Option<Arc<PublicEntries>>,
}

impl Default for SecretStore {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(Arc::new(Snapshot::default())),
            public: None,
        }
    }

    /// An empty store whose bundle entries are shared through `public` with the other
    /// stores using it (see [`PublicEntries`]).
    pub fn sharing(public: Arc<PublicEntries>) -> Self {
        Self {
            public: Some(public),
            ..Self::new()
        }
    }

    /// A receiver that sees the current snapshot and is woken on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// The current snapshot as a `self`-mode caller sees it.
    pub fn view(&self) -> View {
        View::shared(self.snapshot())
    }

    /// Makes `source`'s entries exactly `desired`: new or changed secrets get a new
    /// version, unchanged ones keep theirs, and names `source` owned before but no longer
    /// lists are removed. Subscribers are woken only if something changed, or when this is
    /// `source`'s first sync (see [`Snapshot::has_synced`]). Returns whether any entry
    /// changed.
    pub fn sync_source(&self, source: &Source, desired: Vec<(String, Secret)>) -> bool {
        let mut changed = false;
        self.tx.send_if_modified(|current| {
            let first_sync = !current.synced.contains(source);
            let mut entries = current.entries.clone();
            {
                let wanted: std::collections::HashSet<&str> =
                    desired.iter().map(|(n, _)| n.as_str()).collect();
                entries.retain(|name, entry| {
                    let keep = entry.source != *source || wanted.contains(name.as_str());
                    changed |= !keep;
                    keep
                });
            }
            for (name, secret) in desired {
                let same = entries
                    .get(&name)
                    .is_some_and(|e| e.source == *source && e.secret == secret);
                if !same {
                    let entry = self.new_entry(&name, source, secret);
                    entries.insert(name, entry);
                    changed = true;
                }
            }
            if changed || first_sync {
                let mut synced = current.synced.clone();
                if first_sync {
                    synced.push(source.clone());
                }
                *current = Arc::new(Snapshot {
                    generation: current.generation + 1,
                    entries,
                    synced,
                });
            }
            changed || first_sync
        });
        changed
    }

    /// A new entry `name` from `source` holding `secret`: the shared one if it is public
    /// material and this store shares it.
    fn new_entry(&self, name: &str, source: &Source, secret: Secret) -> Arc<Entry> {
        match &self.public {
            Some(public) if PublicEntries::shares(&secret) => public.entry(name, source, &secret),
            _ => Arc::new(Entry {
                version: next_version(),
                source: source.clone(),
                secret,
                encodings: Encodings::default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(value: &[u8]) -> Secret {
        Secret::Generic(SecretBytes::copy_from(value))
    }

    #[test]
    fn unchanged_secret_keeps_its_version_and_wakes_nobody() {
        let store = SecretStore::new();
        let mut rx = store.subscribe();
        assert!(store.sync_source(&Source::X509Identity, vec![("x".into(), generic(b"1"))]));
        assert!(rx.has_changed().unwrap());
        let v1 = rx.borrow_and_update().get("x").unwrap().version;
        assert!(!store.sync_source(&Source::X509Identity, vec![("x".into(), generic(b"1"))]));
        assert!(!rx.has_changed().unwrap());
        assert!(store.sync_source(&Source::X509Identity, vec![("x".into(), generic(b"2"))]));
        assert!(rx.borrow_and_update().get("x").unwrap().version > v1);
    }

    #[test]
    fn a_source_only_removes_its_own_names() {
        let store = SecretStore::new();
        store.sync_source(&Source::X509Identity, vec![("x".into(), generic(b"1"))]);
        store.sync_source(&Source::Envelopes, vec![("y".into(), generic(b"2"))]);
        store.sync_source(&Source::X509Identity, vec![]);
        let snap = store.snapshot();
        assert!(snap.get("x").is_none());
        assert!(snap.get("y").is_some());
        assert_eq!(snap.len(), 1);
    }

    #[test]
    fn a_certificate_past_not_after_is_never_handed_out() {
        let store = SecretStore::new();
        let now = SystemTime::now();
        let cert = |not_after| {
            Secret::Certificate(Arc::new(Certificate {
                spiffe_id: "spiffe://example.org/w".into(),
                chain_der: vec![vec![1]],
                key_pkcs8: SecretBytes::copy_from(b"k"),
                not_before: now - std::time::Duration::from_secs(60),
                not_after,
            }))
        };
        store.sync_source(
            &Source::X509Identity,
            vec![
                (
                    "expired".into(),
                    cert(now - std::time::Duration::from_secs(1)),
                ),
                (
                    "valid".into(),
                    cert(now + std::time::Duration::from_secs(60)),
                ),
                ("token".into(), generic(b"t")),
            ],
        );
        let snap = store.snapshot();
        assert!(snap.get("expired").is_none());
        assert!(snap.get("valid").is_some());
        let mut names: Vec<&str> = snap.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["token", "valid"]);
        assert_eq!(snap.len(), 2);
    }
}
