//! The AWS provider against a real moto server: `StsExchanger` trades a JWT for
//! credentials with an unsigned AssumeRoleWithWebIdentity; `KmsEnvelopeResolver` signs KMS
//! calls with exactly those credentials, checks the allowlist before any call, the
//! encryption context, the key KMS reports (aliases included) and the data-key layer; an
//! outage maps to a retryable kind. Requests are counted from moto's own recorder.
//!
//! moto does not check signatures or the web-identity token, so this proves the protocol,
//! the error mapping and what is sent; OpenBao's suite proves real JWT validation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use steeple_e2e::moto::Moto;
use steeple_plugin_api::{
    AwsCredentials, CredentialExchanger, EnvelopeResolver, EnvelopeRow, ExchangeErrorKind,
    ResolveError, SealedEnvelope, SecretBytes, format_aad,
};
use steeple_plugin_aws::{
    KmsConfig, KmsEnvelopeResolver, SealOptions, StsConfig, StsExchanger, role_session_name,
    seal_with_kms,
};
use tokio::sync::watch;

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/steeple-e2e";
const WORKLOAD: &str = "spiffe://example.org/ns/e2e/sa/api";
const TOKEN_CANARY: &str = "canary-web-identity-token";
const SECRET_CANARY: &str = "canary-kms-plaintext-0001";
const DECRYPT: &str = "TrentService.Decrypt";
const DESCRIBE_KEY: &str = "TrentService.DescribeKey";

