//! Entries of public material — trust bundles — shared by many stores. A node agent keeps
//! one store per workload, and every workload of a trust domain is served the same
//! `ROOTCA`, `ALL` and `spiffe://<td>` content: with one [`PublicEntries`] behind their
//! stores, that content is held, versioned and encoded once for all of them (and a bundle
//! rotation is encoded once, not once per workload).
//!
//! Only bundles are shared: an SVID (key included) is one workload's own, and its entry
//! stays in that workload's store alone even where two workloads hold the same one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::{Encodings, Entry, Secret, Source};

/// Bundle entries alive in any store, by name. Entries are held weakly: one goes when the
/// last store holding it drops it.
#[derive(Debug, Default)]
pub struct PublicEntries {
    by_name: Mutex<HashMap<String, Vec<Weak<Entry>>>>,
}

impl PublicEntries {
    /// Whether `secret` is public material this pool shares.
    pub(super) fn shares(secret: &Secret) -> bool {
        matches!(secret, Secret::TrustBundle(_) | Secret::BundleSet(_))
    }

    /// The live entry `name` from `source` holding exactly `secret`, or a new one (with a
    /// new version) kept for the next store that asks.
    pub(super) fn entry(&self, name: &str, source: &Source, secret: &Secret) -> Arc<Entry> {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        let alive = by_name.entry(name.to_owned()).or_default();
        alive.retain(|e| e.strong_count() > 0);
        let found = alive
            .iter()
            .filter_map(Weak::upgrade)
            .find(|e| e.source == *source && e.secret == *secret);
        if let Some(entry) = found {
            return entry;
        }
        let entry = Arc::new(Entry {
            version: super::next_version(),
            source: source.clone(),
            secret: secret.clone(),
            encodings: Encodings::default(),
        });
        alive.push(Arc::downgrade(&entry));
        by_name.retain(|_, alive| !alive.is_empty());
        entry
    }

    /// Names with at least one live entry (for tests and the pool's own housekeeping).
    #[cfg(test)]
    fn live_names(&self) -> usize {
        let by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        by_name
            .values()
            .filter(|alive| alive.iter().any(|e| e.strong_count() > 0))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SecretStore, TrustBundle};
    use steeple_plugin_api::SecretBytes;

    fn bundle(root: u8) -> Secret {
        Secret::TrustBundle(Arc::new(TrustBundle {
            trust_domain: "example.org".into(),
            roots_der: vec![vec![root]],
        }))
    }

    #[test]
    fn stores_sharing_a_pool_hold_one_entry_per_bundle_content() {
        let pool = Arc::new(PublicEntries::default());
        let (a, b) = (
            SecretStore::sharing(pool.clone()),
            SecretStore::sharing(pool.clone()),
        );
        a.sync_source(&Source::X509Identity, vec![("ROOTCA".into(), bundle(1))]);
        b.sync_source(&Source::X509Identity, vec![("ROOTCA".into(), bundle(1))]);
        let (ea, eb) = (a.snapshot(), b.snapshot());
        assert!(Arc::ptr_eq(
            ea.get("ROOTCA").unwrap(),
            eb.get("ROOTCA").unwrap()
        ));

        // A rotation reaching one store first: the other keeps the old entry until it
        // gets the same new content, then shares the new one.
        a.sync_source(&Source::X509Identity, vec![("ROOTCA".into(), bundle(2))]);
        let rotated = a.snapshot().get("ROOTCA").unwrap().clone();
        assert!(rotated.version > eb.get("ROOTCA").unwrap().version);
        b.sync_source(&Source::X509Identity, vec![("ROOTCA".into(), bundle(2))]);
        assert!(Arc::ptr_eq(&rotated, b.snapshot().get("ROOTCA").unwrap()));
        drop((ea, eb));
        assert_eq!(pool.live_names(), 1);
        drop((a, b, rotated));
        assert_eq!(pool.live_names(), 0, "the pool holds nothing itself");
    }

    #[test]
    fn svids_and_other_secrets_are_never_shared() {
        let pool = Arc::new(PublicEntries::default());
        let (a, b) = (
            SecretStore::sharing(pool.clone()),
            SecretStore::sharing(pool.clone()),
        );
        let token = || Secret::Generic(SecretBytes::copy_from(b"same"));
        a.sync_source(&Source::X509Identity, vec![("t".into(), token())]);
        b.sync_source(&Source::X509Identity, vec![("t".into(), token())]);
        assert!(!Arc::ptr_eq(
            a.snapshot().get("t").unwrap(),
            b.snapshot().get("t").unwrap()
        ));
        assert_eq!(pool.live_names(), 0);
    }

    #[test]
    fn the_same_content_under_another_name_or_source_is_another_entry() {
        let pool = Arc::new(PublicEntries::default());
        let (a, b) = (
            SecretStore::sharing(pool.clone()),
            SecretStore::sharing(pool),
        );
        a.sync_source(
            &Source::X509Identity,
            vec![
                ("ROOTCA".into(), bundle(1)),
                ("spiffe://example.org".into(), bundle(1)),
            ],
        );
        b.sync_source(&Source::Envelopes, vec![("ROOTCA".into(), bundle(1))]);
        let (sa, sb) = (a.snapshot(), b.snapshot());
        let versions: std::collections::BTreeSet<u64> = [
            sa.get("ROOTCA"),
            sa.get("spiffe://example.org"),
            sb.get("ROOTCA"),
        ]
        .into_iter()
        .map(|e| e.unwrap().version)
        .collect();
        assert_eq!(versions.len(), 3);
    }
}
