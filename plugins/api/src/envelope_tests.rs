use super::*;

fn row(provider: &str, ciphertext: &str, aad: &str) -> EnvelopeRow {
    EnvelopeRow {
        logical_path: "protected-resources/payments-api/upstream-tls".into(),
        provider: provider.into(),
        key_id: "arn:aws:kms:ca-central-1:123456789012:key/abc-123".into(),
        ciphertext_ref: ciphertext.into(),
        aad: aad.into(),
        data_key_ciphertext: None,
    }
}

#[test]
fn reads_a_control_plane_row_as_is() {
    let json = r#"{
        "id": 7, "created_at": "2026-01-01T00:00:00Z",
        "logical_path": "protected-resources/payments-api/upstream-tls",
        "key_id": "arn:aws:kms:ca-central-1:123456789012:key/abc-123",
        "ciphertext_ref": "AQID",
        "aad": "env=production,service=payments-api",
        "provider": "kms_envelope"
    }"#;
    let row: EnvelopeRow = serde_json::from_str(json).unwrap();
    let sealed = row.validate(1024).unwrap();
    assert_eq!(sealed.provider, Provider::KmsEnvelope);
    assert_eq!(sealed.ciphertext, [1, 2, 3]);
    assert_eq!(sealed.context["env"], "production");
    assert_eq!(sealed.context["service"], "payments-api");
    assert_eq!(format_aad(&sealed.context), row.aad);
}

#[test]
fn every_refusal_names_the_logical_path() {
    let cases = [
        (row("kms_envelope", "not base64!", ""), "not valid base64"),
        (row("kms_envelope", "", ""), "ciphertext_ref is empty"),
        (row("rot13", "AQID", ""), "unknown provider \"rot13\""),
        (row("kms_envelope", "AQID", "env"), "has no '='"),
        (row("kms_envelope", "AQID", "=x"), "empty key"),
        (row("kms_envelope", "AQID", "a=1, b=2"), "spaces"),
        (row("kms_envelope", "AQID", "a=1,a=2"), "appears twice"),
        (
            row("kms_envelope", &"A".repeat(4000), ""),
            "larger than 1024",
        ),
    ];
    for (row, expected) in cases {
        let err = row.validate(1024).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("payments-api/upstream-tls"), "{text}");
        assert!(text.contains(expected), "{text} lacks {expected}");
    }
}

#[test]
fn refuses_bad_paths_and_missing_keys() {
    let mut r = row("local", "AQID", "");
    r.logical_path = String::new();
    assert!(r.validate(64).unwrap_err().to_string().contains("<empty>"));
    r.logical_path = "a b".into();
    assert!(r.validate(64).unwrap_err().problem.contains("whitespace"));
    r.logical_path = "x".repeat(MAX_LOGICAL_PATH_LEN + 1);
    assert!(r.validate(64).unwrap_err().problem.contains("longer"));
    let mut r = row("local", "AQID", "");
    r.key_id = " ".into();
    assert!(r.validate(64).unwrap_err().problem.contains("key_id"));
}

#[test]
fn values_may_hold_equals_signs_and_debug_hides_ciphertext() {
    let context = parse_aad("k=a=b,empty=").unwrap();
    assert_eq!(context["k"], "a=b");
    assert_eq!(context["empty"], "");
    let r = row("kms_envelope", "c2VjcmV0LWNpcGhlcnRleHQ=", "");
    let printed = format!("{r:?} {:?}", r.validate(64).unwrap());
    assert!(!printed.contains("c2VjcmV0"), "{printed}");
}
