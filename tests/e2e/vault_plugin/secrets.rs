//! Reading secrets: KV v2 and v1, transit (rotation, derived keys, data keys),
//! namespaces, and TLS with the configured CA.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use steeple_e2e::openbao::{OpenBao, OpenBaoMode};
use steeple_plugin_api::{EncryptionContext, EnvelopeRow, ResolveError, SecretBytes};
use steeple_plugin_vault::{
    KvVersion, StaticToken, TRANSIT_DIRECT_MAX, TokenSource, VaultKvResolver, VaultTransitResolver,
    seal_with_transit,
};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_reads_follow_versions_pins_fields_and_policy() -> anyhow::Result<()> {
    capture_logs();
    let bao = OpenBao::start()?;
    let issuer = Arc::new(Issuer::new(bao.dir())?);
    configure_jwt(&bao, None, &issuer, "1h", "2h", READ_APP)?;
    let admin = bao.admin();
    admin.kv_put("secret", "app", &[("password", "canary-kv-v1")])?;
    admin.kv_put(
        "secret",
        "app",
        &[("password", "canary-kv-v2"), ("user", "web")],
    )?;
    admin.kv_put("secret", "denied", &[("password", "canary-kv-denied")])?;
    admin.write_json(
        "secret/data/json",
        &serde_json::json!({"data": {"obj": {"a": [1, 2]}}}),
    )?;
    admin.enable_kv("kv1", 1)?;
    admin.kv_put("kv1", "app", &[("password", "canary-kv1")])?;

    let vault = client(&bao, None)?;
    let mut keeper = Keeper::spawn(login(vault.clone(), None), issuer, false);
    let token = keeper.wait_token(Duration::from_secs(10), |_| true).await?;
    let kv = VaultKvResolver::new(
        vault.clone(),
        Arc::new(keeper.tokens.clone()),
        KvVersion::V2,
        allowlist()?,
    );

    let latest = resolve(&kv, &kv_row("db/password", "secret/app", "password")).await?;
    assert_eq!(latest.plaintext.expose(), b"canary-kv-v2");
    assert_eq!(latest.key_id, "vault-kv:secret/app");
    let mut pinned = kv_row("db/password", "app", "password");
    pinned.mount = Some("secret".into());
    pinned.version = Some(1);
    assert_eq!(
        resolve(&kv, &pinned).await?.plaintext.expose(),
        b"canary-kv-v1"
    );
    admin.kv_put("secret", "app", &[("password", "canary-kv-v3")])?;
    let updated = resolve(&kv, &kv_row("db/password", "secret/app", "password")).await?;
    assert_eq!(updated.plaintext.expose(), b"canary-kv-v3");
    let json = resolve(&kv, &kv_row("cfg", "secret/json", "obj")).await?;
    assert_eq!(json.plaintext.expose(), br#"{"a":[1,2]}"#);

    let missing = resolve(&kv, &kv_row("db/password", "secret/app", "passwd")).await;
    let Err(ResolveError::Undecryptable(message)) = missing else {
        panic!("missing field: {missing:?}")
    };
    assert!(
        message.contains("\"db/password\"") && message.contains("\"passwd\""),
        "{message}"
    );
    assert!(!message.contains("canary"), "{message}");
    let absent = resolve(&kv, &kv_row("x", "secret/nothing", "password")).await;
    assert_eq!(
        absent.unwrap_err(),
        ResolveError::Upstream("secret not found at secret/nothing".into())
    );
    for _ in 0..5 {
        let denied = resolve(&kv, &kv_row("x", "secret/denied", "password")).await;
        assert_eq!(
            denied.unwrap_err(),
            ResolveError::Upstream("permission denied on secret/denied".into())
        );
    }
    let malformed = resolve(&kv, &kv_row("bad/ref", "secret/app", ""))
        .await
        .unwrap_err();
    assert!(malformed.to_string().contains("\"bad/ref\""), "{malformed}");

    let kv1 = VaultKvResolver::new(
        vault,
        Arc::new(keeper.tokens.clone()),
        KvVersion::V1,
        allowlist()?,
    );
    assert_eq!(
        resolve(&kv1, &kv_row("legacy", "kv1/app", "password"))
            .await?
            .plaintext
            .expose(),
        b"canary-kv1"
    );
    let mut pinned_v1 = kv_row("legacy", "kv1/app", "password");
    pinned_v1.version = Some(1);
    assert!(matches!(
        resolve(&kv1, &pinned_v1).await,
        Err(ResolveError::Undecryptable(_))
    ));

    // 403s on a path are policy answers: no new login.
    assert_eq!(keeper.jwts.fetched.load(Ordering::SeqCst), 1);
    assert_eq!(
        keeper.tokens.borrow().as_ref().map(|t| t.accessor.clone()),
        Some(token.accessor)
    );
    keeper.shutdown.cancel();
    let canaries: [&[u8]; 5] = [
        b"canary-kv-v1",
        b"canary-kv-v2",
        b"canary-kv-v3",
        b"canary-kv1",
        b"canary-kv-denied",
    ];
    assert_not_logged(&canaries, &bao.logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_decrypts_across_rotation_with_context_and_data_keys() -> anyhow::Result<()> {
    capture_logs();
    let bao = OpenBao::start()?;
    let issuer = Arc::new(Issuer::new(bao.dir())?);
    configure_jwt(&bao, None, &issuer, "1h", "2h", READ_APP)?;
    let admin = bao.admin();
    admin.enable_transit("transit")?;
    admin.create_transit_key("transit", "app", false)?;
    admin.create_transit_key("transit", "tenant", true)?;
    admin.create_transit_key("transit", "other", false)?;

    // Sealing is an operator's job (root token); resolving uses the workload's login.
    let vault = client(&bao, None)?;
    let root = SecretBytes::copy_from(bao.root_token().as_bytes());
    let none = EncryptionContext::new();
    let seal = |key: &'static str,
                path: &'static str,
                context: EncryptionContext,
                plaintext: Vec<u8>| {
        let (vault, root) = (vault.clone(), root.clone());
        async move { seal_with_transit(&vault, &root, "transit", key, path, &context, &plaintext).await }
    };
    let v1 = seal(
        "app",
        "api/token",
        none.clone(),
        b"canary-transit-v1".to_vec(),
    )
    .await?;
    admin.rotate_transit_key("transit", "app")?;
    let v2 = seal(
        "app",
        "api/token",
        none.clone(),
        b"canary-transit-v2".to_vec(),
    )
    .await?;
    assert!(
        v1.ciphertext_ref.starts_with("vault:v1:") && v2.ciphertext_ref.starts_with("vault:v2:")
    );

    let mut keeper = Keeper::spawn(login(vault.clone(), None), issuer, false);
    keeper.wait_token(Duration::from_secs(10), |_| true).await?;
    let transit =
        VaultTransitResolver::new(vault.clone(), Arc::new(keeper.tokens.clone()), allowlist()?);
    for (row, expected) in [
        (&v1, &b"canary-transit-v1"[..]),
        (&v2, b"canary-transit-v2"),
    ] {
        let resolved = resolve(&transit, row).await?;
        assert_eq!(resolved.plaintext.expose(), expected);
        assert_eq!(resolved.key_id, "vault-transit:transit/app");
    }

    let context: EncryptionContext = [("tenant".to_owned(), "a".to_owned())].into();
    let derived = seal(
        "tenant",
        "tenant/a",
        context,
        b"canary-transit-derived".to_vec(),
    )
    .await?;
    assert_eq!(
        resolve(&transit, &derived).await?.plaintext.expose(),
        b"canary-transit-derived"
    );
    let mut other_context = derived.clone();
    other_context.aad = "tenant=b".into();
    assert!(matches!(
        resolve(&transit, &other_context).await,
        Err(ResolveError::Undecryptable(_))
    ));

    let big: Vec<u8> = (0..40 * 1024)
        .map(|i| b"canary-transit-big-"[i % 19])
        .collect();
    assert!(big.len() > TRANSIT_DIRECT_MAX);
    let sealed_big = seal("app", "blob/big", none.clone(), big.clone()).await?;
    assert!(
        sealed_big
            .data_key_ciphertext
            .as_deref()
            .is_some_and(|k| k.starts_with("vault:v2:"))
    );
    assert_eq!(
        resolve(&transit, &sealed_big).await?.plaintext.expose(),
        &big[..]
    );
    let mut moved = sealed_big.clone();
    moved.logical_path = "blob/other".into();
    assert!(matches!(
        resolve(&transit, &moved).await,
        Err(ResolveError::Undecryptable(_))
    ));

    let bad_prefix = EnvelopeRow {
        ciphertext_ref: b64(b"not transit"),
        ..v1.clone()
    };
    let err = resolve(&transit, &bad_prefix).await.unwrap_err();
    assert!(
        err.to_string().contains("\"api/token\"") && err.to_string().contains("vault:v<N>:"),
        "{err}"
    );
    let tampered = EnvelopeRow {
        ciphertext_ref: format!("vault:v1:{}", b64(&[7u8; 40])),
        ..v1.clone()
    };
    assert!(matches!(
        resolve(&transit, &tampered).await,
        Err(ResolveError::Undecryptable(_))
    ));
    let foreign = seal(
        "other",
        "api/token",
        none,
        b"canary-transit-denied".to_vec(),
    )
    .await?;
    let denied = resolve(&transit, &foreign).await.unwrap_err();
    assert_eq!(
        denied,
        ResolveError::Upstream("permission denied on transit key transit/other".into())
    );

    keeper.shutdown.cancel();
    let canaries: [&[u8]; 4] = [
        b"canary-transit-v1",
        b"canary-transit-v2",
        b"canary-transit-derived",
        b"canary-transit-big-",
    ];
    assert_not_logged(&canaries, &bao.logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_scope_login_and_reads() -> anyhow::Result<()> {
    capture_logs();
    let bao = OpenBao::start()?;
    let issuer = Arc::new(Issuer::new(bao.dir())?);
    bao.admin().create_namespace("ns1")?;
    let ns1 = bao.admin_in("ns1");
    ns1.enable_kv("secret", 2)?;
    ns1.kv_put("secret", "app", &[("password", "canary-ns1")])?;
    bao.admin()
        .kv_put("secret", "app", &[("password", "canary-root-ns")])?;
    configure_jwt(&bao, Some("ns1"), &issuer, "1h", "2h", READ_APP)?;

    // The client's default namespace is the root; the login and the envelope name ns1.
    let vault = client(&bao, None)?;
    let mut keeper = Keeper::spawn(login(vault.clone(), Some("ns1")), issuer, false);
    let token = keeper.wait_token(Duration::from_secs(10), |_| true).await?;
    assert_eq!(token.namespace.as_deref(), Some("ns1"));
    let kv = VaultKvResolver::new(
        vault,
        Arc::new(keeper.tokens.clone()),
        KvVersion::V2,
        allowlist()?,
    );
    let mut row = kv_row("ns/app", "secret/app", "password");
    row.namespace = Some("ns1".into());
    assert_eq!(resolve(&kv, &row).await?.plaintext.expose(), b"canary-ns1");
    let root_ns = resolve(&kv, &kv_row("ns/app", "secret/app", "password")).await;
    assert!(
        matches!(root_ns, Err(ResolveError::Upstream(_))),
        "{root_ns:?}"
    );
    // A namespace no [[vault.allow]] entry names is refused before any call.
    row.namespace = Some("nope".into());
    let unknown = resolve(&kv, &row).await.unwrap_err();
    assert!(matches!(unknown, ResolveError::Refused(_)), "{unknown}");

    keeper.shutdown.cancel();
    assert_not_logged(&[b"canary-ns1", b"canary-root-ns"], &bao.logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_configured_ca() -> anyhow::Result<()> {
    capture_logs();
    let bao = OpenBao::start_mode(OpenBaoMode::DevTls)?;
    bao.admin()
        .kv_put("secret", "app", &[("password", "canary-tls")])?;
    let root: Arc<dyn TokenSource> = Arc::new(StaticToken(SecretBytes::copy_from(
        bao.root_token().as_bytes(),
    )));
    let row = kv_row("tls/app", "secret/app", "password");

    let trusted = VaultKvResolver::new(
        client(&bao, None)?,
        root.clone(),
        KvVersion::V2,
        allowlist()?,
    );
    assert_eq!(
        resolve(&trusted, &row).await?.plaintext.expose(),
        b"canary-tls"
    );
    let untrusting = steeple_plugin_vault::VaultClientConfig {
        addr: bao.addr(),
        ..Default::default()
    }
    .build()?;
    let untrusting = VaultKvResolver::new(untrusting, root, KvVersion::V2, allowlist()?);
    let refused = resolve(&untrusting, &row).await;
    let Err(ResolveError::Unavailable(message)) = refused else {
        panic!("without the CA: {refused:?}")
    };
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert_not_logged(&[b"canary-tls"], &bao.logs());
    Ok(())
}

/// The adversarial review's rows (issue 12.1) against a real OpenBao whose token policy
/// grants `auth/token/lookup-self`, as the shipped one does: before the allowlist, a KV v1
/// row with mount `auth/token` and key `lookup-self` served Steeple's own token. Every one
/// is refused now, before any call, and the token shows up in no error and no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_rows_cannot_reach_the_token_or_unlisted_mounts() -> anyhow::Result<()> {
    capture_logs();
    let bao = OpenBao::start()?;
    let issuer = Arc::new(Issuer::new(bao.dir())?);
    configure_jwt(&bao, None, &issuer, "1h", "2h", READ_APP)?;
    bao.admin().create_namespace("ns1")?;
    bao.admin().enable_kv("kv1", 1)?;
    bao.admin().enable_kv("team-b", 2)?;
    bao.admin()
        .kv_put("team-b", "db", &[("password", "canary-team-b")])?;
    let vault = client(&bao, None)?;
    let mut keeper = Keeper::spawn(login(vault.clone(), None), issuer, false);
    let token = keeper.wait_token(Duration::from_secs(10), |_| true).await?;
    let tokens: Arc<dyn TokenSource> = Arc::new(keeper.tokens.clone());
    let kv1 = VaultKvResolver::new(vault.clone(), tokens.clone(), KvVersion::V1, allowlist()?);
    let kv2 = VaultKvResolver::new(vault.clone(), tokens.clone(), KvVersion::V2, allowlist()?);
    let transit = VaultTransitResolver::new(vault, tokens, allowlist()?);

    let row = |namespace: Option<&str>, mount: Option<&str>, key_id: &str| EnvelopeRow {
        namespace: namespace.map(str::to_owned),
        mount: mount.map(str::to_owned),
        ..kv_row("attack", key_id, "id")
    };
    let mut errors = Vec::new();
    for (resolver, row, expected) in [
        (
            &kv1,
            row(None, Some("auth/token"), "lookup-self"),
            "mount \"auth/token\" is refused",
        ),
        (
            &kv1,
            row(None, None, "auth/token/lookup-self"),
            "mount \"auth\" is refused",
        ),
        (
            &kv1,
            row(None, Some("sys"), "mounts"),
            "mount \"sys\" is refused",
        ),
        (
            &kv1,
            row(None, Some("identity"), "entity/id"),
            "mount \"identity\" is refused",
        ),
        (
            &kv1,
            row(None, Some("cubbyhole"), "x"),
            "mount \"cubbyhole\" is refused",
        ),
        (
            &kv2,
            row(None, Some("team-b"), "db"),
            "team-b/db is outside every",
        ),
        (
            &kv2,
            row(Some("ns1"), Some("kv1"), "app"),
            "namespace ns1: kv1/app is outside",
        ),
        (
            &kv1,
            row(None, Some("kv1/../auth/token"), "lookup-self"),
            "has an empty, . or .. segment",
        ),
        (
            &kv1,
            row(None, None, "kv1/../../auth/token/lookup-self"),
            "has an empty, . or .. segment",
        ),
    ] {
        let refused = resolve(resolver, &row).await;
        let Err(ResolveError::Refused(message)) = refused else {
            panic!("{row:?} was not refused: {refused:?}")
        };
        assert!(message.contains(expected), "{row:?}: {message}");
        errors.push(message);
    }
    let mut transit_row = kv_row("attack", "lookup-self", "id");
    transit_row.provider = "vault_transit".into();
    transit_row.field = None;
    transit_row.ciphertext_ref = "vault:v1:AAAA".into();
    transit_row.mount = Some("auth/token".into());
    let refused = resolve(&transit, &transit_row).await;
    let Err(ResolveError::Refused(message)) = refused else {
        panic!("transit at auth/token was not refused: {refused:?}")
    };
    assert!(
        message.contains("mount \"auth/token\" is refused"),
        "{message}"
    );
    errors.push(message);

    keeper.shutdown.cancel();
    let secret = token.token.expose();
    assert!(
        errors
            .iter()
            .all(|e| !e.as_bytes().windows(secret.len()).any(|w| w == secret)),
        "the token in an error"
    );
    assert_not_logged(&[secret, b"canary-team-b"], &bao.logs());
    Ok(())
}
