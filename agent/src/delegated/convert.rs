//! A workload's update from the Delegated Identity API in the shape of a Workload API
//! response's SVIDs, and the bundles it may see (its own trust domains' and those it
//! federates with) — so one validator ([`X509State`]) judges both, and a node agent serves
//! each workload what SPIRE agent's own SDS would. Bundles are parsed once, when SPIRE
//! agent sends them, and shared by every workload.
//!
//! [`X509State`]: crate::identity::x509::X509State

use std::collections::BTreeMap;
use std::sync::Arc;

use spire_api::pb::spire::api::agent::delegatedidentity::v1::X509svidWithKey;
use steeple_proto::workload::X509svid;
use zeroize::Zeroize;

use crate::identity::x509::parse_bundle;
use crate::store::TrustBundle;

/// Trust domain name (`example.org`) → its roots.
pub type BundleMap = BTreeMap<String, Arc<TrustBundle>>;

/// One workload's SVIDs as SPIRE last sent them (keys zeroized when dropped), and the
/// trust domains they federate with.
#[derive(Default)]
pub struct WorkloadSvids {
    svids: Vec<X509svid>,
    federates_with: Vec<String>,
}

impl std::fmt::Debug for WorkloadSvids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        f.debug_struct("WorkloadSvids")
            .field("spiffe_ids", &ids)
            .field("federates_with", &self.federates_with)
            .finish_non_exhaustive()
    }
}

impl Drop for WorkloadSvids {
    fn drop(&mut self) {
        for svid in &mut self.svids {
            svid.x509_svid_key.zeroize();
        }
    }
}

impl WorkloadSvids {
    /// Takes the SVIDs of one update, the one whose hint is `default_hint` first (else
    /// SPIRE's order: by entry ID, lowest first). An SVID without an ID is left out.
    pub fn new(
        svids: Vec<X509svidWithKey>,
        federates_with: Vec<String>,
        default_hint: Option<&str>,
    ) -> Self {
        let mut out: Vec<X509svid> = svids.into_iter().filter_map(workload_svid).collect();
        if let Some(at) = default_hint.and_then(|h| out.iter().position(|s| s.hint == h)) {
            let chosen = out.remove(at);
            out.insert(0, chosen);
        }
        Self {
            svids: out,
            federates_with,
        }
    }

    /// Whether SPIRE sent no SVID (no registration entry matches the workload).
    pub fn is_empty(&self) -> bool {
        self.svids.is_empty()
    }

    /// The SVIDs, default first (their `bundle` fields empty: see
    /// [`WorkloadSvids::visible_bundles`]).
    pub fn svids(&self) -> &[X509svid] {
        &self.svids
    }

    /// The bundles of `bundles` these SVIDs may see: each one's own trust domain's, and
    /// those named in `federates_with` (SPIRE's semantics for `ALL`).
    pub fn visible_bundles(&self, bundles: &BundleMap) -> BundleMap {
        let own = self
            .svids
            .iter()
            .filter_map(|svid| crate::spiffe_ids::trust_domain_of(&svid.spiffe_id));
        let federated = self
            .federates_with
            .iter()
            .filter_map(|td| crate::spiffe_ids::trust_domain(td));
        own.chain(federated)
            .filter_map(|td| {
                let bundle = bundles.get(td.as_str())?;
                Some((td.to_string(), bundle.clone()))
            })
            .collect()
    }
}

/// One delegated SVID as the Workload API carries it (chain concatenated, key moved).
fn workload_svid(mut svid: X509svidWithKey) -> Option<X509svid> {
    let x509 = svid.x509_svid.take()?;
    let id = x509.id?;
    let key = svid.x509_svid_key.to_vec();
    Some(X509svid {
        spiffe_id: format!("spiffe://{}{}", id.trust_domain, id.path),
        x509_svid: x509
            .cert_chain
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect(),
        x509_svid_key: key,
        bundle: Vec::new(),
        hint: x509.hint,
    })
}

