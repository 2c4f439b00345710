//! The control-plane source against a small local HTTP server standing in for the
//! control plane's list endpoint (Steeple's own test server, not a peer).

use std::sync::Mutex;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

const ROWS: &str = r#"{"envelope_secrets":[{"logical_path":"a/b","provider":"local","key_id":"k","ciphertext_ref":"AQID"}]}"#;

/// Answers each request with the next scripted `(status, etag, body)` and records the
/// request heads.
async fn serve(
    script: Vec<(u16, &'static str, &'static str)>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        for (status, etag, body) in script {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = vec![0u8; 8192];
            let n = stream.read(&mut head).await.unwrap();
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head[..n]).into_owned());
            let etag = if etag.is_empty() {
                String::new()
            } else {
                format!("ETag: {etag}\r\n")
            };
            let response = format!(
                "HTTP/1.1 {status} X\r\n{etag}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
        }
    });
    (url, seen)
}

fn config(url: &str) -> ControlPlaneConfig {
    ControlPlaneConfig {
        url: url.to_owned(),
        token_file: None,
        jwt_audience: None,
        poll_interval: Duration::from_secs(30),
        ca_file: None,
        allow_insecure: false,
        logical_path_prefixes: Vec::new(),
    }
}

#[test]
fn rows_outside_the_prefixes_are_refused() {
    let row = |path: &str| EnvelopeRow {
        logical_path: path.into(),
        ..EnvelopeRow::default()
    };
    let rows = vec![row("team-a/db"), row("team-b/db"), row("team-a")];
    let open = ControlPlaneSource::new(
        &config("https://cp.example.org"),
        Credential::TokenFile("/t".into()),
    )
    .unwrap();
    assert_eq!(open.within_prefixes(rows.clone()).len(), 3);
    let scoped = ControlPlaneSource::new(
        &ControlPlaneConfig {
            logical_path_prefixes: vec!["team-a/".into()],
            ..config("https://cp.example.org")
        },
        Credential::TokenFile("/t".into()),
    )
    .unwrap();
    let kept: Vec<String> = scoped
        .within_prefixes(rows)
        .into_iter()
        .map(|r| r.logical_path)
        .collect();
    assert_eq!(kept, ["team-a/db"]);
}

#[test]
fn the_logged_url_has_no_user_info_or_query() {
    let source = ControlPlaneSource::new(
        &config("https://user:secret-pass@cp.example.org/base?sig=secret-query"),
        Credential::TokenFile("/t".into()),
    )
    .unwrap();
    assert_eq!(
        source.shown_url,
        "https://cp.example.org/base/v1/crypto/envelope-secrets"
    );
}

#[tokio::test]
async fn polls_with_a_bearer_token_and_etag_and_reports_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "cp-token-1\n").unwrap();
    let (url, seen) = serve(vec![
        (200, "\"v1\"", ROWS),
        (304, "", ""),
        (403, "", ""),
        (200, "", "{not json"),
    ])
    .await;
    let mut source =
        ControlPlaneSource::new(&config(&url), Credential::TokenFile(token_file.clone())).unwrap();

    let rows = source.poll().await.unwrap().unwrap();
    assert_eq!(rows[0].logical_path, "a/b");
    std::fs::write(&token_file, "cp-token-2").unwrap();
    assert!(source.poll().await.unwrap().is_none(), "304 is no change");
    let err = source.poll().await.unwrap_err().to_string();
    assert!(
        err.contains("403") && err.contains("dual_custody_intercept"),
        "{err}"
    );
    let err = source.poll().await.unwrap_err().to_string();
    assert!(err.contains("not valid JSON"), "{err}");

    let seen = seen.lock().unwrap();
    assert!(seen[0].starts_with("GET /v1/crypto/envelope-secrets HTTP/1.1"));
    assert!(
        seen[0].contains("authorization: Bearer cp-token-1\r\n"),
        "{}",
        seen[0]
    );
    assert!(
        seen[1].contains("authorization: Bearer cp-token-2\r\n"),
        "token file re-read"
    );
    assert!(seen[1].contains("if-none-match: \"v1\""), "{}", seen[1]);
}

#[tokio::test]
async fn a_missing_token_or_unreachable_plane_is_an_error_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let mut source = ControlPlaneSource::new(
        &config("http://127.0.0.1:9"),
        Credential::TokenFile(missing),
    )
    .unwrap();
    assert!(matches!(source.poll().await, Err(PollError::Token(_))));

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "cp-token-secret").unwrap();
    let mut source = ControlPlaneSource::new(
        &config("http://127.0.0.1:9"),
        Credential::TokenFile(token_file),
    )
    .unwrap();
    let err = source.poll().await.unwrap_err().to_string();
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("cp-token-secret"));
}
