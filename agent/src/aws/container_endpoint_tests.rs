//! The container-credentials endpoint over real loopback TCP, driven by a raw HTTP/1.1
//! client so the exact wire behaviour is what is tested.

use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::*;
use crate::authz::{Policy, Rule, SharedPolicy};
use crate::aws::role_credentials::RoleCredentials;
use std::time::SystemTime;
use steeple_plugin_api::{AwsCredentials, SecretBytes};

const TOKEN: &str = "token-abc-123";

struct Harness {
    addr: SocketAddr,
    credentials: watch::Sender<Option<AwsCredentials>>,
    token_file: PathBuf,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(initial: Option<AwsCredentials>) -> Self {
        let own = rustix::process::geteuid().as_raw();
        Self::start_with(initial, Policy::new(Vec::new(), own)).await
    }

    async fn start_with(initial: Option<AwsCredentials>, policy: Policy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(initial);
        let shutdown = CancellationToken::new();
        let endpoint = Endpoint {
            token_file: token_file.clone(),
            credentials: CallerCredentials::single(
                RoleCredentials::new("arn:aws:iam::123456789012:role/app".to_owned(), rx),
                SharedPolicy::new(policy),
                "aws-credentials".to_owned(),
            ),
        };
        let server = tokio::spawn(serve(listener, endpoint, shutdown.clone()));
        Self {
            addr,
            credentials: tx,
            token_file,
            shutdown,
            server,
            _dir: dir,
        }
    }

