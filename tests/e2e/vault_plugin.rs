//! The Vault plugin against a real OpenBao 2.4: JWT logins that OpenBao really validates
//! (RS256, bound audience and subject), token renewal, max TTL and out-of-band revocation
//! handled by the keeper, KV v2 (versions, pins, updates) and v1 reads, transit decrypts
//! across key rotation, derived keys with context, the data-key layer, namespaces, TLS
//! with a configured CA, and an OpenBao outage and recovery. No secret reaches a log.

mod support;

mod secrets;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use steeple_e2e::openbao::{OpenBao, OpenBaoMode};
use steeple_plugin_api::{CredentialExchanger as _, ExchangeErrorKind, ResolveError};
use steeple_plugin_vault::{KvVersion, TokenSource, VaultKvResolver};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_login_is_validated_and_the_keeper_keeps_a_token() -> anyhow::Result<()> {
    capture_logs();
    let bao = OpenBao::start()?;
    let issuer = Arc::new(Issuer::new(bao.dir())?);
    configure_jwt(&bao, None, &issuer, "6s", "15s", READ_APP)?;
    let login = login(client(&bao, None)?, None);

    let jwt = issuer.svid(AUDIENCE, WEB, 300)?;
    let token = login.exchange(&jwt).await?;
    assert!(token.renewable && !token.accessor.is_empty());
    assert!(token.lease <= Duration::from_secs(6), "{token:?}");
    assert!(!format!("{token:?}").contains(std::str::from_utf8(token.token.expose())?));

    let refused = [
        (
            issuer.svid("other", WEB, 300)?,
            ExchangeErrorKind::Fatal,
            "audience",
        ),
        (
            issuer.svid(AUDIENCE, "spiffe://example.org/db", 300)?,
            ExchangeErrorKind::Fatal,
            "subject",
        ),
        (
            issuer.svid(AUDIENCE, WEB, -600)?,
            ExchangeErrorKind::TokenRejected,
            "expired",
        ),
    ];
    for (jwt, kind, needle) in refused {
        let e = login.exchange(&jwt).await.expect_err(needle);
        assert_eq!(e.kind, kind, "{e}");
        assert!(e.message.contains(needle), "{e}");
        assert!(!e.to_string().contains(std::str::from_utf8(jwt.expose())?));
    }

    // Renewal until the max TTL, then a new login; then an out-of-band revocation.
    let mut keeper = Keeper::spawn(login.clone(), issuer.clone(), true);
    let first = keeper.wait_token(Duration::from_secs(10), |_| true).await?;
    let renewed = keeper
        .wait_token(Duration::from_secs(10), |t| {
            t.accessor == first.accessor && t.expires_at > first.expires_at
        })
        .await?;
    assert_eq!(renewed.token, first.token);
    let second = keeper
        .wait_token(Duration::from_secs(20), |t| t.accessor != first.accessor)
        .await?;
    assert!(second.is_valid_at(SystemTime::now()));
    let logins = keeper.jwts.fetched.load(Ordering::SeqCst);
    assert_eq!(logins, 2, "one fresh JWT per login, none per renewal");

    bao.admin().revoke_accessor(&second.accessor)?;
    let third = keeper
        .wait_token(Duration::from_secs(15), |t| t.accessor != second.accessor)
        .await?;
    assert!(keeper.tokens.token().is_some());

    keeper.shutdown.cancel();
    keeper.task.await?;
    let lookup = bao
        .admin()
        .cli(&["token", "lookup", "-accessor", &third.accessor]);
    assert!(lookup.is_err(), "revoke on shutdown left the token alive");
    assert!(keeper.tokens.borrow().is_none());

    let logs = plugin_logs();
    assert!(
        logs.contains("reached its max TTL") && logs.contains("revoked or expired"),
        "{logs}"
    );
    let secrets = [
        first.token.expose(),
        second.token.expose(),
        third.token.expose(),
        jwt.expose(),
    ];
    assert_not_logged(&secrets, "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_outage_then_recovery() -> anyhow::Result<()> {
    capture_logs();
    let mut bao = OpenBao::start_mode(OpenBaoMode::Persistent)?;
    let issuer = Arc::new(Issuer::new(bao.dir())?);
    configure_jwt(&bao, None, &issuer, "5s", "1h", READ_APP)?;
    bao.admin()
        .kv_put("secret", "app", &[("password", "canary-outage")])?;
    let vault = client(&bao, None)?;
    let mut keeper = Keeper::spawn(login(vault.clone(), None), issuer, false);
    let before = keeper.wait_token(Duration::from_secs(10), |_| true).await?;
    let kv = VaultKvResolver::new(
        vault,
        Arc::new(keeper.tokens.clone()),
        KvVersion::V2,
        allowlist()?,
    );
    let row = kv_row("db/password", "secret/app", "password");
    assert_eq!(
        resolve(&kv, &row).await?.plaintext.expose(),
        b"canary-outage"
    );

    bao.stop()?;
    let down = resolve(&kv, &row).await.unwrap_err();
    assert!(down.is_retryable(), "{down}");
    // The keeper keeps the last token until it expires, never after.
    tokio::time::timeout(
        Duration::from_secs(10),
        keeper.tokens.wait_for(Option::is_none),
    )
    .await??;
    assert!(SystemTime::now() >= before.expires_at - Duration::from_millis(500));
    let no_token = resolve(&kv, &row).await.unwrap_err();
    assert!(
        matches!(&no_token, ResolveError::Unavailable(m) if m.contains("no valid Vault token")),
        "{no_token}"
    );

    bao.start_again()?;
    let after = keeper.wait_token(Duration::from_secs(40), |_| true).await?;
    assert_ne!(after.accessor, before.accessor);
    assert_eq!(
        resolve(&kv, &row).await?.plaintext.expose(),
        b"canary-outage"
    );
    let logs = plugin_logs();
    assert!(
        logs.contains("failed; retrying with backoff") && logs.contains("recovered"),
        "{logs}"
    );
    keeper.shutdown.cancel();
    assert_not_logged(
        &[
            b"canary-outage",
            after.token.expose(),
            before.token.expose(),
        ],
        &bao.logs(),
    );
    Ok(())
}
