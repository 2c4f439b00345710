//! Transit: context encoding, ciphertext checks, answer decoding, error mapping.

use serde_json::json;

use super::*;

fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn context_is_base64_of_the_canonical_aad_text() {
    assert_eq!(transit_context(&EncryptionContext::new()), None);
    let encoded = transit_context(&context(&[("tenant", "a"), ("env", "prod")])).unwrap();
    assert_eq!(STANDARD.decode(encoded).unwrap(), b"env=prod,tenant=a");
}

#[test]
fn ciphertexts_must_carry_the_vault_prefix() {
    assert_eq!(
        transit_text("p", "ciphertext_ref", b"vault:v12:abc").unwrap(),
        "vault:v12:abc"
    );
    for bad in [
        &b"vault:abc"[..],
        b"vault:v:abc",
        b"vault:vx:abc",
        b"vault:v1:",
        b"\xff",
    ] {
        let err = transit_text("db/pw", "ciphertext_ref", bad).unwrap_err();
        assert_eq!(
            err,
            ResolveError::Undecryptable(
                "envelope \"db/pw\": ciphertext_ref does not start with vault:v<N>:".into()
            )
        );
    }
}

#[test]
fn answers_decode_from_base64() {
    let answer = json!({"data": {"plaintext": "aGVsbG8="}});
    assert_eq!(&decode_field(&answer, "plaintext").unwrap()[..], b"hello");
    assert!(decode_field(&json!({"data": {"plaintext": "!!"}}), "plaintext").is_err());
    assert!(decode_field(&json!({"data": {}}), "plaintext").is_err());
}

#[test]
fn transit_errors_map_by_status_and_message() {
    let api = |status: u16, error: &str| VaultError::Api {
        path: "transit/decrypt/k".into(),
        status,
        errors: vec![error.into()],
    };
    // Messages as OpenBao 2.4 sends them.
    for undecryptable in [
        "cipher: message authentication failed",
        "invalid ciphertext: version is too new",
        "invalid ciphertext: could not decode base64",
        "missing 'context' for key derivation; the key was created using a derived key",
    ] {
        let e = transit_error(&api(400, undecryptable), "transit/k");
        assert!(
            matches!(e, ResolveError::Undecryptable(ref m) if m.contains(undecryptable)),
            "{e}"
        );
    }
    assert_eq!(
        transit_error(&api(400, "encryption key not found"), "transit/k"),
        ResolveError::Upstream("transit key transit/k: encryption key not found".into())
    );
    assert_eq!(
        transit_error(&api(403, "permission denied"), "transit/k"),
        ResolveError::Upstream("permission denied on transit key transit/k".into())
    );
    assert!(transit_error(&api(503, "sealed"), "transit/k").is_retryable());
}
