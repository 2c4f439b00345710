use std::sync::Mutex;

use steeple_plugin_api::{BoxFuture, EncryptionContext, Resolved, SealedEnvelope};
use steeple_plugin_local::{LocalKey, LocalResolver};

use super::*;

const MASTER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn key() -> LocalKey {
    LocalKey::from_base64(MASTER, "test").unwrap()
}

fn sealed(path: &str, plaintext: &[u8]) -> EnvelopeRow {
    key()
        .seal(path, &EncryptionContext::new(), plaintext)
        .unwrap()
}

fn settings() -> RegistrySettings {
    RegistrySettings {
        refresh_interval: Duration::from_secs(3600),
        provider_refresh: HashMap::new(),
        max_ciphertext_bytes: 4096,
        aliases: [("aliased/path".to_owned(), "short".to_owned())].into(),
        reserved: crate::store::names::ClaimedNames {
            exact: vec!["default".into()],
            prefixes: vec!["spiffe://".into()],
        },
        require_path_binding: true,
        how_to_enable: |_| "enable it",
    }
}

fn sets(rows: Vec<EnvelopeRow>) -> RowSets {
    [("files".to_owned(), Arc::new(rows))].into()
}

fn served(store: &SecretStore, name: &str) -> Option<Vec<u8>> {
    match &store.snapshot().get(name)?.secret {
        Secret::Generic(bytes) => Some(bytes.expose().to_vec()),
        _ => None,
    }
}

/// A stand-in KMS whose next answer the test sets (unit tests need no peer).
#[derive(Debug)]
struct ScriptedResolver(Mutex<Result<&'static [u8], ResolveError>>);

impl EnvelopeResolver for ScriptedResolver {
    fn provider(&self) -> Provider {
        Provider::KmsEnvelope
    }
    fn resolve<'a>(
        &'a self,
        _: &'a SealedEnvelope,
    ) -> BoxFuture<'a, Result<Resolved, ResolveError>> {
        let answer = self.0.lock().unwrap().clone();
        Box::pin(async move {
            answer.map(|p| Resolved {
                plaintext: SecretBytes::copy_from(p),
                key_id: "arn".into(),
            })
        })
    }
}

fn kms_row(path: &str) -> EnvelopeRow {
    EnvelopeRow {
        logical_path: path.into(),
        provider: "kms_envelope".into(),
        key_id: "arn:aws:kms:us-east-1:1:key/k".into(),
        ciphertext_ref: "AQID".into(),
        aad: format!("steeple_logical_path={path}"),
        ..EnvelopeRow::default()
    }
}

#[tokio::test]
async fn resolves_into_the_store_by_path_or_alias_and_bad_rows_stay_out() {
    let store = Arc::new(SecretStore::new());
    let local: Arc<dyn EnvelopeResolver> = Arc::new(LocalResolver::new(key()));
    let mut registry = Registry::new(vec![local], settings(), store.clone());
    let mut broken = sealed("broken", b"x");
    broken.ciphertext_ref = "%%%".into();
    let mut unknown = sealed("unknown", b"x");
    unknown.provider = "rot13".into();
    registry.sync_rows(&sets(vec![
        sealed("db/password", b"canary-1"),
        sealed("aliased/path", b"canary-2"),
        broken,
        unknown,
        sealed("default", b"hijack"),
        kms_row("needs/kms"),
    ]));
    registry.resolve_due().await;
    registry.publish();

    assert_eq!(served(&store, "db/password").unwrap(), b"canary-1");
    assert_eq!(served(&store, "short").unwrap(), b"canary-2");
    assert!(served(&store, "aliased/path").is_none());
    assert_eq!(store.snapshot().len(), 2);
    assert!(
        matches!(registry.problem("broken"), Some(Problem::Invalid(p)) if p.contains("base64"))
    );
    assert!(
        matches!(registry.problem("unknown"), Some(Problem::Invalid(p)) if p.contains("rot13"))
    );
    assert!(
        matches!(registry.problem("default"), Some(Problem::Invalid(p)) if p.contains("reserved"))
    );
    assert_eq!(
        registry.problem("needs/kms"),
        Some(&Problem::ProviderOff(Provider::KmsEnvelope))
    );

    registry.sync_rows(&sets(vec![sealed("aliased/path", b"canary-2")]));
    registry.publish();
    assert_eq!(store.snapshot().len(), 1, "removed rows leave the store");
}

