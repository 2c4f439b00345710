use std::time::{Duration, SystemTime};

use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityOutput;
use aws_sdk_sts::types::Credentials;
use aws_smithy_types::DateTime;

use super::*;
use crate::test_support::{CountingEndpoint, PROFILE, shared_config_file};

fn config() -> StsConfig {
    StsConfig {
        role_arn: "arn:aws:iam::111122223333:role/payments-api".into(),
        session_name: Some("steeple".into()),
        ..StsConfig::default()
    }
}

fn output(expiration: SystemTime, secret: &str) -> AssumeRoleWithWebIdentityOutput {
    let credentials = Credentials::builder()
        .access_key_id("ASIAEXAMPLE")
        .secret_access_key(secret)
        .session_token("session-token")
        .expiration(DateTime::from(expiration))
        .build()
        .unwrap();
    let user = aws_sdk_sts::types::AssumedRoleUser::builder()
        .assumed_role_id("AROAEXAMPLE:steeple")
        .arn("arn:aws:sts::111122223333:assumed-role/payments-api/steeple")
        .build()
        .unwrap();
    AssumeRoleWithWebIdentityOutput::builder()
        .credentials(credentials)
        .assumed_role_user(user)
        .build()
}

#[test]
fn error_codes_map_to_retry_classes() {
    use ExchangeErrorKind::*;
    let cases = [
        ("IDPCommunicationError", 400, Transient),
        ("Throttling", 400, Transient),
        ("ThrottlingException", 400, Transient),
        ("RequestLimitExceeded", 400, Transient),
        // The SDK calls these throttling or transient; STS is no exception.
        ("LimitExceededException", 400, Transient),
        ("TooManyRequestsException", 429, Transient),
        ("RequestTimeoutException", 408, Transient),
        ("InternalFailure", 500, Transient),
        ("ServiceUnavailable", 503, Transient),
        ("InvalidIdentityToken", 400, TokenRejected),
        ("ExpiredTokenException", 400, TokenRejected),
        ("AccessDenied", 403, Fatal),
        ("IDPRejectedClaim", 403, Fatal),
        ("RegionDisabledException", 403, Fatal),
        ("MalformedPolicyDocument", 400, Fatal),
        ("ValidationError", 400, Fatal),
        ("PackedPolicyTooLarge", 400, Fatal),
    ];
    for (code, status, kind) in cases {
        assert_eq!(sts_error_kind(Some(code), status), kind, "{code}");
    }
    assert_eq!(sts_error_kind(None, 502), Transient);
    assert_eq!(sts_error_kind(None, 404), Fatal);
}

#[test]
fn transport_failures_are_transient_and_keep_the_aws_code_and_message() {
    for failure in [
        Failure::Timeout("operation timed out".into()),
        Failure::Dispatch("connection refused".into()),
        Failure::Response("unexpected end of body".into()),
    ] {
        assert_eq!(exchange_error(&failure).kind, ExchangeErrorKind::Transient);
    }
    let err = exchange_error(&Failure::Construction("bad input".into()));
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ExchangeErrorKind::Fatal, "RequestConstruction")
    );

    let err = exchange_error(&Failure::Service {
        code: Some("InvalidIdentityToken".into()),
        message: Some("Couldn't retrieve verification key from your identity provider".into()),
        status: 400,
    });
    assert_eq!(err.kind, ExchangeErrorKind::TokenRejected);
    assert_eq!(err.code, "InvalidIdentityToken");
    assert!(
        err.message
            .starts_with("Couldn't retrieve verification key")
    );
}

#[test]
fn config_is_checked_naming_the_key() {
    StsExchanger::new(config()).unwrap();
    let bad = |change: fn(&mut StsConfig)| {
        let mut config = config();
        change(&mut config);
        StsExchanger::new(config).unwrap_err().key
    };
    assert_eq!(bad(|c| c.role_arn.clear()), "role_arn");
    assert_eq!(
        bad(|c| c.role_arn = "payments-api-role-name-x".into()),
        "role_arn"
    );
    assert_eq!(
        bad(|c| c.role_arn = "arn:aws:iam::111122223333:user/bob".into()),
        "role_arn"
    );
    assert_eq!(bad(|c| c.audience = " ".into()), "audience");
    assert_eq!(
        bad(|c| c.session_name = Some("spiffe://example.org/a".into())),
        "session_name"
    );
    assert_eq!(bad(|c| c.session_name = Some("x".into())), "session_name");
    assert_eq!(bad(|c| c.duration = Duration::from_millis(500)), "duration");
    assert_eq!(
        bad(|c| c.duration = Duration::from_secs(1 << 40)),
        "duration"
    );
    assert_eq!(bad(|c| c.region = Some(" ".into())), "region");
}

