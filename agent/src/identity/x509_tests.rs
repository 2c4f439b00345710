use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use steeple_proto::workload::{X509svid, X509svidResponse};

use super::DefaultNames;
use super::x509::X509State;
use crate::store::Secret;
use crate::test_support::TestCa;

const ID: &str = "spiffe://example.org/web";

fn names() -> DefaultNames {
    DefaultNames {
        svid: "default".into(),
        bundle: "ROOTCA".into(),
        all_bundles: "ALL".into(),
    }
}

fn response(ca: &TestCa, ttl: i64, federated: &[(&str, &TestCa)]) -> X509svidResponse {
    let leaf = ca.issue(ID, ttl);
    X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: ID.into(),
            x509_svid: leaf.der,
            x509_svid_key: leaf.key_pkcs8,
            bundle: ca.der.clone(),
            hint: String::new(),
        }],
        crl: vec![],
        federated_bundles: federated
            .iter()
            .map(|(td, ca)| (format!("spiffe://{td}"), ca.der.clone()))
            .collect::<HashMap<_, _>>(),
    }
}

fn names_of(entries: &[(String, Secret)]) -> Vec<&str> {
    let mut names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names
}

#[test]
fn publishes_spire_names_and_ids() {
    let ca = TestCa::new("example.org");
    let fed = TestCa::new("partner.org");
    let mut state = X509State::default();
    let now = SystemTime::now();
    state.apply(response(&ca, 3600, &[("partner.org", &fed)]), now);
    let entries = state.entries(&names(), now);
    assert_eq!(
        names_of(&entries),
        [
            "ALL",
            "ROOTCA",
            "default",
            "spiffe://example.org",
            "spiffe://example.org/web",
            "spiffe://partner.org"
        ]
    );
    let all = entries.iter().find(|(n, _)| n == "ALL").unwrap();
    assert!(matches!(&all.1, Secret::BundleSet(b) if b.len() == 2));
}

#[test]
fn a_bad_update_keeps_the_last_good_svid() {
    let ca = TestCa::new("example.org");
    let mut state = X509State::default();
    let now = SystemTime::now();
    state.apply(response(&ca, 3600, &[]), now);
    let before = state.entries(&names(), now);
    let mut bad = response(&ca, 3600, &[]);
    bad.svids[0].x509_svid_key = TestCa::new("x.org").issue("spiffe://x.org/a", 60).key_pkcs8;
    state.apply(bad, now);
    let mut garbage = response(&ca, 3600, &[]);
    garbage.svids[0].x509_svid = b"garbage".to_vec();
    state.apply(garbage, now);
    assert_eq!(state.entries(&names(), now), before);
}

#[test]
fn a_dropped_federation_removes_its_bundle() {
    let ca = TestCa::new("example.org");
    let fed = TestCa::new("partner.org");
    let mut state = X509State::default();
    let now = SystemTime::now();
    state.apply(response(&ca, 3600, &[("partner.org", &fed)]), now);
    state.apply(response(&ca, 3600, &[]), now);
    assert!(!names_of(&state.entries(&names(), now)).contains(&"spiffe://partner.org"));
}

#[test]
fn an_expired_svid_is_never_served() {
    let ca = TestCa::new("example.org");
    let mut state = X509State::default();
    let now = SystemTime::now();
    state.apply(response(&ca, 30, &[]), now);
    assert!(state.next_expiry(now).is_some());
    let later = now + Duration::from_secs(120);
    let entries = state.entries(&names(), later);
    assert!(!names_of(&entries).contains(&"default"));
    assert!(names_of(&entries).contains(&"ROOTCA"));
    assert_eq!(state.next_expiry(later), None);
}

#[test]
fn a_new_leaf_for_a_known_id_counts_as_a_rotation() {
    use super::x509::rotations;
    use crate::store::Certificate;
    use steeple_plugin_api::SecretBytes;
    let ca = TestCa::new("example.org");
    let cert = |id: &str| {
        std::sync::Arc::new(Certificate {
            spiffe_id: id.into(),
            chain_der: vec![ca.issue(id, 600).der],
            key_pkcs8: SecretBytes::copy_from(b"k"),
            not_before: SystemTime::now(),
            not_after: SystemTime::now(),
        })
    };
    let (web, db) = (
        cert("spiffe://example.org/web"),
        cert("spiffe://example.org/db"),
    );
    let before = std::slice::from_ref(&web);
    // Same leaf: none; a new leaf for web: one; a brand-new id: not a rotation.
    assert_eq!(rotations(before, std::slice::from_ref(&web)), 0);
    let rotated = cert("spiffe://example.org/web");
    assert_eq!(rotations(before, &[rotated, db]), 1);
}

/// SPIRE's answer for a workload whose entries were deleted (delegated mode): no SVID at
/// all. Unlike an update whose SVIDs fail validation, it withdraws everything.
#[test]
fn an_update_with_no_svid_withdraws_everything() {
    let ca = TestCa::new("example.org");
    let mut state = X509State::default();
    let now = SystemTime::now();
    state.apply(response(&ca, 3600, &[]), now);
    assert!(!state.entries(&names(), now).is_empty());
    state.apply(X509svidResponse::default(), now);
    assert!(state.entries(&names(), now).is_empty());
}

/// What lets a follower skip re-syncing its store: an update repeating the last one
/// leaves the very same values; a new bundle or a new leaf does not.
#[test]
fn only_a_repeated_update_holds_the_same_values() {
    let (ca, partner) = (TestCa::new("example.org"), TestCa::new("partner.org"));
    let now = SystemTime::now();
    let first = response(&ca, 600, &[("partner.org", &partner)]);
    let mut state = X509State::default();
    state.apply(first.clone(), now);
    let published = state.clone();
    state.apply(first.clone(), now);
    assert!(state.holds_same_values(&published));

    let mut new_partner = first.clone();
    let rotated = TestCa::new("partner.org");
    new_partner
        .federated_bundles
        .insert("spiffe://partner.org".into(), rotated.der.clone());
    let mut changed = published.clone();
    changed.apply(new_partner, now);
    assert!(
        !changed.holds_same_values(&published),
        "a new partner bundle"
    );

    let mut changed = published.clone();
    changed.apply(response(&ca, 600, &[("partner.org", &partner)]), now);
    assert!(!changed.holds_same_values(&published), "a new leaf");
    assert!(X509State::default().holds_same_values(&X509State::default()));
}