#[tokio::test]
async fn unavailable_keeps_the_last_good_value_and_refusal_removes_it() {
    let store = Arc::new(SecretStore::new());
    let kms = Arc::new(ScriptedResolver(Mutex::new(Ok(b"v1"))));
    let mut registry = Registry::new(vec![kms.clone()], settings(), store.clone());
    let due_now = |registry: &mut Registry| {
        for slot in registry.slots.values_mut() {
            slot.due = Some(Instant::now());
        }
    };
    registry.sync_rows(&sets(vec![kms_row("p")]));
    registry.resolve_due().await;
    registry.publish();
    assert_eq!(served(&store, "p").unwrap(), b"v1");

    *kms.0.lock().unwrap() = Err(ResolveError::Unavailable("KMS down".into()));
    due_now(&mut registry);
    registry.resolve_due().await;
    registry.publish();
    assert_eq!(served(&store, "p").unwrap(), b"v1", "last good wins");

    *kms.0.lock().unwrap() = Err(ResolveError::Undecryptable("context mismatch".into()));
    due_now(&mut registry);
    registry.resolve_due().await;
    registry.publish();
    assert!(served(&store, "p").is_none(), "fail closed");
}

#[tokio::test]
async fn a_changed_row_that_fails_does_not_keep_the_old_value() {
    let store = Arc::new(SecretStore::new());
    let kms = Arc::new(ScriptedResolver(Mutex::new(Ok(b"v1"))));
    let mut registry = Registry::new(vec![kms.clone()], settings(), store.clone());
    registry.sync_rows(&sets(vec![kms_row("p")]));
    registry.resolve_due().await;
    *kms.0.lock().unwrap() = Err(ResolveError::Unavailable("KMS down".into()));
    let mut changed = kms_row("p");
    changed.aad = "env=prod".into();
    registry.sync_rows(&sets(vec![changed]));
    registry.resolve_due().await;
    registry.publish();
    assert!(served(&store, "p").is_none());
}

#[tokio::test]
async fn a_provider_refresh_override_reschedules_only_that_provider() {
    let store = Arc::new(SecretStore::new());
    let kms = Arc::new(ScriptedResolver(Mutex::new(Ok(b"v1"))));
    let local: Arc<dyn EnvelopeResolver> = Arc::new(LocalResolver::new(key()));
    let settings = RegistrySettings {
        provider_refresh: [(Provider::KmsEnvelope, Duration::from_secs(5))].into(),
        ..settings()
    };
    assert_eq!(settings.refresh_for("kms_envelope"), Duration::from_secs(5));
    assert_eq!(settings.refresh_for("local"), Duration::from_secs(3600));
    assert_eq!(settings.refresh_for("rot13"), Duration::from_secs(3600));
    let mut registry = Registry::new(vec![kms, local], settings, store);
    registry.sync_rows(&sets(vec![kms_row("kms"), sealed("plain", b"x")]));
    let before = Instant::now();
    registry.resolve_due().await;
    let due = |path: &str| registry.slots[path].due.unwrap() - before;
    assert!(due("kms") <= Duration::from_secs(6), "{:?}", due("kms"));
    assert!(
        due("plain") >= Duration::from_secs(3599),
        "{:?}",
        due("plain")
    );
}

/// The control plane's `rows`, and the operator's file row for `app/db`.
fn plane_and_files(rows: Vec<EnvelopeRow>) -> RowSets {
    [
        (
            super::super::control_plane::SOURCE.to_owned(),
            Arc::new(rows),
        ),
        (
            super::super::file_source::SOURCE.to_owned(),
            Arc::new(vec![sealed("app/db", b"operator")]),
        ),
    ]
    .into()
}

#[tokio::test]
async fn the_operators_file_row_wins_over_a_control_plane_duplicate() {
    let store = Arc::new(SecretStore::new());
    let local: Arc<dyn EnvelopeResolver> = Arc::new(LocalResolver::new(key()));
    let mut registry = Registry::new(vec![local], settings(), store.clone());
    // "control-plane" sorts before "files": precedence, not names, decides.
    let sets = plane_and_files(vec![
        sealed("app/db", b"rolled-back"),
        sealed("cp/only", b"cp"),
    ]);
    registry.sync_rows(&sets);
    registry.resolve_due().await;
    registry.publish();
    assert_eq!(served(&store, "app/db").as_deref(), Some(&b"operator"[..]));
    assert_eq!(served(&store, "cp/only").as_deref(), Some(&b"cp"[..]));

    // A bad control-plane row under the same path does not withdraw the operator's.
    let mut bad = sealed("app/db", b"x");
    bad.ciphertext_ref = "not base64".into();
    registry.sync_rows(&plane_and_files(vec![bad]));
    registry.resolve_due().await;
    registry.publish();
    assert_eq!(served(&store, "app/db").as_deref(), Some(&b"operator"[..]));
}

