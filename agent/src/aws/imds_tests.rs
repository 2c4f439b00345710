//! The IMDSv2 emulation over real loopback TCP, driven by a raw HTTP/1.1 client so the
//! exact wire behaviour is what is tested; another process (bash's `/dev/tcp`) plays the
//! second caller.

use std::time::SystemTime;

use steeple_plugin_api::{AwsCredentials, SecretBytes};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::*;
use crate::authz::{Policy, Rule, SharedPolicy};

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/team/app";
const LIST: &str = "/latest/meta-data/iam/security-credentials/";
const CREDENTIALS: &str = "/latest/meta-data/iam/security-credentials/app";

struct Harness {
    addr: SocketAddr,
    credentials: watch::Sender<Option<AwsCredentials>>,
    _shutdown: tokio_util::sync::DropGuard,
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Harness {
    async fn start(initial: Option<AwsCredentials>) -> Self {
        let own = rustix::process::geteuid().as_raw();
        Self::start_with(initial, Policy::new(Vec::new(), own)).await
    }

    async fn start_with(initial: Option<AwsCredentials>, policy: Policy) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        limit_hops(&listener).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(initial);
        let shutdown = CancellationToken::new();
        let credentials = CallerCredentials::single(
            RoleCredentials::new(ROLE_ARN.into(), rx),
            SharedPolicy::new(policy),
            "aws-credentials".into(),
        );
        let imds = Imds::new(credentials);
        tokio::spawn(serve(listener, imds, shutdown.clone()));
        Self {
            addr,
            credentials: tx,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// Sends raw `bytes` and reads the whole answer (the request closes the connection).
    async fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        self.send(bytes, false).await
    }

    /// Sends `bytes`, then (`half_close`) ends the write side, and reads until the server
    /// closes; a write or read the server cut short is not an error here.
    async fn send(&self, bytes: &[u8], half_close: bool) -> Vec<u8> {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        if stream.write_all(bytes).await.is_ok() && half_close {
            let _ = stream.shutdown().await;
        }
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw));
        assert!(read.await.is_ok(), "the server neither answered nor closed");
        raw
    }

    async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut text = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("Connection: close\r\n\r\n");
        parse(&self.raw(text.as_bytes()).await)
    }

    async fn token(&self, ttl: &str) -> String {
        let answer = self.put_token(ttl).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }

    async fn put_token(&self, ttl: &str) -> Answer {
        let ttl_header = [("X-aws-ec2-metadata-token-ttl-seconds", ttl)];
        self.request("PUT", "/latest/api/token", &ttl_header).await
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        let headers = [("X-aws-ec2-metadata-token", token)];
        self.request("GET", path, &headers).await
    }
}

