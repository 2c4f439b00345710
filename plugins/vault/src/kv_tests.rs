//! KV references: path splitting, API paths, field picking, error mapping.

use serde_json::json;

use super::*;

fn path(mount: &str, path: &str) -> KvPath {
    KvPath {
        mount: mount.into(),
        path: path.into(),
    }
}

#[test]
fn key_id_splits_into_mount_and_path_unless_the_mount_is_given() {
    assert_eq!(
        KvPath::split("secret/payments/db", None).unwrap(),
        path("secret", "payments/db")
    );
    assert_eq!(
        KvPath::split("payments/db", Some("team/kv/")).unwrap(),
        path("team/kv", "payments/db")
    );
    let err = KvPath::split("secret", None).unwrap_err();
    assert!(
        err.contains("names no secret inside mount \"secret\""),
        "{err}"
    );
    assert!(KvPath::split("", Some("kv")).is_err());
    assert!(KvPath::split("x", Some("/")).is_err());
}

#[test]
fn api_paths_for_kv_v1_and_v2() {
    let p = path("secret", "payments/db");
    assert_eq!(
        p.api_path(KvVersion::V2, None).unwrap(),
        "secret/data/payments/db"
    );
    assert_eq!(
        p.api_path(KvVersion::V2, Some(3)).unwrap(),
        "secret/data/payments/db?version=3"
    );
    assert_eq!(
        p.api_path(KvVersion::V1, None).unwrap(),
        "secret/payments/db"
    );
    assert!(p.api_path(KvVersion::V1, Some(3)).is_err());
    assert_eq!(
        path("kv", "a b").api_path(KvVersion::V1, None).unwrap(),
        "kv/a%20b"
    );
    assert_eq!(KvVersion::from_number(1), Some(KvVersion::V1));
    assert_eq!(KvVersion::from_number(3), None);
}

#[test]
fn fields_are_served_as_text_or_compact_json() {
    let p = path("secret", "app");
    let v2 = json!({"data": {"data": {"pw": "canary-pw", "n": 5, "o": {"a": [1, 2]}},
        "metadata": {"version": 2}}});
    let pick = |field| pick_field(&v2, KvVersion::V2, &p, field);
    assert_eq!(pick("pw").unwrap().expose(), b"canary-pw");
    assert_eq!(pick("n").unwrap().expose(), b"5");
    assert_eq!(pick("o").unwrap().expose(), br#"{"a":[1,2]}"#);
    let err = pick("missing").unwrap_err();
    assert_eq!(
        err,
        "field \"missing\" not found in secret/app (its fields: n, o, pw)"
    );
    assert!(!err.contains("canary"));

    let v1 = json!({"data": {"pw": "one"}});
    assert_eq!(
        pick_field(&v1, KvVersion::V1, &p, "pw").unwrap().expose(),
        b"one"
    );
    let deleted = json!({"data": {"data": null, "metadata": {"deletion_time": "x"}}});
    let err = pick_field(&deleted, KvVersion::V2, &p, "pw").unwrap_err();
    assert!(err.contains("holds no data"), "{err}");
}

#[test]
fn read_errors_map_by_status() {
    let p = path("secret", "app");
    let api = |status: u16, errors: &[&str]| VaultError::Api {
        path: "secret/data/app".into(),
        status,
        errors: errors.iter().map(|e| (*e).to_owned()).collect(),
    };
    assert_eq!(
        kv_error(&api(404, &[]), &p, Some(4)),
        ResolveError::Upstream("secret not found at secret/app (version 4)".into())
    );
    assert_eq!(
        kv_error(&api(404, &["namespace not found"]), &p, None),
        ResolveError::Upstream("secret not found at secret/app: namespace not found".into())
    );
    assert_eq!(
        kv_error(&api(403, &["permission denied"]), &p, None),
        ResolveError::Upstream("permission denied on secret/app".into())
    );
    assert!(kv_error(&api(503, &["Vault is sealed"]), &p, None).is_retryable());
    let down = VaultError::Unreachable {
        addr: "http://127.0.0.1:1".into(),
        message: "connection refused".into(),
    };
    assert!(kv_error(&down, &p, None).is_retryable());
}
