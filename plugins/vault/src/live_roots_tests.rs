//! The live verifier: nothing trusted before the first bundle, then exactly the current
//! bundle plus the fixed roots; a refused bundle keeps the previous roots.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Ca {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost`.
    fn leaf(&self) -> CertificateDer<'static> {
        self.svid(None)
    }

    /// A server certificate for `localhost`, with `spiffe_id` as a URI SAN if given.
    fn svid(&self, spiffe_id: Option<&str>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if let Some(id) = spiffe_id {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(id.try_into().unwrap()));
        }
        CertificateDer::from(params.signed_by(&key, &self.issuer).unwrap().der().to_vec())
    }
}

fn verify(roots: &LiveRoots, leaf: &CertificateDer<'_>, host: &str) -> Result<(), String> {
    let verifier = LiveVerifier {
        roots: roots.clone(),
    };
    let name = ServerName::try_from(host.to_owned()).unwrap();
    verifier
        .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn nothing_is_trusted_before_the_first_bundle() {
    let roots = LiveRoots::new("the SPIFFE bundle of example.org", Vec::new(), None);
    assert!(!roots.is_ready());
    let err = verify(&roots, &Ca::new("a").leaf(), "localhost").unwrap_err();
    assert!(
        err.contains("the SPIFFE bundle of example.org not received yet"),
        "{err}"
    );
}

#[test]
fn follows_the_bundle_as_it_changes() {
    let (old, new) = (Ca::new("old"), Ca::new("new"));
    let (old_leaf, new_leaf) = (old.leaf(), new.leaf());
    let roots = LiveRoots::new("bundle", Vec::new(), None);

    roots.replace(std::slice::from_ref(&old.der)).unwrap();
    assert_eq!(verify(&roots, &old_leaf, "localhost"), Ok(()));
    let err = verify(&roots, &new_leaf, "localhost").unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // A rotation: both roots, then only the new one.
    roots.replace(&[old.der.clone(), new.der.clone()]).unwrap();
    assert_eq!(verify(&roots, &old_leaf, "localhost"), Ok(()));
    assert_eq!(verify(&roots, &new_leaf, "localhost"), Ok(()));
    roots.replace(std::slice::from_ref(&new.der)).unwrap();
    assert!(verify(&roots, &old_leaf, "localhost").is_err());
    assert_eq!(verify(&roots, &new_leaf, "localhost"), Ok(()));
}

#[test]
fn the_name_is_still_checked() {
    let ca = Ca::new("a");
    let roots = LiveRoots::new("bundle", Vec::new(), None);
    roots.replace(std::slice::from_ref(&ca.der)).unwrap();
    let err = verify(&roots, &ca.leaf(), "vault.example.org").unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
}

#[test]
fn a_useless_bundle_is_refused_and_the_old_roots_stay() {
    let ca = Ca::new("a");
    let roots = LiveRoots::new("the SPIFFE bundle of example.org", Vec::new(), None);
    roots.replace(std::slice::from_ref(&ca.der)).unwrap();
    for bad in [vec![], vec![b"not a certificate".to_vec()]] {
        let err = roots.replace(&bad).unwrap_err();
        assert_eq!(err.origin, "the SPIFFE bundle of example.org");
        assert!(err.problem.contains("no usable CA"), "{err}");
    }
    assert_eq!(verify(&roots, &ca.leaf(), "localhost"), Ok(()));
}

#[test]
fn fixed_roots_are_trusted_from_the_start_and_beside_every_bundle() {
    let (fixed, bundle) = (Ca::new("fixed"), Ca::new("bundle"));
    let roots = LiveRoots::new(
        "bundle",
        vec![CertificateDer::from(fixed.der.clone())],
        None,
    );
    assert!(roots.is_ready());
    assert_eq!(verify(&roots, &fixed.leaf(), "localhost"), Ok(()));
    roots.replace(std::slice::from_ref(&bundle.der)).unwrap();
    assert_eq!(verify(&roots, &fixed.leaf(), "localhost"), Ok(()));
    assert_eq!(verify(&roots, &bundle.leaf(), "localhost"), Ok(()));
}

#[test]
fn debug_names_the_origin_only() {
    let roots = LiveRoots::new("the SPIFFE bundle of example.org", Vec::new(), None);
    let text = format!("{roots:?}");
    assert!(
        text.contains("example.org") && text.contains("ready: false"),
        "{text}"
    );
}

#[test]
fn a_pinned_spiffe_id_refuses_other_workloads_of_the_trust_domain() {
    let ca = Ca::new("example.org");
    let pinned = LiveRoots::new(
        "the SPIFFE bundle of example.org",
        Vec::new(),
        Some("spiffe://example.org/vault".to_owned()),
    );
    pinned.replace(std::slice::from_ref(&ca.der)).unwrap();
    let vault = ca.svid(Some("spiffe://example.org/vault"));
    assert_eq!(verify(&pinned, &vault, "localhost"), Ok(()));
    let other = ca.svid(Some("spiffe://example.org/payments"));
    let err = verify(&pinned, &other, "localhost").unwrap_err();
    assert!(
        err.contains("not the pinned spiffe://example.org/vault"),
        "{err}"
    );
    let err = verify(&pinned, &ca.leaf(), "localhost").unwrap_err();
    assert!(err.contains("[]"), "{err}");
    // Unpinned, any certificate of the bundle with the DNS name is accepted, as before.
    let open = LiveRoots::new("bundle", Vec::new(), None);
    open.replace(std::slice::from_ref(&ca.der)).unwrap();
    assert_eq!(verify(&open, &other, "localhost"), Ok(()));
}