fn parse(raw: &[u8]) -> Answer {
    let raw = String::from_utf8(raw.to_vec()).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn credentials(lifetime: Duration) -> AwsCredentials {
    AwsCredentials {
        access_key_id: "ASIAEXAMPLE".into(),
        secret_access_key: SecretBytes::copy_from(b"secret/key+1"),
        session_token: SecretBytes::copy_from(b"session-token=="),
        expiration: SystemTime::now() + lifetime,
        account_id: Some("123456789012".into()),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// One request sent by another process (bash, reading the answer with its own `read`:
/// no other program runs after it connected): its raw answer.
fn request_from_child(addr: SocketAddr, request: &str) -> Answer {
    let script = "exec 3<>/dev/tcp/127.0.0.1/$1 && printf '%b' \"$2\" >&3 && \
         while IFS= read -r line <&3 || [[ -n $line ]]; do printf '%s\\n' \"$line\"; done";
    let output = std::process::Command::new("bash")
        .args(["-c", script, "request"])
        .arg(addr.port().to_string())
        .arg(request.replace("\r\n", "\\r\\n"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    parse(&output.stdout)
}

#[tokio::test]
async fn an_sdk_walk_gets_the_role_and_its_credentials() {
    let h = Harness::start(Some(credentials(HOUR))).await;
    let answer = h.put_token("21600").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .head
            .contains("x-aws-ec2-metadata-token-ttl-seconds: 21600")
    );
    let token = answer.body;
    assert_eq!(token.len(), 43, "{token}");
    for list in [LIST, LIST.trim_end_matches('/')] {
        let answer = h.get(list, &token).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "app"),
            "{list}"
        );
    }
    for path in [
        CREDENTIALS,
        "/latest/meta-data/iam/security-credentials-extended/app",
    ] {
        let answer = h.get(path, &token).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert!(answer.head.contains("content-type: application/json"));
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(json["Code"], "Success");
        assert_eq!(json["Type"], "AWS-HMAC");
        assert_eq!(json["AccessKeyId"], "ASIAEXAMPLE");
        assert_eq!(json["SecretAccessKey"], "secret/key+1");
        assert_eq!(json["Token"], "session-token==");
        assert_eq!(json["AccountId"], "123456789012");
        assert!(json["Expiration"].as_str().unwrap().ends_with('Z'));
        assert!(json["LastUpdated"].as_str().unwrap().ends_with('Z'));
    }
    let answer = h
        .get("/latest/meta-data/iam/security-credentials/other", &token)
        .await;
    assert_eq!(answer.status, 404, "another role name");
}

#[tokio::test]
async fn gets_without_a_valid_token_are_401() {
    let h = Harness::start(Some(credentials(HOUR))).await;
    let v1 = h.request("GET", CREDENTIALS, &[]).await;
    assert_eq!(v1.status, 401, "IMDSv1");
    assert!(!v1.body.contains("secret"));
    for bad in ["", "not-a-token", &"a".repeat(129)] {
        assert_eq!(h.get(CREDENTIALS, bad).await.status, 401, "{bad:?}");
    }
    let token = h.token("60").await;
    let twice = [
        ("X-aws-ec2-metadata-token", token.as_str()),
        ("X-aws-ec2-metadata-token", token.as_str()),
    ];
    assert_eq!(h.request("GET", CREDENTIALS, &twice).await.status, 401);
    let short = h.token("1").await;
    assert_eq!(h.get(LIST, &short).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(h.get(LIST, &short).await.status, 401, "expired");
}

#[tokio::test]
async fn a_token_works_only_for_the_process_that_got_it() {
    let h = Harness::start(Some(credentials(HOUR))).await;
    let addr = h.addr;
    let put = "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\n\
               X-aws-ec2-metadata-token-ttl-seconds: 60\r\nConnection: close\r\n\r\n";
    let theirs = tokio::task::spawn_blocking(move || request_from_child(addr, put))
        .await
        .unwrap();
    assert_eq!(theirs.status, 200);
    assert_eq!(
        h.get(LIST, theirs.body.trim()).await.status,
        401,
        "theirs, here"
    );
    let mine = h.token("60").await;
    let get = format!(
        "GET {LIST} HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: {mine}\r\nConnection: close\r\n\r\n"
    );
    let answer = tokio::task::spawn_blocking(move || request_from_child(addr, &get))
        .await
        .unwrap();
    assert_eq!(answer.status, 401, "mine, there");
    assert_eq!(h.get(LIST, &mine).await.status, 200, "mine, here");
}

#[tokio::test]
async fn token_ttls_outside_1_to_21600_are_400() {
    let h = Harness::start(Some(credentials(HOUR))).await;
    for ttl in [
        "0",
        "21601",
        "-1",
        "1.5",
        "abc",
        "",
        "6 0",
        "0060000",
        "99999999999999999999",
    ] {
        assert_eq!(h.put_token(ttl).await.status, 400, "{ttl:?}");
    }
    assert_eq!(h.request("PUT", "/latest/api/token", &[]).await.status, 400);
    let twice = [
        ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
        ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
    ];
    assert_eq!(
        h.request("PUT", "/latest/api/token", &twice).await.status,
        400
    );
    for ttl in ["1", "21600", "060"] {
        assert_eq!(h.put_token(ttl).await.status, 200, "{ttl:?}");
    }
}

#[tokio::test]
async fn proxied_requests_are_403() {
    let h = Harness::start(Some(credentials(HOUR))).await;
    let token = h.token("60").await;
    for proxy in [
        ("X-Forwarded-For", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1"),
    ] {
        let put = [("X-aws-ec2-metadata-token-ttl-seconds", "60"), proxy];
        assert_eq!(
            h.request("PUT", "/latest/api/token", &put).await.status,
            403
        );
        let get = [("X-aws-ec2-metadata-token", token.as_str()), proxy];
        let answer = h.request("GET", CREDENTIALS, &get).await;
        assert_eq!(answer.status, 403);
        assert!(!answer.body.contains("secret"));
    }
}

#[tokio::test]
async fn wrong_methods_are_405_and_other_paths_404() {
    let h = Harness::start(Some(credentials(HOUR))).await;
    let token = h.token("60").await;
    let with_token = [("X-aws-ec2-metadata-token", token.as_str())];
    let get_token = h.request("GET", "/latest/api/token", &with_token).await;
    assert_eq!(get_token.status, 405);
    assert!(get_token.head.contains("allow: put"), "{}", get_token.head);
    for method in ["POST", "DELETE", "PUT", "HEAD"] {
        let answer = h.request(method, CREDENTIALS, &with_token).await;
        assert_eq!(answer.status, 405, "{method}");
        assert!(answer.head.contains("allow: get"));
    }
    for path in [
        "/",
        "/latest/meta-data/",
        "/latest/meta-data/placement/region",
        "/latest/meta-data/iam/security-credentialsX",
        "/latest/user-data",
    ] {
        assert_eq!(h.get(path, &token).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn no_valid_credentials_is_503_never_success() {
    let h = Harness::start(None).await;
    let token = h.token("60").await;
    assert_eq!(h.get(CREDENTIALS, &token).await.status, 503);
    let expired = AwsCredentials {
        expiration: SystemTime::now() - Duration::from_secs(1),
        ..credentials(HOUR)
    };
    h.credentials.send_replace(Some(expired));
    assert_eq!(h.get(CREDENTIALS, &token).await.status, 503);
    h.credentials.send_replace(Some(credentials(HOUR)));
    assert_eq!(h.get(CREDENTIALS, &token).await.status, 200);
}

#[tokio::test]
async fn a_caller_the_policy_does_not_grant_gets_no_token() {
    let own = rustix::process::geteuid().as_raw();
    let elsewhere = Rule {
        uids: vec![own],
        gids: Vec::new(),
        exe: None,
        spiffe_ids: vec![],
        resources: vec!["payments/*".to_owned()],
    };
    let h = Harness::start_with(Some(credentials(HOUR)), Policy::new(vec![elsewhere], own)).await;
    let answer = h.put_token("60").await;
    assert_eq!(answer.status, 403);
    assert!(
        answer.body.contains("\"aws-credentials\""),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn bodies_and_garbage_are_refused_and_the_server_keeps_serving() {
    let h = Harness::start(Some(credentials(HOUR))).await;
    let with_body = b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\n\
        X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(parse(&h.raw(with_body).await).status, 400);
    let chunked = b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\n\
        X-aws-ec2-metadata-token-ttl-seconds: 60\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n";
    assert_eq!(parse(&h.raw(chunked).await).status, 400);
    for garbage in [
        &b"\x00\xff\xfe garbage\r\n\r\n"[..],
        b"GET /latest/api/token\xff HTTP/1.1\r\n\r\n",
        &[b'A'; 70_000][..],
    ] {
        let answer = h.send(garbage, true).await;
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"),
            "{answer:?}"
        );
    }
    let huge = "x".repeat(500_000);
    let request = format!("GET /{huge} HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = h.send(request.as_bytes(), true).await;
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"));
    assert_eq!(h.put_token("60").await.status, 200, "still serving");
}

#[tokio::test]
async fn accepted_sockets_send_with_hop_limit_1() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let Ok(listener) = std::net::TcpListener::bind(bind) else {
            continue; // no IPv6 loopback here
        };
        limit_hops(&listener).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let hops = match accepted.local_addr().unwrap() {
            SocketAddr::V4(_) => accepted.ttl().unwrap(),
            SocketAddr::V6(_) => rustix::net::sockopt::ipv6_unicast_hops(&accepted)
                .unwrap()
                .into(),
        };
        assert_eq!(hops, 1, "{bind}");
    }
}

#[test]
fn routes_are_exact() {
    assert_eq!(route("/latest/api/token"), Route::Token);
    assert_eq!(route("/latest/api/token/"), Route::Unknown);
    assert_eq!(route(LIST), Route::RoleList);
    assert_eq!(
        route("/latest/meta-data/iam/security-credentials-extended"),
        Route::RoleList
    );
    assert_eq!(route(CREDENTIALS), Route::Role("app"));
    assert_eq!(
        route("/latest/meta-data/iam/security-credentials/a/b"),
        Route::Role("a/b")
    );
    assert_eq!(route("/latest/meta-data/iam/info"), Route::Unknown);
}
