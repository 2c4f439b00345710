use std::time::{Duration, SystemTime};

use steeple_plugin_api::{Provider, SecretBytes};

use super::*;
use crate::config::Config;
use crate::store::{SecretStore, Source};
use crate::test_support::side_context;
use per_workload::publish_token;

fn vault_config(extra: &str) -> VaultConfig {
    let text = format!(
        "[vault]\nenabled = true\naddr = \"https://vault.example.org:8200\"\nrole = \"web\"\n{extra}"
    );
    Config::parse(&text, std::iter::empty())
        .expect("valid config")
        .vault
}

fn start_with(config: &VaultConfig) -> Result<Option<VaultRuntime>, VaultStartError> {
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let started = start(config, &side_context(&shutdown), &mut tasks);
    shutdown.cancel();
    started
}

fn token(value: &[u8], expires_in: Duration) -> VaultToken {
    let now = SystemTime::now();
    VaultToken {
        token: SecretBytes::copy_from(value),
        accessor: "acc".into(),
        lease: expires_in,
        renewable: true,
        issued_at: now,
        expires_at: now + expires_in,
        max_ttl_reached: false,
        namespace: None,
    }
}

#[tokio::test]
async fn disabled_starts_nothing() {
    let config = VaultConfig {
        enabled: false,
        ..vault_config("")
    };
    assert!(start_with(&config).unwrap().is_none());
}

#[tokio::test]
async fn an_address_without_a_host_is_named() {
    let config = VaultConfig {
        addr: "https://".into(),
        ..vault_config("")
    };
    let err = start_with(&config).unwrap_err().to_string();
    assert!(err.starts_with("vault.addr:"), "{err}");
}

#[tokio::test]
async fn an_unreadable_ca_file_is_named() {
    let err = start_with(&vault_config("ca_file = \"/nonexistent/vault-ca.pem\""))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("vault.ca_file:"), "{err}");
    assert!(err.contains("/nonexistent/vault-ca.pem"), "{err}");
}

#[tokio::test]
async fn enabled_serves_both_providers_and_starts_without_a_token() {
    let runtime = start_with(&vault_config("")).unwrap().expect("enabled");
    assert_eq!(runtime.kv.provider(), Provider::VaultDelegate);
    assert_eq!(runtime.transit.provider(), Provider::VaultTransit);
    assert!(runtime.tokens.borrow().is_none());
}

#[tokio::test]
async fn the_token_is_served_while_valid_and_removed_after() {
    let store = Arc::new(SecretStore::new());
    let (tx, rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(publish_token(
        "vault-token".into(),
        rx,
        store.clone(),
        shutdown.clone(),
    ));
    let mut snapshots = store.subscribe();
    let served = |snapshot: &crate::store::Snapshot| match snapshot.get("vault-token") {
        Some(entry) => match &entry.secret {
            Secret::Generic(bytes) => Some(bytes.expose().to_vec()),
            _ => None,
        },
        None => None,
    };
    tx.send_replace(Some(token(b"s.first", Duration::from_secs(60))));
    let snapshot = snapshots
        .wait_for(|s| served(s).is_some())
        .await
        .unwrap()
        .clone();
    assert_eq!(served(&snapshot).unwrap(), b"s.first");
    tx.send_replace(Some(token(b"s.second", Duration::from_secs(60))));
    snapshots
        .wait_for(|s| served(s).as_deref() == Some(&b"s.second"[..]))
        .await
        .unwrap();
    tx.send_replace(None);
    snapshots.wait_for(|s| served(s).is_none()).await.unwrap();
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn vault_tls_follows_the_named_bundle_only() {
    use crate::store::TrustBundle;
    use crate::test_support::TestCa;

    let store = Arc::new(SecretStore::new());
    let roots = LiveRoots::new("the SPIFFE bundle of example.org", Vec::new(), None);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(follow_bundle(
        "spiffe://example.org".into(),
        roots.clone(),
        store.subscribe(),
        shutdown.clone(),
    ));
    let bundle = |name: &str, roots_der: Vec<Vec<u8>>| {
        let bundle = TrustBundle {
            trust_domain: name.into(),
            roots_der,
        };
        vec![(
            format!("spiffe://{name}"),
            Secret::TrustBundle(bundle.into()),
        )]
    };
    // Another trust domain's bundle is not Vault's CA.
    store.sync_source(
        &Source::X509Identity,
        bundle("other.org", vec![TestCa::new("other.org").der]),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!roots.is_ready());
    // A malformed bundle is refused; the first good one is taken.
    store.sync_source(
        &Source::X509Identity,
        bundle("example.org", vec![b"junk".to_vec()]),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!roots.is_ready());
    store.sync_source(
        &Source::X509Identity,
        bundle("example.org", vec![TestCa::new("example.org").der]),
    );
    for _ in 0..100 {
        if roots.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(roots.is_ready());
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_bundle_ca_starts_without_system_roots() {
    let config = vault_config("ca_spiffe_bundle = \"example.org\"");
    assert_eq!(config.ca_spiffe_bundle.as_deref(), Some("example.org"));
    assert!(start_with(&config).unwrap().is_some());
}