#[test]
fn credentials_are_taken_with_their_expiration() {
    let now = SystemTime::now();
    let expiration = now + Duration::from_secs(900);
    let credentials = credentials_from(output(expiration, "secret-canary"), now).unwrap();
    assert_eq!(credentials.access_key_id, "ASIAEXAMPLE");
    assert_eq!(credentials.secret_access_key.expose(), b"secret-canary");
    assert_eq!(credentials.session_token.expose(), b"session-token");
    assert_eq!(credentials.account_id.as_deref(), Some("111122223333"));
    // DateTime keeps whole seconds and fractions; allow rounding to the second.
    let drift = credentials
        .expiration
        .duration_since(expiration)
        .unwrap_or_else(|e| e.duration());
    assert!(drift < Duration::from_secs(1), "{drift:?}");
    assert!(!format!("{credentials:?}").contains("secret-canary"));
}

#[test]
fn missing_empty_or_expired_credentials_are_refused() {
    let now = SystemTime::now();
    let none = AssumeRoleWithWebIdentityOutput::builder().build();
    let err = credentials_from(none, now).unwrap_err();
    assert_eq!(err.kind, ExchangeErrorKind::Fatal);
    assert_eq!(err.message, "STS response carried no credentials");

    let empty = credentials_from(output(now + Duration::from_secs(60), ""), now).unwrap_err();
    assert_eq!(empty.message, "STS response carried no credentials");

    let expired = credentials_from(output(now, "secret-canary"), now).unwrap_err();
    assert_eq!(
        (expired.kind, expired.code.as_str()),
        (ExchangeErrorKind::Fatal, "ExpiredCredentials")
    );
    assert!(!expired.message.contains("secret-canary"));
}

#[test]
fn audience_and_defaults() {
    let exchanger = StsExchanger::new(config()).unwrap();
    assert_eq!(exchanger.audience(), DEFAULT_AUDIENCE);
    assert_eq!(exchanger.config().region, None);
    assert_eq!(exchanger.config().duration, Duration::from_secs(3600));
}

#[tokio::test]
async fn a_silent_endpoint_is_cut_off_by_the_operation_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.push(stream);
        }
    });
    let exchanger = StsExchanger::new(StsConfig {
        endpoint: Some(endpoint),
        operation_timeout: Duration::from_millis(500),
        ..config()
    })
    .unwrap();
    let jwt = SecretBytes::copy_from(b"header.claims-canary.signature");
    let started = std::time::Instant::now();
    let err = exchanger.exchange(&jwt).await.unwrap_err();
    held.abort();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ExchangeErrorKind::Transient, "Timeout"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!err.to_string().contains("canary"), "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    let exchanger = StsExchanger::new(StsConfig {
        endpoint: Some("http://127.0.0.1:1".into()),
        ..config()
    })
    .unwrap();
    let jwt = SecretBytes::copy_from(b"header.claims.signature");
    let err = exchanger.exchange(&jwt).await.unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ExchangeErrorKind::Transient, "DispatchFailure"),
        "{err}"
    );
}

#[tokio::test]
async fn an_https_endpoint_is_spoken_to_in_tls() {
    // The SDK has no default HTTP client in this build: without ours the call would fail
    // before connecting, and a plain-HTTP client would send `POST` here.
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let first_record = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 6];
        stream.read_exact(&mut header).await.unwrap();
        header
    });
    let first_record = tokio::time::timeout(Duration::from_secs(10), first_record);
    let exchanger = StsExchanger::new(StsConfig {
        endpoint: Some(endpoint),
        operation_timeout: Duration::from_secs(5),
        ..config()
    })
    .unwrap();
    let jwt = SecretBytes::copy_from(b"header.claims.signature");
    let err = exchanger.exchange(&jwt).await.unwrap_err();
    let header = first_record
        .await
        .unwrap_or_else(|_| panic!("no connection reached the endpoint: {err}"))
        .unwrap();
    // A TLS handshake record (0x16, version 3.x) opening with a ClientHello (type 1).
    assert_eq!(
        (header[0], header[1], header[5]),
        (0x16, 3, 1),
        "{header:?}"
    );
    assert_eq!(err.kind, ExchangeErrorKind::Transient, "{err}");
}

