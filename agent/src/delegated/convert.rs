//! A workload's update from the Delegated Identity API, with the bundles it federates
//! with, in the shape of a Workload API response — so one validator ([`X509State`]) judges
//! both, and a node agent serves each workload what SPIRE agent's own SDS would.
//!
//! [`X509State`]: crate::identity::x509::X509State

use std::collections::BTreeMap;

use spire_api::pb::spire::api::agent::delegatedidentity::v1::X509svidWithKey;
use steeple_proto::workload::{X509svid, X509svidResponse};
use zeroize::Zeroize;

/// Trust domain name (`example.org`) → its roots, concatenated DER.
pub type BundleMap = BTreeMap<String, Vec<u8>>;

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

    /// The Workload API response these SVIDs make with `bundles`: each SVID carries its
    /// own trust domain's roots, and the federated ones are those named in
    /// `federates_with` (SPIRE's semantics for `ALL`).
    pub fn response(&self, bundles: &BundleMap) -> X509svidResponse {
        let roots_of = |id: &str| {
            crate::spiffe_ids::trust_domain_of(id)
                .and_then(|td| bundles.get(td.as_str()))
                .cloned()
                .unwrap_or_default()
        };
        let svids = self
            .svids
            .iter()
            .map(|svid| X509svid {
                bundle: roots_of(&svid.spiffe_id),
                ..svid.clone()
            })
            .collect();
        let federated_bundles = self
            .federates_with
            .iter()
            .filter_map(|td| {
                let td = crate::spiffe_ids::trust_domain(td)?;
                let roots = bundles.get(td.as_str())?;
                Some((format!("spiffe://{td}"), roots.clone()))
            })
            .collect();
        X509svidResponse {
            svids,
            federated_bundles,
            ..Default::default()
        }
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
/// bare `td` as the proto describes) keyed by trust domain name; keys that are neither are
/// logged and left out.
pub fn bundle_map(
    ca_certificates: std::collections::HashMap<String, prost::bytes::Bytes>,
) -> BundleMap {
    ca_certificates
        .into_iter()
        .filter_map(|(key, der)| match crate::spiffe_ids::trust_domain(&key) {
            Some(td) => Some((td.to_string(), der.to_vec())),
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

    #[test]
    fn svids_carry_their_own_roots_and_only_the_federated_bundles_they_name() {
        let bundles: BundleMap = [
            ("example.org".to_owned(), vec![7]),
            ("partner.org".to_owned(), vec![8]),
            ("stranger.org".to_owned(), vec![6]),
        ]
        .into();
        let svids = WorkloadSvids::new(
            vec![delegated("/a", ""), delegated("/b", "external")],
            vec!["spiffe://partner.org".into()],
            None,
        );
        let response = svids.response(&bundles);
        assert_eq!(response.svids[0].spiffe_id, "spiffe://example.org/a");
        assert_eq!(response.svids[0].x509_svid, [1, 2, 3]);
        assert_eq!(response.svids[0].x509_svid_key, [9]);
        assert_eq!(response.svids[0].bundle, [7]);
        let federated: Vec<&String> = response.federated_bundles.keys().collect();
        assert_eq!(federated, ["spiffe://partner.org"]);
    }

    #[test]
    fn the_hinted_svid_comes_first_else_spires_order_stands() {
        let both = || vec![delegated("/a", "internal"), delegated("/b", "external")];
        let first = |s: WorkloadSvids| s.response(&BundleMap::new()).svids[0].spiffe_id.clone();
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
        let map = bundle_map(
            [
                ("spiffe://example.org".to_owned(), vec![1].into()),
                ("partner.org".to_owned(), vec![2].into()),
                ("spiffe://bad.org/with/path".to_owned(), vec![3].into()),
                ("NOT A DOMAIN".to_owned(), vec![4].into()),
            ]
            .into(),
        );
        let keys: Vec<&String> = map.keys().collect();
        assert_eq!(keys, ["example.org", "partner.org"]);
    }
}
