use std::time::SystemTime;

use steeple_plugin_api::{AwsCredentials, EnvelopeRow};
use tokio::sync::watch;

use super::*;
use crate::test_support::{CountingEndpoint, PROFILE, shared_config_file};

const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// A resolver whose every call would fail as unreachable: a `Refused` from it proves no
/// call was made.
fn resolver(credentials: Option<AwsCredentials>) -> KmsEnvelopeResolver {
    let (_tx, rx) = watch::channel(credentials);
    KmsEnvelopeResolver::new(
        KmsConfig {
            key_arn_allowlist: vec!["arn:aws:kms:us-east-1:111122223333:".into()],
            endpoint: Some("http://127.0.0.1:1".into()),
            operation_timeout: Duration::from_secs(2),
            ..KmsConfig::default()
        },
        Arc::new(rx),
    )
    .unwrap()
}

fn valid_credentials() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "ASIAEXAMPLE".into(),
        secret_access_key: SecretBytes::copy_from(b"secret"),
        session_token: SecretBytes::copy_from(b"token"),
        expiration: SystemTime::now() + Duration::from_secs(600),
        account_id: None,
    }
}

fn envelope(key_id: &str, provider: &str) -> SealedEnvelope {
    EnvelopeRow {
        logical_path: "db/password".into(),
        provider: provider.into(),
        key_id: key_id.into(),
        ciphertext_ref: "AAAA".into(),
        aad: "app=payments".into(),
        ..EnvelopeRow::default()
    }
    .validate(1024)
    .unwrap()
}

#[tokio::test]
async fn refuses_without_calling_kms() {
    let resolver = resolver(Some(valid_credentials()));
    let cases = [
        envelope("1234abcd-12ab-34cd-56ef-1234567890ab", "kms_envelope"),
        envelope("alias/payments", "kms_envelope"),
        envelope("arn:aws:kms:eu-west-1:111122223333:key/k", "kms_envelope"),
        envelope(KEY, "local"),
    ];
    for envelope in &cases {
        let err = resolver.resolve(envelope).await.unwrap_err();
        assert!(
            matches!(err, ResolveError::Refused(_)),
            "{}: {err}",
            envelope.key_id
        );
    }
    let err = resolver
        .describe_key("arn:aws:kms:eu-west-1:111122223333:key/k")
        .await;
    assert!(matches!(err, Err(ResolveError::Refused(_))), "{err:?}");
    assert!(
        resolver.clients.lock().unwrap().is_empty(),
        "no client was even built"
    );
}

#[tokio::test]
async fn no_credentials_is_unavailable() {
    for credentials in [
        None,
        Some(AwsCredentials {
            expiration: SystemTime::now(),
            account_id: None,
            ..valid_credentials()
        }),
    ] {
        let err = resolver(credentials)
            .resolve(&envelope(KEY, "kms_envelope"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ResolveError::Unavailable(m) if m.contains("no valid AWS credentials yet")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn unreachable_kms_is_unavailable() {
    let resolver = resolver(Some(valid_credentials()));
    let err = resolver
        .resolve(&envelope(KEY, "kms_envelope"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ResolveError::Unavailable(m) if m.contains("db/password") && m.contains(KEY)),
        "{err}"
    );
    assert!(err.is_retryable());
    let err = resolver.describe_key(KEY).await.unwrap_err();
    assert!(matches!(err, ResolveError::Unavailable(_)), "{err}");
    assert_eq!(
        resolver.clients.lock().unwrap().len(),
        1,
        "one client per region"
    );
}

#[test]
fn alias_cache_expires_and_stays_bounded() {
    let cache = AliasCache {
        ttl: Duration::from_secs(60),
        max_entries: 2,
        entries: Mutex::new(HashMap::new()),
    };
    cache.insert("alias-a", "key-a");
    cache.insert("alias-b", "key-b");
    assert_eq!(cache.get("alias-a").as_deref(), Some("key-a"));
    cache.insert("alias-c", "key-c");
    assert!(cache.entries.lock().unwrap().len() <= 2);
    assert_eq!(cache.get("alias-c").as_deref(), Some("key-c"));

    let expired = AliasCache {
        ttl: Duration::ZERO,
        max_entries: 2,
        entries: Mutex::new(HashMap::new()),
    };
    expired.insert("alias-a", "key-a");
    assert_eq!(expired.get("alias-a"), None);

    let off = AliasCache {
        ttl: Duration::from_secs(60),
        max_entries: 0,
        entries: Mutex::new(HashMap::new()),
    };
    off.insert("alias-a", "key-a");
    assert_eq!(off.get("alias-a"), None);
}

#[test]
fn empty_context_is_sent_as_none() {
    assert_eq!(kms_context(&EncryptionContext::new()), None);
    let context: EncryptionContext = [("app".to_owned(), "payments".to_owned())].into();
    assert_eq!(
        kms_context(&context),
        Some([("app".to_owned(), "payments".to_owned())].into())
    );
}

#[test]
fn bad_allowlist_is_a_config_error() {
    let (_tx, rx) = watch::channel(None);
    let err = KmsEnvelopeResolver::new(
        KmsConfig {
            key_arn_allowlist: vec!["111122223333".into()],
            ..KmsConfig::default()
        },
        Arc::new(rx),
    )
    .unwrap_err();
    assert_eq!(err.key, "key_arn_allowlist");
}

/// One signed `DescribeKey` with `client`; where it went is what the test looks at.
async fn call(client: &aws_sdk_kms::Client) {
    let _ = client.describe_key().key_id(KEY).send().await;
}

#[tokio::test]
async fn the_sdks_endpoint_settings_apply_unless_an_endpoint_is_configured() {
    let from_sdk = CountingEndpoint::start().await;
    let configured = CountingEndpoint::start().await;
    let services = format!("kms =\n  endpoint_url = {}", from_sdk.url);
    let (_tx, rx) = watch::channel(Some(valid_credentials()));
    let credentials = SourceCredentialsProvider::new(Arc::new(rx));
    let load = |settings: &str| {
        shared_config("us-east-1", Duration::from_secs(2), &credentials)
            .profile_files(shared_config_file(settings, &services))
            .profile_name(PROFILE)
            .load()
    };

    let shared = load("region = ap-south-1\nmax_attempts = 5").await;
    assert_eq!(
        shared.region(),
        Some(&Region::from_static("us-east-1")),
        "the key's region wins"
    );
    assert_eq!(shared.retry_config().map(|r| r.max_attempts()), Some(1));
    call(&client_from(&shared, None)).await;
    assert_eq!((from_sdk.connections(), configured.connections()), (1, 0));

    call(&client_from(&shared, Some(&configured.url))).await;
    assert_eq!((from_sdk.connections(), configured.connections()), (1, 1));

    let fips = load("use_fips_endpoint = true").await;
    call(&client_from(&fips, Some(&configured.url))).await;
    assert_eq!((from_sdk.connections(), configured.connections()), (1, 2));
}
