use super::*;
use crate::test_support::TestCa;

const ID: &str = "spiffe://example.org/workload";

#[test]
fn accepts_a_good_svid() {
    let ca = TestCa::new("example.org");
    let leaf = ca.issue(ID, 3600);
    let cert = validate_svid(ID, &leaf.der, &leaf.key_pkcs8, &[ca.der], SystemTime::now()).unwrap();
    assert_eq!(cert.spiffe_id, ID);
    assert_eq!(cert.chain_der.len(), 1);
}

#[test]
fn refuses_bad_der() {
    let ca = TestCa::new("example.org");
    let leaf = ca.issue(ID, 3600);
    let err = validate_svid(
        ID,
        b"\x30\x03junk",
        &leaf.key_pkcs8,
        &[ca.der],
        SystemTime::now(),
    );
    assert!(matches!(err, Err(SvidError::BadDer { .. })), "{err:?}");
}

#[test]
fn refuses_a_key_of_another_leaf() {
    let ca = TestCa::new("example.org");
    let leaf = ca.issue(ID, 3600);
    let other = ca.issue(ID, 3600);
    let err = validate_svid(
        ID,
        &leaf.der,
        &other.key_pkcs8,
        &[ca.der],
        SystemTime::now(),
    );
    assert!(matches!(err, Err(SvidError::KeyMismatch)), "{err:?}");
}

#[test]
fn refuses_a_leaf_from_another_ca() {
    let ca = TestCa::new("example.org");
    let other = TestCa::new("example.org");
    let leaf = ca.issue(ID, 3600);
    let err = validate_svid(
        ID,
        &leaf.der,
        &leaf.key_pkcs8,
        &[other.der],
        SystemTime::now(),
    );
    assert!(matches!(err, Err(SvidError::Untrusted(_))), "{err:?}");
}

#[test]
fn refuses_an_expired_leaf() {
    let ca = TestCa::new("example.org");
    let leaf = ca.issue(ID, -10);
    let err = validate_svid(ID, &leaf.der, &leaf.key_pkcs8, &[ca.der], SystemTime::now());
    assert!(matches!(err, Err(SvidError::Untrusted(_))), "{err:?}");
}

#[test]
fn refuses_a_wrong_spiffe_id() {
    let ca = TestCa::new("example.org");
    let leaf = ca.issue("spiffe://example.org/other", 3600);
    let err = validate_svid(ID, &leaf.der, &leaf.key_pkcs8, &[ca.der], SystemTime::now());
    assert!(matches!(err, Err(SvidError::WrongId { .. })), "{err:?}");
}

#[test]
fn pem_round_trips_and_is_sized_exactly_enough() {
    let ca = TestCa::new("example.org");
    let leaf = ca.issue(ID, 3600);
    let pem = pem_encode("CERTIFICATE", &[&ca.der, &leaf.der]);
    assert!(pem.capacity() >= pem.len());
    let text = String::from_utf8(pem).unwrap();
    assert_eq!(text.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert!(text.lines().all(|l| l.len() <= 64));
    let key = pem_encode_key(&SecretBytes::copy_from(&leaf.key_pkcs8));
    assert!(key.expose().starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
}