/// A bundle response's map (keys `spiffe://td` as released SPIRE agents send them, or
/// bare `td` as the proto describes) keyed by trust domain name, each parsed (or kept
/// from `last` when unchanged, or when malformed); keys that are neither are logged and
/// left out.
pub fn bundle_map(
    ca_certificates: std::collections::HashMap<String, prost::bytes::Bytes>,
    last: &BundleMap,
) -> BundleMap {
    ca_certificates
        .into_iter()
        .filter_map(|(key, der)| match crate::spiffe_ids::trust_domain(&key) {
            Some(td) => {
                let bundle = parse_bundle(td.as_str(), &der, last.get(td.as_str()))?;
                Some((td.to_string(), bundle))
            }
            None => {
                tracing::error!(key, "bundle keyed by an invalid trust domain; ignored");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use spire_api::pb::spire::api::types::{Spiffeid, X509svid as ProtoSvid};

    fn delegated(path: &str, hint: &str) -> X509svidWithKey {
        X509svidWithKey {
            x509_svid: Some(ProtoSvid {
                cert_chain: vec![vec![1, 2].into(), vec![3].into()],
                id: Some(Spiffeid {
                    trust_domain: "example.org".into(),
                    path: path.into(),
                }),
                expires_at: 0,
                hint: hint.into(),
            }),
            x509_svid_key: vec![9].into(),
        }
    }

    fn parsed(td: &str, root: u8) -> Arc<TrustBundle> {
        Arc::new(TrustBundle {
            trust_domain: td.into(),
            roots_der: vec![vec![root]],
        })
    }

    #[test]
    fn svids_see_their_own_roots_and_only_the_federated_bundles_they_name() {
        let bundles: BundleMap = [
            ("example.org".to_owned(), parsed("example.org", 7)),
            ("partner.org".to_owned(), parsed("partner.org", 8)),
            ("stranger.org".to_owned(), parsed("stranger.org", 6)),
        ]
        .into();
        let svids = WorkloadSvids::new(
            vec![delegated("/a", ""), delegated("/b", "external")],
            vec!["spiffe://partner.org".into()],
            None,
        );
        let first = &svids.svids()[0];
        assert_eq!(first.spiffe_id, "spiffe://example.org/a");
        assert_eq!(first.x509_svid, [1, 2, 3]);
        assert_eq!(first.x509_svid_key, [9]);
        let visible = svids.visible_bundles(&bundles);
        let tds: Vec<&String> = visible.keys().collect();
        assert_eq!(tds, ["example.org", "partner.org"]);
        assert!(Arc::ptr_eq(
            &visible["example.org"],
            &bundles["example.org"]
        ));
    }

    #[test]
    fn the_hinted_svid_comes_first_else_spires_order_stands() {
        let both = || vec![delegated("/a", "internal"), delegated("/b", "external")];
        let first = |s: WorkloadSvids| s.svids()[0].spiffe_id.clone();
        assert_eq!(
            first(WorkloadSvids::new(both(), vec![], Some("external"))),
            "spiffe://example.org/b"
        );
        assert_eq!(
            first(WorkloadSvids::new(both(), vec![], Some("absent"))),
            "spiffe://example.org/a"
        );
        assert_eq!(
            first(WorkloadSvids::new(both(), vec![], None)),
            "spiffe://example.org/a"
        );
    }

    #[test]
    fn bundle_keys_in_either_form_are_accepted_and_junk_is_not() {
        let der = |td: &str| crate::test_support::TestCa::new(td).der.into();
        let map = bundle_map(
            [
                ("spiffe://example.org".to_owned(), der("example.org")),
                ("partner.org".to_owned(), der("partner.org")),
                ("spiffe://bad.org/with/path".to_owned(), der("bad.org")),
                ("NOT A DOMAIN".to_owned(), der("x.org")),
            ]
            .into(),
            &BundleMap::new(),
        );
        let keys: Vec<&String> = map.keys().collect();
        assert_eq!(keys, ["example.org", "partner.org"]);
    }

    #[test]
    fn bundles_are_parsed_once_and_a_malformed_one_keeps_its_last_good_roots() {
        let (ours, partner) = (
            crate::test_support::TestCa::new("example.org").der,
            crate::test_support::TestCa::new("partner.org").der,
        );
        let update = |partner_der: Vec<u8>| {
            [
                ("spiffe://example.org".to_owned(), ours.clone().into()),
                ("spiffe://partner.org".to_owned(), partner_der.into()),
            ]
            .into()
        };
        let first = bundle_map(update(partner.clone()), &BundleMap::new());
        assert_eq!(first["partner.org"].roots_der, [partner]);
        let junk = bundle_map(update(b"not a certificate".to_vec()), &first);
        assert!(
            Arc::ptr_eq(&junk["example.org"], &first["example.org"]),
            "unchanged: not parsed again"
        );
        assert!(
            Arc::ptr_eq(&junk["partner.org"], &first["partner.org"]),
            "malformed: the last good kept"
        );
        let rotated = crate::test_support::TestCa::new("partner.org").der;
        let next = bundle_map(update(rotated.clone()), &junk);
        assert_eq!(next["partner.org"].roots_der, [rotated]);
        assert!(
            !bundle_map(update(b"junk".to_vec()), &BundleMap::new()).contains_key("partner.org")
        );
    }
}
