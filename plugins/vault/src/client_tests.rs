//! Client building, error parsing, path encoding.

use super::*;

#[test]
fn build_checks_addr_and_ca_file() {
    let ok = VaultClientConfig {
        addr: "http://127.0.0.1:8200/".into(),
        namespace: Some(String::new()),
        ..VaultClientConfig::default()
    }
    .build()
    .unwrap();
    assert_eq!(ok.addr(), "http://127.0.0.1:8200");
    assert_eq!(ok.namespace(), None);
    for bad in ["127.0.0.1:8200", "ftp://vault", "not a url"] {
        let config = VaultClientConfig {
            addr: bad.into(),
            ..VaultClientConfig::default()
        };
        assert!(
            matches!(config.build(), Err(ClientBuildError::Addr(_))),
            "{bad}"
        );
    }
    let dir = std::env::temp_dir().join(format!("steeple-vault-ca-{}", std::process::id()));
    std::fs::write(&dir, b"not pem").unwrap();
    let config = VaultClientConfig {
        ca_file: Some(dir.clone()),
        ..VaultClientConfig::default()
    };
    let err = config.build().unwrap_err();
    std::fs::remove_file(&dir).unwrap();
    assert!(matches!(err, ClientBuildError::CaFile { .. }), "{err}");
    assert!(err.to_string().contains("steeple-vault-ca"), "{err}");
}

#[test]
fn errors_parse_from_vault_json_or_plain_text() {
    assert_eq!(
        parse_errors(br#"{"errors":["permission denied"]}"#),
        vec!["permission denied".to_owned()]
    );
    assert!(parse_errors(br#"{"errors":[]}"#).is_empty());
    assert_eq!(
        parse_errors(b"  bad gateway \n"),
        vec!["bad gateway".to_owned()]
    );
    assert!(parse_errors(b"").is_empty());
}

#[test]
fn transient_errors_are_the_retryable_statuses() {
    let api = |status| VaultError::Api {
        path: "x".into(),
        status,
        errors: vec![],
    };
    for status in [500, 503, 429, 412] {
        assert!(api(status).is_transient(), "{status}");
    }
    for status in [400, 403, 404] {
        assert!(!api(status).is_transient(), "{status}");
    }
    assert!(api(404).to_string().contains("(no error text)"));
}

#[test]
fn paths_are_percent_encoded_per_segment() {
    assert_eq!(encode_path("secret/data/app/db"), "secret/data/app/db");
    assert_eq!(encode_path("a b/c?d#e/%"), "a%20b/c%3Fd%23e/%25");
    assert_eq!(encode_path("ü"), "%C3%BC");
}

#[test]
fn a_path_that_would_leave_v1_is_refused_before_any_request() {
    let config = VaultClientConfig {
        addr: "http://127.0.0.1:8200/prefix/".to_owned(),
        ..VaultClientConfig::default()
    };
    let client = config.build().unwrap();
    let url = client.api_url("secret/data/app?version=2").unwrap();
    assert_eq!(url.path(), "/prefix/v1/secret/data/app");
    for escaping in [
        "secret/../../sys/raw",
        "..",
        "./secret/data/app",
        "secret/%2e%2e/x",
        "secret/%2E./x",
    ] {
        let err = client.api_url(escaping).unwrap_err();
        assert!(err.contains("leaves /v1/"), "{escaping}: {err}");
    }
    // encode_path keeps a literal `%` from ever forming an escape.
    assert!(client.api_url(&encode_path("secret/%2e%2e/x")).is_ok());
}