#[tokio::test]
async fn the_region_is_configured_else_the_environments_else_the_default() {
    let environment = || Some(Region::from_static("ap-south-1"));
    let region = |chain: RegionProviderChain| async move { chain.region().await };
    assert_eq!(
        region(region_chain(Some("eu-west-1"), environment())).await,
        Some(Region::from_static("eu-west-1"))
    );
    assert_eq!(
        region(region_chain(None, environment())).await,
        Some(Region::from_static("ap-south-1"))
    );
    assert_eq!(
        region(region_chain(None, None::<Region>)).await,
        Some(Region::from_static(DEFAULT_REGION))
    );
}

/// One unsigned call with `client`; where it went is what the test looks at.
async fn call(client: &aws_sdk_sts::Client) {
    let _ = client
        .assume_role_with_web_identity()
        .role_arn("arn:aws:iam::111122223333:role/payments-api")
        .role_session_name("steeple")
        .web_identity_token("header.claims.signature")
        .send()
        .await;
}

#[tokio::test]
async fn the_sdks_endpoint_settings_apply_unless_an_endpoint_is_configured() {
    let from_sdk = CountingEndpoint::start().await;
    let configured = CountingEndpoint::start().await;
    let services = format!("sts =\n  endpoint_url = {}", from_sdk.url);
    let load = |settings: &str| {
        shared_config(&config())
            .profile_files(shared_config_file(settings, &services))
            .profile_name(PROFILE)
            .load()
    };

    let shared = load("").await;
    call(&client_from(&shared, None)).await;
    assert_eq!((from_sdk.connections(), configured.connections()), (1, 0));

    call(&client_from(&shared, Some(&configured.url))).await;
    assert_eq!((from_sdk.connections(), configured.connections()), (1, 1));

    // FIPS picks among AWS's endpoints; the SDK refuses it with a custom endpoint, so a
    // configured one drops it rather than failing every exchange.
    let fips = load("use_fips_endpoint = true\nuse_dualstack_endpoint = true").await;
    assert_eq!(fips.use_fips(), Some(true));
    call(&client_from(&fips, Some(&configured.url))).await;
    assert_eq!((from_sdk.connections(), configured.connections()), (1, 2));
}

#[tokio::test]
async fn our_settings_win_over_the_sdks() {
    let settings = "region = ap-south-1\nmax_attempts = 5\nretry_mode = adaptive";
    let shared = shared_config(&StsConfig {
        region: Some("eu-west-1".into()),
        operation_timeout: Duration::from_secs(3),
        ..config()
    })
    .profile_files(shared_config_file(settings, ""))
    .profile_name(PROFILE)
    .load()
    .await;
    assert_eq!(shared.region(), Some(&Region::from_static("eu-west-1")));
    assert_eq!(shared.retry_config().map(|r| r.max_attempts()), Some(1));
    assert!(
        shared.credentials_provider().is_none(),
        "the call stays unsigned"
    );
    let client = client_from(&shared, None);
    let timeouts = client.config().timeout_config().unwrap();
    assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(3)));
    assert_eq!(
        timeouts.operation_attempt_timeout(),
        Some(Duration::from_secs(3))
    );
}

#[test]
fn the_account_comes_from_the_assumed_role_arn_or_is_left_out() {
    for (arn, account) in [
        (
            "arn:aws:sts::111122223333:assumed-role/payments-api/steeple",
            Some("111122223333"),
        ),
        (
            "arn:aws-us-gov:sts::444455556666:assumed-role/r/s",
            Some("444455556666"),
        ),
        ("arn:aws:iam::111122223333:role/payments-api", None),
        ("arn:aws:sts::1111:assumed-role/r/s", None),
        ("arn:aws:sts::11112222333x:assumed-role/r/s", None),
        ("arn:aws:sts:us-east-1:111122223333:assumed-role/r/s", None),
        ("arn:aws:sts::111122223333:federated-user/bob", None),
        ("", None),
    ] {
        assert_eq!(assumed_role_account(arn), account, "{arn}");
    }
    let now = SystemTime::now();
    let mut without = output(now + Duration::from_secs(900), "s");
    without.assumed_role_user = None;
    assert_eq!(credentials_from(without, now).unwrap().account_id, None);
}