    /// Sends one request and returns the status, the raw header block and the body.
    async fn request(&self, method: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let mut text = format!("{method} /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("Connection: close\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(text.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .unwrap()
            .unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    async fn get(&self, token: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self.request("GET", &[("Authorization", token)]).await;
        (status, serde_json::from_str(&body).unwrap())
    }
}

fn credentials(lifetime_s: i64) -> AwsCredentials {
    let now = SystemTime::now();
    let expiration = if lifetime_s >= 0 {
        now + Duration::from_secs(lifetime_s.unsigned_abs())
    } else {
        now - Duration::from_secs(lifetime_s.unsigned_abs())
    };
    AwsCredentials {
        access_key_id: "ASIAEXAMPLE".into(),
        secret_access_key: SecretBytes::copy_from(b"secret/key+1"),
        session_token: SecretBytes::copy_from(b"session-token=="),
        expiration,
        account_id: Some("123456789012".into()),
    }
}

fn assert_error(status: u16, body: &serde_json::Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body.get("AccessKeyId").is_none());
}

#[tokio::test]
async fn serves_the_container_credentials_json() {
    let h = Harness::start(Some(credentials(3600))).await;
    let (status, head, body) = h.request("GET", &[("Authorization", TOKEN)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["AccessKeyId"], "ASIAEXAMPLE");
    assert_eq!(json["SecretAccessKey"], "secret/key+1");
    assert_eq!(json["Token"], "session-token==");
    assert!(json["Expiration"].as_str().unwrap().ends_with('Z'));
    assert!(json.get("SessionToken").is_none());
    assert!(json.get("Version").is_none());
}

#[tokio::test]
async fn refuses_a_missing_or_wrong_token() {
    let h = Harness::start(Some(credentials(3600))).await;
    let (status, body) = h.get("token-abc-124").await;
    assert_error(status, &body, 401, "Unauthorized");
    // The file's trailing newline is not part of the token.
    let (status, body) = h.get(TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = h.request("GET", &[]).await;
    assert_error(
        status,
        &serde_json::from_str(&body).unwrap(),
        401,
        "Unauthorized",
    );
}

#[tokio::test]
async fn a_rotated_token_file_takes_effect_on_the_next_request() {
    let h = Harness::start(Some(credentials(3600))).await;
    assert_eq!(h.get(TOKEN).await.0, 200);
    std::fs::write(&h.token_file, "rotated-token").unwrap();
    let (status, body) = h.get(TOKEN).await;
    assert_error(status, &body, 401, "Unauthorized");
    assert_eq!(h.get("rotated-token").await.0, 200);
}

#[tokio::test]
async fn an_unusable_token_file_is_a_server_error() {
    let h = Harness::start(Some(credentials(3600))).await;
    std::fs::write(&h.token_file, "\n").unwrap();
    let (status, body) = h.get("").await;
    assert_error(status, &body, 500, "InternalError");
    std::fs::remove_file(&h.token_file).unwrap();
    let (status, body) = h.get(TOKEN).await;
    assert_error(status, &body, 500, "InternalError");
}

#[tokio::test]
async fn refuses_proxied_requests() {
    let h = Harness::start(Some(credentials(3600))).await;
    let (status, _, body) = h
        .request(
            "GET",
            &[("Authorization", TOKEN), ("X-Forwarded-For", "10.0.0.7")],
        )
        .await;
    assert_error(
        status,
        &serde_json::from_str(&body).unwrap(),
        403,
        "Forbidden",
    );
}

#[tokio::test]
async fn only_get_is_allowed() {
    let h = Harness::start(Some(credentials(3600))).await;
    let (status, head, body) = h.request("POST", &[("Authorization", TOKEN)]).await;
    assert_error(
        status,
        &serde_json::from_str(&body).unwrap(),
        405,
        "MethodNotAllowed",
    );
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
}

#[tokio::test]
async fn no_valid_credentials_is_503_never_success() {
    let h = Harness::start(None).await;
    let (status, body) = h.get(TOKEN).await;
    assert_error(status, &body, 503, "CredentialsUnavailable");

    h.credentials.send_replace(Some(credentials(-1)));
    let (status, body) = h.get(TOKEN).await;
    assert_error(status, &body, 503, "CredentialsUnavailable");

    h.credentials.send_replace(Some(credentials(3600)));
    assert_eq!(h.get(TOKEN).await.0, 200);
}

#[tokio::test]
async fn stops_on_shutdown_and_closes_idle_connections() {
    let h = Harness::start(Some(credentials(3600))).await;
    // A keep-alive connection, idle after one answered request, must not hold shutdown up.
    let mut idle = TcpStream::connect(h.addr).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\n\r\n");
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    h.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), h.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).await.unwrap();
    assert!(TcpStream::connect(h.addr).await.is_err());
}

#[test]
fn token_comparison_is_exact() {
    assert!(tokens_match(b"abc", b"abc"));
    assert!(!tokens_match(b"abc", b"abd"));
    assert!(!tokens_match(b"abc", b"abc "));
    assert!(!tokens_match(b"", b"abc"));
}

#[tokio::test]
async fn a_caller_the_policy_does_not_grant_the_credentials_is_forbidden() {
    let own = rustix::process::geteuid().as_raw();
    let elsewhere = Rule {
        uids: vec![own],
        gids: Vec::new(),
        exe: None,
        spiffe_ids: vec![],
        resources: vec!["payments/*".to_owned()],
    };
    let h = Harness::start_with(Some(credentials(3600)), Policy::new(vec![elsewhere], own)).await;
    let (status, body) = h.get(TOKEN).await;
    assert_error(status, &body, 403, "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("\"aws-credentials\""),
        "{body}"
    );
    // The token is still checked first: a wrong one is 401, whoever asks.
    let (status, body) = h.get("wrong").await;
    assert_error(status, &body, 401, "Unauthorized");
    h.shutdown.cancel();
}

/// A policy granting the credentials to this uid running this test binary only.
fn this_executable_only() -> Policy {
    let own = rustix::process::geteuid().as_raw();
    let exe = std::env::current_exe().unwrap().display().to_string();
    let by_exe = Rule {
        uids: vec![own],
        gids: Vec::new(),
        exe: Some(exe),
        spiffe_ids: vec![],
        resources: vec!["aws-credentials".to_owned()],
    };
    Policy::new(vec![by_exe], own)
}

#[tokio::test]
async fn a_rule_matching_the_callers_executable_grants_the_credentials() {
    let h = Harness::start_with(Some(credentials(3600)), this_executable_only()).await;
    let (status, body) = h.get(TOKEN).await;
    assert_eq!(status, 200, "{body}");
    h.shutdown.cancel();
}

#[tokio::test]
async fn a_token_file_ending_in_a_newline_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    assert!(ends_with_newline(&path).await);
    std::fs::write(&path, TOKEN).unwrap();
    assert!(!ends_with_newline(&path).await);
    std::fs::write(&path, "").unwrap();
    assert!(!ends_with_newline(&path).await);
    assert!(!ends_with_newline(&dir.path().join("missing")).await);
}

/// The adversarial review's spoof (issue 12.4): a process connects, a child of another
/// executable keeps the socket (here `sleep`, which inherits it as stdin), and the
/// request goes out. The holders differ in executable, so neither is taken for the
/// caller and the request is refused, even though a rule grants this process.
#[tokio::test]
async fn a_socket_shared_with_a_process_of_another_executable_is_refused() {
    use tokio::io::AsyncReadExt as _;
    let h = Harness::start_with(Some(credentials(3600)), this_executable_only()).await;
    let stream = std::net::TcpStream::connect(h.addr).unwrap();
    let shared: std::os::fd::OwnedFd = stream.try_clone().unwrap().into();
    let mut holder = std::process::Command::new("sleep")
        .arg("30")
        .stdin(std::process::Stdio::from(shared))
        .spawn()
        .unwrap();
    stream.set_nonblocking(true).unwrap();
    let mut stream = TcpStream::from_std(stream).unwrap();
    let request = format!(
        "GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(raw.contains("could not be identified"), "{raw}");
    h.shutdown.cancel();
}