/// A syntactically valid RS256 JWT (moto checks no signature).
fn jwt() -> SecretBytes {
    let b64 = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let header = b64(r#"{"alg":"RS256","typ":"JWT","kid":"e2e"}"#);
    let claims = b64(&format!(
        r#"{{"iss":"https://oidc.example.org","sub":"{WORKLOAD}","aud":["sts.amazonaws.com"],"exp":4102444800,"jti":"{TOKEN_CANARY}"}}"#
    ));
    SecretBytes::new(format!("{header}.{claims}.{}", b64(TOKEN_CANARY)).into_bytes())
}

fn sts(moto: &Moto, duration: Duration) -> anyhow::Result<StsExchanger> {
    Ok(StsExchanger::new(StsConfig {
        role_arn: ROLE_ARN.into(),
        session_name: Some(role_session_name(WORKLOAD)),
        duration,
        endpoint: Some(moto.endpoint()),
        ..StsConfig::default()
    })?)
}

fn context(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn envelope(
    path: &str,
    key_id: &str,
    ciphertext: &[u8],
    aad: &str,
) -> anyhow::Result<SealedEnvelope> {
    let row = EnvelopeRow {
        logical_path: path.into(),
        provider: "kms_envelope".into(),
        key_id: key_id.into(),
        ciphertext_ref: base64::engine::general_purpose::STANDARD.encode(ciphertext),
        aad: aad.into(),
        ..EnvelopeRow::default()
    };
    Ok(row.validate(64 * 1024)?)
}

/// The allowlist prefix covering every key and alias of `key_arn`'s account and region.
fn account_prefix(key_arn: &str) -> anyhow::Result<String> {
    let (prefix, _) = key_arn
        .split_once(":key/")
        .ok_or_else(|| anyhow::anyhow!("{key_arn} is not a key ARN"))?;
    Ok(format!("{prefix}:"))
}

/// A resolver against `moto` signing with credentials exchanged from moto's STS.
struct Kms {
    resolver: KmsEnvelopeResolver,
    credentials: watch::Sender<Option<AwsCredentials>>,
}

async fn kms(moto: &Moto, allowlist: Vec<String>) -> anyhow::Result<Kms> {
    let credentials = sts(moto, Duration::from_secs(900))?
        .exchange(&jwt())
        .await?;
    let (tx, rx) = watch::channel(Some(credentials));
    let resolver = KmsEnvelopeResolver::new(
        KmsConfig {
            key_arn_allowlist: allowlist,
            endpoint: Some(moto.endpoint()),
            ..KmsConfig::default()
        },
        Arc::new(rx),
    )?;
    Ok(Kms {
        resolver,
        credentials: tx,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_exchange_is_unsigned_and_asks_for_the_configured_duration() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let exchanger = sts(&moto, Duration::from_secs(1800))?;
    assert_eq!(exchanger.audience(), "sts.amazonaws.com");

    let before = SystemTime::now();
    let credentials = exchanger.exchange(&jwt()).await?;
    let after = SystemTime::now();
    assert!(!credentials.access_key_id.is_empty());
    assert!(!credentials.secret_access_key.is_empty() && !credentials.session_token.is_empty());
    let (duration, slack) = (Duration::from_secs(1800), Duration::from_secs(5));
    assert!(
        credentials.expiration >= before + duration - slack
            && credentials.expiration <= after + duration + slack,
        "expiration {:?} is not ~30 min away",
        credentials.expiration
    );

    let requests = moto.requests()?;
    let exchanges: Vec<_> = requests
        .iter()
        .filter(|r| r.operation == "AssumeRoleWithWebIdentity")
        .collect();
    assert_eq!(exchanges.len(), 1, "{requests:?}");
    let request = exchanges[0];
    assert!(!request.signed, "AssumeRoleWithWebIdentity goes unsigned");
    assert_eq!(request.param("RoleArn"), Some(ROLE_ARN));
    assert_eq!(
        request.param("RoleSessionName"),
        Some("example.org-ns-e2e-sa-api")
    );
    assert_eq!(request.param("DurationSeconds"), Some("1800"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_outage_is_transient_and_recovers_on_the_same_port() -> anyhow::Result<()> {
    let mut moto = Moto::start().await?;
    let exchanger = sts(&moto, Duration::from_secs(900))?;
    exchanger.exchange(&jwt()).await?;

    moto.stop()?;
    let err = exchanger.exchange(&jwt()).await.unwrap_err();
    assert_eq!(err.kind, ExchangeErrorKind::Transient, "{err}");
    assert_eq!(err.code, "DispatchFailure", "{err}");
    assert!(!err.to_string().contains(TOKEN_CANARY), "{err}");

    moto.start_again().await?;
    exchanger.exchange(&jwt()).await?;
    assert_eq!(moto.count("AssumeRoleWithWebIdentity")?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_decrypts_with_the_context_in_the_key_region() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let key = moto.create_key("us-east-1").await?;
    let key_eu = moto.create_key("eu-west-1").await?;
    let kms = kms(&moto, vec![account_prefix(&key)?, account_prefix(&key_eu)?]).await?;
    let ctx = context(&[("app", "payments"), ("env", "prod")]);

    // moto keeps keys per region: each resolves only if signed for the ARN's region.
    for (path, key_arn) in [("db/password", &key), ("eu/db/password", &key_eu)] {
        let ciphertext = moto
            .encrypt(key_arn, SECRET_CANARY.as_bytes(), &ctx)
            .await?;
        let sealed = envelope(path, key_arn, &ciphertext, &format_aad(&ctx))?;
        let resolved = kms.resolver.resolve(&sealed).await?;
        assert_eq!(resolved.plaintext.expose(), SECRET_CANARY.as_bytes());
        assert_eq!(&resolved.key_id, key_arn);
    }
    assert_eq!(kms.resolver.describe_key(&key_eu).await?, key_eu);
    assert_eq!(moto.count(DECRYPT)?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_signs_with_the_latest_exchanged_credentials() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let key = moto.create_key("us-east-1").await?;
    let kms = kms(&moto, vec![account_prefix(&key)?]).await?;
    let ctx = context(&[("app", "payments")]);
    let ciphertext = moto.encrypt(&key, SECRET_CANARY.as_bytes(), &ctx).await?;
    let sealed = envelope("db/password", &key, &ciphertext, &format_aad(&ctx))?;
    let last_signer = || -> anyhow::Result<Option<String>> {
        let last = moto
            .requests()?
            .into_iter()
            .rfind(|r| r.operation == DECRYPT);
        Ok(last.and_then(|r| r.access_key_id))
    };

    let issued = kms
        .credentials
        .borrow()
        .as_ref()
        .map(|c| c.access_key_id.clone());
    kms.resolver.resolve(&sealed).await?;
    assert_eq!(last_signer()?, issued);

    // New credentials apply to the very next call (no SDK credentials cache).
    let fresh = sts(&moto, Duration::from_secs(900))?
        .exchange(&jwt())
        .await?;
    let fresh_id = Some(fresh.access_key_id.clone());
    assert_ne!(fresh_id, issued);
    kms.credentials.send_replace(Some(fresh));
    kms.resolver.resolve(&sealed).await?;
    assert_eq!(last_signer()?, fresh_id);

    // No credentials: retryable, and nothing is sent.
    kms.credentials.send_replace(None);
    let before = moto.requests()?.len();
    let err = kms.resolver.resolve(&sealed).await.unwrap_err();
    assert!(
        matches!(&err, ResolveError::Unavailable(m) if m.contains("no valid AWS credentials yet")),
        "{err}"
    );
    assert_eq!(moto.requests()?.len(), before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_outage_is_unavailable() -> anyhow::Result<()> {
    let mut moto = Moto::start().await?;
    let key = moto.create_key("us-east-1").await?;
    let kms = kms(&moto, vec![account_prefix(&key)?]).await?;
    let ctx = context(&[("app", "payments")]);
    let ciphertext = moto.encrypt(&key, SECRET_CANARY.as_bytes(), &ctx).await?;
    let sealed = envelope("db/password", &key, &ciphertext, &format_aad(&ctx))?;
    kms.resolver.resolve(&sealed).await?;

    moto.stop()?;
    let err = kms.resolver.resolve(&sealed).await.unwrap_err();
    assert!(
        matches!(&err, ResolveError::Unavailable(m) if m.contains("db/password") && m.contains(&key)),
        "{err}"
    );
    assert!(err.is_retryable());
    let err = kms.resolver.describe_key(&key).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_refusals_and_upstream_errors() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let key = moto.create_key("us-east-1").await?;
    let other = moto.create_key("us-west-2").await?;
    let kms = kms(&moto, vec![format!("{}key/", account_prefix(&key)?)]).await?;
    let ctx = context(&[("app", "payments"), ("env", "prod")]);
    let ciphertext = moto.encrypt(&key, SECRET_CANARY.as_bytes(), &ctx).await?;

    // A context differing only in case does not decrypt, and says so without the value.
    let wrong = envelope("db/password", &key, &ciphertext, "app=payments,env=Prod")?;
    let err = kms.resolver.resolve(&wrong).await.unwrap_err();
    assert!(
        matches!(&err, ResolveError::Undecryptable(m)
            if m.contains("InvalidCiphertextException") && m.contains("[app, env]")),
        "{err}"
    );
    assert!(!err.to_string().contains(SECRET_CANARY));

    // Outside the allowlist, or not a full ARN: refused with no request at all.
    let other_ciphertext = moto.encrypt(&other, b"other", &ctx).await?;
    let before = moto.requests()?.len();
    let key_id = key.rsplit('/').next().expect("key id");
    for key_id in [other.as_str(), key_id] {
        let sealed = envelope("db/password", key_id, &other_ciphertext, &format_aad(&ctx))?;
        let err = kms.resolver.resolve(&sealed).await.unwrap_err();
        assert!(matches!(err, ResolveError::Refused(_)), "{key_id}: {err}");
    }
    let err = kms.resolver.describe_key(&other).await.unwrap_err();
    assert!(
        matches!(&err, ResolveError::Refused(m) if m.contains(&other)),
        "{err}"
    );
    assert_eq!(moto.requests()?.len(), before, "refusals made no request");

    // An allowlisted key that does not exist: a permanent upstream error.
    let missing = format!(
        "{}key/00000000-0000-0000-0000-000000000000",
        account_prefix(&key)?
    );
    let sealed = envelope("db/password", &missing, &ciphertext, &format_aad(&ctx))?;
    let err = kms.resolver.resolve(&sealed).await.unwrap_err();
    assert!(
        matches!(&err, ResolveError::Upstream(m) if m.contains("NotFoundException")),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_alias_envelopes_resolve_to_the_key_arn() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let key = moto.create_key("us-east-1").await?;
    let alias = moto.create_alias(&key, "steeple-e2e").await?;
    let kms = kms(&moto, vec![account_prefix(&key)?]).await?;
    let ctx = context(&[("app", "payments")]);
    let ciphertext = moto.encrypt(&alias, SECRET_CANARY.as_bytes(), &ctx).await?;
    let sealed = envelope("db/password", &alias, &ciphertext, &format_aad(&ctx))?;

    for _ in 0..2 {
        let resolved = kms.resolver.resolve(&sealed).await?;
        assert_eq!(resolved.plaintext.expose(), SECRET_CANARY.as_bytes());
        assert_eq!(
            resolved.key_id, key,
            "the key ARN KMS reported, not the alias"
        );
    }
    assert_eq!(moto.count(DECRYPT)?, 2);
    assert_eq!(moto.count(DESCRIBE_KEY)?, 1, "the alias mapping is cached");
    assert_eq!(kms.resolver.describe_key(&alias).await?, key);
    assert_eq!(moto.count(DESCRIBE_KEY)?, 2, "the probe always asks");

    // A ciphertext of another key under this alias's name: KMS refuses it.
    let other = moto.create_key("us-east-1").await?;
    let foreign = moto.encrypt(&other, b"other", &ctx).await?;
    let foreign = envelope("db/other", &alias, &foreign, &format_aad(&ctx))?;
    let err = kms.resolver.resolve(&foreign).await.unwrap_err();
    // moto answers AccessDeniedException where AWS says IncorrectKeyException.
    assert!(
        matches!(
            err,
            ResolveError::Upstream(_) | ResolveError::Undecryptable(_)
        ),
        "{err}"
    );

    // The alias moves to the other key: the cached mapping disagrees with the key KMS
    // reports, so it is looked up again and the envelope resolves.
    moto.kms_client("us-east-1")
        .update_alias()
        .alias_name("alias/steeple-e2e")
        .target_key_id(&other)
        .send()
        .await?;
    let resolved = kms.resolver.resolve(&foreign).await?;
    assert_eq!(
        (resolved.plaintext.expose(), resolved.key_id.as_str()),
        (&b"other"[..], other.as_str())
    );
    assert_eq!(moto.count(DESCRIBE_KEY)?, 3);
    // Envelopes sealed under the alias's previous key no longer decrypt through it.
    let err = kms.resolver.resolve(&sealed).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_key_layer_round_trips_through_seal_with_kms() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let key = moto.create_key("us-east-1").await?;
    let kms = kms(&moto, vec![account_prefix(&key)?]).await?;
    let options = SealOptions {
        endpoint: Some(moto.endpoint()),
        sdk_config: Some(moto.sdk_config("us-east-1")),
    };
    let ctx = context(&[("app", "payments"), ("env", "prod")]);

    let large: Vec<u8> = SECRET_CANARY.bytes().cycle().take(10 * 1024).collect();
    let row = seal_with_kms(&options, &key, "blobs/large", &ctx, &large).await?;
    assert!(row.data_key_ciphertext.is_some(), "10 KiB needs a data key");
    assert_eq!(
        (row.provider.as_str(), row.key_id.as_str()),
        ("kms_envelope", key.as_str())
    );
    assert_eq!(
        row.aad,
        "app=payments,env=prod,steeple_logical_path=blobs/large"
    );
    assert_eq!(moto.count("TrentService.GenerateDataKey")?, 1);
    let resolved = kms.resolver.resolve(&row.validate(64 * 1024)?).await?;
    assert_eq!(resolved.plaintext.expose(), large.as_slice());
    assert_eq!(resolved.key_id, key);

    // The payload is bound to its logical path: moved, it does not open.
    let moved = EnvelopeRow {
        logical_path: "blobs/other".into(),
        ..row
    };
    let err = kms
        .resolver
        .resolve(&moved.validate(64 * 1024)?)
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::Undecryptable(_)), "{err}");

    let small = seal_with_kms(
        &options,
        &key,
        "db/password",
        &ctx,
        SECRET_CANARY.as_bytes(),
    )
    .await?;
    assert!(
        small.data_key_ciphertext.is_none(),
        "small payloads use Encrypt"
    );
    assert_eq!(moto.count("TrentService.Encrypt")?, 1);
    let resolved = kms.resolver.resolve(&small.validate(64 * 1024)?).await?;
    assert_eq!(resolved.plaintext.expose(), SECRET_CANARY.as_bytes());
    Ok(())
}
