use super::*;

fn row(provider: &str, ciphertext: &str, aad: &str) -> EnvelopeRow {
    EnvelopeRow {
        logical_path: "protected-resources/payments-api/upstream-tls".into(),
        provider: provider.into(),
        key_id: "arn:aws:kms:ca-central-1:123456789012:key/abc-123".into(),
        ciphertext_ref: ciphertext.into(),
        aad: aad.into(),
        ..EnvelopeRow::default()
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

#[test]
fn vault_rows_carry_references_and_transit_text() {
    let json = r#"[
        {"logical_path":"db/password","provider":"vault_delegate","key_id":"secret/payments/db",
         "field":"password","namespace":"ns1","version":"3"},
        {"logical_path":"api/key","provider":"vault_transit","key_id":"payments",
         "ciphertext_ref":"vault:v2:c2VjcmV0","mount":"transit"},
        {"logical_path":"big/blob","provider":"vault_transit","key_id":"payments",
         "ciphertext_ref":"AQID","data_key_ciphertext":"vault:v1:ZGVr","version":4}
    ]"#;
    let rows: Vec<EnvelopeRow> = serde_json::from_str(json).unwrap();
    let delegate = rows[0].validate(1024).unwrap();
    assert_eq!(delegate.vault.field.as_deref(), Some("password"));
    assert_eq!(delegate.vault.namespace.as_deref(), Some("ns1"));
    assert_eq!(delegate.vault.version, Some(3));
    assert!(delegate.ciphertext.is_empty());
    let transit = rows[1].validate(1024).unwrap();
    assert_eq!(transit.ciphertext, b"vault:v2:c2VjcmV0");
    let layered = rows[2].validate(1024).unwrap();
    assert_eq!(layered.ciphertext, [1, 2, 3]);
    assert_eq!(layered.data_key.as_deref(), Some(&b"vault:v1:ZGVr"[..]));
}

#[test]
fn malformed_vault_references_name_the_logical_path() {
    let base = EnvelopeRow {
        logical_path: "db/password".into(),
        provider: "vault_delegate".into(),
        key_id: "secret/payments/db".into(),
        field: Some("password".into()),
        ..EnvelopeRow::default()
    };
    let mut no_field = base.clone();
    no_field.field = None;
    let mut empty_path = base.clone();
    empty_path.key_id = String::new();
    let mut dotted = base.clone();
    dotted.key_id = "secret/../sys/raw".into();
    let mut transit = base.clone();
    transit.provider = "vault_transit".into();
    transit.ciphertext_ref = "v1:abc".into();
    for (row, expected) in [
        (no_field, "field is empty"),
        (empty_path, "key_id is empty"),
        (dotted, "has an empty, . or .. segment"),
        (transit, "vault:v<N>:"),
    ] {
        let text = row.validate(1024).unwrap_err().to_string();
        assert!(
            text.contains("db/password") && text.contains(expected),
            "{text}"
        );
    }
    let bad_version: Result<EnvelopeRow, _> =
        serde_json::from_str(r#"{"logical_path":"a","provider":"vault_delegate","version":"x"}"#);
    assert!(bad_version.is_err());
}

#[test]
fn vault_mounts_namespaces_and_transit_keys_are_plain_segments() {
    let delegate = EnvelopeRow {
        logical_path: "app/db".into(),
        provider: "vault_delegate".into(),
        key_id: "lookup-self".into(),
        field: Some("id".into()),
        ..EnvelopeRow::default()
    };
    let transit = EnvelopeRow {
        logical_path: "app/key".into(),
        provider: "vault_transit".into(),
        key_id: "payments".into(),
        ciphertext_ref: "vault:v1:abc".into(),
        ..EnvelopeRow::default()
    };
    let with = |row: &EnvelopeRow, namespace: Option<&str>, mount: Option<&str>| EnvelopeRow {
        namespace: namespace.map(str::to_owned),
        mount: mount.map(str::to_owned),
        ..row.clone()
    };
    for row in [
        with(&delegate, None, Some("secret/../../sys")),
        with(&delegate, None, Some("a//b")),
        with(&delegate, Some("team-a/.."), None),
        with(&delegate, Some("team a"), None),
        with(&transit, None, Some("..")),
    ] {
        let text = row.validate(1024).unwrap_err().to_string();
        assert!(text.contains("the Vault"), "{text}");
    }
    let mut nested_key = transit.clone();
    nested_key.key_id = "a/b".into();
    let text = nested_key.validate(1024).unwrap_err().to_string();
    assert!(text.contains("one transit key"), "{text}");
    // Plain segments pass; what they may reach is the Vault allowlist's decision.
    assert!(
        with(&delegate, Some("/team-a/"), Some("kv/team"))
            .validate(1024)
            .is_ok()
    );
}