#[tokio::test]
async fn no_row_takes_the_name_an_alias_maps_to() {
    let store = Arc::new(SecretStore::new());
    let local: Arc<dyn EnvelopeResolver> = Arc::new(LocalResolver::new(key()));
    let mut registry = Registry::new(vec![local], settings(), store.clone());
    registry.sync_rows(&sets(vec![
        sealed("aliased/path", b"the-aliased-value"),
        sealed("short", b"a-takeover"),
    ]));
    registry.resolve_due().await;
    registry.publish();
    assert_eq!(
        served(&store, "short").as_deref(),
        Some(&b"the-aliased-value"[..])
    );
    assert!(!registry.slots.contains_key("short"));
}

#[tokio::test]
async fn a_direct_row_copied_under_another_name_is_refused_before_the_provider() {
    let store = Arc::new(SecretStore::new());
    let kms = Arc::new(ScriptedResolver(Mutex::new(Ok(b"secret"))));
    let mut registry = Registry::new(vec![kms], settings(), store.clone());
    let mut copied = kms_row("app/db");
    copied.logical_path = "public/db".into();
    let mut unbound = kms_row("legacy/db");
    unbound.aad = String::new();
    registry.sync_rows(&sets(vec![kms_row("app/db"), copied, unbound.clone()]));
    registry.resolve_due().await;
    registry.publish();
    assert_eq!(served(&store, "app/db").as_deref(), Some(&b"secret"[..]));
    assert!(served(&store, "public/db").is_none());
    assert!(served(&store, "legacy/db").is_none());
    let Some(Problem::Invalid(why)) = registry.problem("public/db") else {
        panic!("{:?}", registry.problem("public/db"))
    };
    assert!(why.contains("sealed for logical path \"app/db\""), "{why}");

    // Migration: with the requirement off, an unbound row resolves; a copied one never.
    let settings = RegistrySettings {
        require_path_binding: false,
        ..settings()
    };
    let kms = Arc::new(ScriptedResolver(Mutex::new(Ok(b"legacy"))));
    let mut registry = Registry::new(vec![kms], settings, store.clone());
    let mut copied = kms_row("app/db");
    copied.logical_path = "public/db".into();
    registry.sync_rows(&sets(vec![unbound, copied]));
    registry.resolve_due().await;
    registry.publish();
    assert_eq!(served(&store, "legacy/db").as_deref(), Some(&b"legacy"[..]));
    assert!(served(&store, "public/db").is_none());
}

#[tokio::test]
async fn the_shared_registry_leaves_per_workload_rows_and_a_scoped_one_resolves_only_what_was_wanted()
 {
    let kms: Arc<dyn EnvelopeResolver> = Arc::new(ScriptedResolver(Mutex::new(Ok(b"from-kms"))));
    let local: Arc<dyn EnvelopeResolver> = Arc::new(LocalResolver::new(key()));
    let rows = sets(vec![
        kms_row("team/kms"),
        kms_row("team/other"),
        sealed("team/local", b"dev"),
    ]);

    let shared_store = Arc::new(SecretStore::new());
    let mut shared = Registry::new(vec![kms.clone(), local], settings(), shared_store.clone())
        .scoped(
            Scope::Shared {
                per_workload: vec![Provider::KmsEnvelope],
            },
            None,
        );
    shared.sync_rows(&rows);
    shared.resolve_due().await;
    shared.publish();
    assert!(
        served(&shared_store, "team/kms").is_none(),
        "never with the agent's role"
    );
    assert_eq!(served(&shared_store, "team/local").unwrap(), b"dev");
    assert!(
        shared.problem("team/kms").is_none(),
        "not an error: left to the workloads"
    );

    let own_store = Arc::new(SecretStore::new());
    let (wanted, names) = watch::channel(std::collections::BTreeSet::new());
    let (known_tx, known) = watch::channel(std::collections::BTreeSet::new());
    let scope = Scope::Wanted {
        names,
        identity: "spiffe://td/a".into(),
    };
    let mut own =
        Registry::new(vec![kms], settings(), own_store.clone()).scoped(scope, Some(known_tx));
    own.prime(&rows);
    assert!(known.borrow().contains("team/kms") && known.borrow().contains("team/other"));
    own.resolve_due().await;
    own.publish();
    assert!(
        own_store.snapshot().is_empty(),
        "nothing asked for, nothing resolved"
    );
    wanted.send_modify(|w| {
        w.insert("team/kms".into());
    });
    own.resolve_due().await;
    own.publish();
    assert_eq!(served(&own_store, "team/kms").unwrap(), b"from-kms");
    assert!(served(&own_store, "team/other").is_none(), "not asked for");
}
