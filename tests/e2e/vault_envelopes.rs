//! Vault envelopes end to end: a real SPIRE issues the JWT-SVID, a real OpenBao —
//! configured from `deploy/vault/` to trust SPIRE's keys — logs Steeple in, and `steeple
//! run` resolves `vault_delegate` (KV v2) and `vault_transit` envelopes into SDS generic
//! secrets that real Envoys inject upstream. Then Vault changes under it: a KV update, a
//! transit key rotation, a path the policy does not grant, an out-of-band revocation
//! (re-login within seconds, nothing withdrawn meanwhile), a restart; and a second Steeple
//! with the wrong audience is refused. Canaries never reach Steeple's logs.

pub(crate) mod support;

use std::time::{Duration, Instant};

use steeple_e2e::bootstrap::credential_injector;
use steeple_e2e::openbao::{OpenBao, OpenBaoMode};
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::steeple::write_rows;
use steeple_e2e::suite::{eventually_status, uid_selector};
use steeple_e2e::{Envoy, RecordingUpstream, Spire, SpireOptions, SteepleProcess, free_port};
use support::{
    ROLE, TRANSIT_KEY, WORKLOAD, eventually, injected, kv_row, last_accessor, refusal,
    seal_transit, served,
};

const KV_PATH: &str = "payments/db-password";
const KV_SECRET: &str = "payments-api/db";
const TRANSIT_PATH: &str = "payments/api-token";
const TRANSIT_V2_PATH: &str = "payments/api-token-v2";
const TRANSIT_V1_AGAIN: &str = "payments/api-token-v1-after-rotation";
const TOKEN_NAME: &str = "vault-token";
const CANARY_KV_1: &str = "canary-vault-kv-password-0001";
const CANARY_KV_2: &str = "canary-vault-kv-password-0002";
const CANARY_KV_3: &str = "canary-vault-kv-password-0003";
const CANARY_KV_4: &str = "canary-vault-kv-password-0004";
const CANARY_DENIED: &str = "canary-vault-kv-denied-0001";
/// A logical path whose KV secret lies outside what `deploy/vault/policy.hcl` grants.
const DENIED_PATH: &str = "denied/other-team";
const DENIED_SECRET: &str = "other-team/db";
const CANARY_TRANSIT_1: &str = "canary-vault-transit-token-0001";
const CANARY_TRANSIT_2: &str = "canary-vault-transit-token-0002";
/// `vault.kv_refresh_interval` (and `envelopes.refresh_interval`, for transit) here.
const KV_REFRESH: Duration = Duration::from_secs(2);
/// The role's token TTL, as shipped: its renewal (~40 min) never happens during the
/// suite, so a revocation can only be noticed by a read that Vault denies.
const TOKEN_TTL: &str = "1h";
/// How soon after an out-of-band revocation a new token must be served.
const RELOGIN_WITHIN: Duration = Duration::from_secs(10);
/// Bounds every wait that involves a renewal, a login or the registry's backoff.
const RECOVERY: Duration = Duration::from_secs(45);

/// One world for the whole suite (SPIRE, a persistent OpenBao, Steeple, two Envoys), so
/// the phases share their slow start-ups; each phase asserts what it is about.
struct World {
    bao: OpenBao,
    spire: Spire,
    steeple: SteepleProcess,
    rows_file: std::path::PathBuf,
    rows: Vec<serde_json::Value>,
    /// A v1 transit row for [`TRANSIT_V1_AGAIN`], sealed before the rotation and served
    /// only after it.
    v1_held_back: serde_json::Value,
    kv_envoy: (Envoy, u16, RecordingUpstream),
    transit_envoy: (Envoy, u16, RecordingUpstream),
    dir: tempfile::TempDir,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_envelopes_reach_envoy_and_follow_vault() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut world = tokio::time::timeout(Duration::from_secs(120), start_world()).await??;
    happy_path(&world).await?;
    malformed_references(&world).await?;
    kv_update(&world).await?;
    transit_rotation(&mut world).await?;
    refused_login(&world).await?;
    policy_denial(&mut world).await?;
    revoked_token(&world).await?;
    vault_restart(&mut world).await?;

    let logs = world.steeple.logs();
    let mut secrets: Vec<Vec<u8>> = [
        CANARY_KV_1,
        CANARY_KV_2,
        CANARY_KV_3,
        CANARY_KV_4,
        CANARY_DENIED,
        CANARY_TRANSIT_1,
        CANARY_TRANSIT_2,
    ]
    .iter()
    .map(|c| c.as_bytes().to_vec())
    .collect();
    secrets.extend(served(&world.steeple, TOKEN_NAME).await);
    assert_not_in_logs(&secrets, &logs)?;
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "suite took {:?}",
        started.elapsed()
    );
    drop(world.kv_envoy);
    drop(world.transit_envoy);
    drop(world.steeple);
    drop(world.spire);
    drop(world.bao);
    drop(world.dir);
    Ok(())
}

async fn start_world() -> anyhow::Result<World> {
    let bao = OpenBao::start_mode(OpenBaoMode::Persistent)?;
    let spire = Spire::start(SpireOptions::default())?;
    spire.create_entry(WORKLOAD, &uid_selector(), None)?;
    support::configure(&bao.admin(), support::spire_jwt_keys(&spire)?, TOKEN_TTL)?;
    bao.admin().kv_put(
        "secret",
        KV_SECRET,
        &[("password", CANARY_KV_1), ("user", "payments")],
    )?;

    let dir = tempfile::Builder::new()
        .prefix("steeple-vault-")
        .tempdir_in("/tmp")?;
    let envelopes = dir.path().join("envelopes");
    std::fs::create_dir_all(&envelopes)?;
    let rows_file = envelopes.join("rows.json");
    let mut rows = vec![
        kv_row(KV_PATH, &format!("secret/{KV_SECRET}"), Some("password")),
        seal_transit(&bao, TRANSIT_PATH, CANARY_TRANSIT_1)?,
    ];
    let v1_held_back = seal_transit(&bao, TRANSIT_V1_AGAIN, CANARY_TRANSIT_1)?;
    rows.extend(malformed_rows(&rows[1]).into_iter().map(|(row, _)| row));
    write_rows(&rows_file, &rows)?;

    let config = format!(
        "[envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
         refresh_interval = \"{}s\"\n\
         [vault]\nenabled = true\naddr = \"{}\"\nrole = \"{ROLE}\"\naudience = \"vault\"\n\
         kv_refresh_interval = \"{}s\"\ntoken_resource_name = \"{TOKEN_NAME}\"\n\
         [[vault.allow]]\nmount = \"secret\"\npaths = [\"payments-api\", \"other-team\"]\n\
         [[vault.allow]]\nmount = \"transit\"\npaths = [\"{TRANSIT_KEY}\"]\n",
        envelopes.display(),
        KV_REFRESH.as_secs(),
        bao.addr(),
        KV_REFRESH.as_secs()
    );
    let steeple = SteepleProcess::run(&dir.path().join("steeple"), spire.agent_socket(), &config)?;
    let kv_envoy = injector(&steeple, dir.path(), KV_PATH).await?;
    let transit_envoy = injector(&steeple, dir.path(), TRANSIT_PATH).await?;
    Ok(World {
        bao,
        spire,
        steeple,
        rows_file,
        rows,
        v1_held_back,
        kv_envoy,
        transit_envoy,
        dir,
    })
}

/// An Envoy injecting generic secret `name` into requests to a recording upstream.
async fn injector(
    steeple: &SteepleProcess,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<(Envoy, u16, RecordingUpstream)> {
    let upstream = RecordingUpstream::start().await?;
    let port = free_port()?;
    let bootstrap = credential_injector(
        free_port()?,
        port,
        upstream.port(),
        steeple.sds_socket(),
        name,
    );
    let envoy = Envoy::start(&bootstrap, dir)?;
    Ok((envoy, port, upstream))
}

/// References that must each be refused, naming their logical path, with the reason.
fn malformed_rows(transit: &serde_json::Value) -> Vec<(serde_json::Value, &'static str)> {
    let mut bad_prefix = transit.clone();
    bad_prefix["logical_path"] = "bad/transit-prefix".into();
    bad_prefix["ciphertext_ref"] = "vault1:AAAA".into();
    vec![
        (
            kv_row("bad/empty-path", "", Some("password")),
            "key_id is empty",
        ),
        (
            kv_row("bad/mount-only", "secret", Some("password")),
            "names no secret",
        ),
        (
            kv_row("bad/no-field", &format!("secret/{KV_SECRET}"), None),
            "field is empty",
        ),
        (
            kv_row(
                "bad/missing-field",
                &format!("secret/{KV_SECRET}"),
                Some("nope"),
            ),
            "field \"nope\" not found",
        ),
        (bad_prefix, "does not start with vault:v<N>:"),
        // The attacks of the adversarial review (issue 12.1): Steeple's own token through
        // auth/token/lookup-self, another team's mount and namespace, a path out of /v1/.
        (
            vault_row("attack/own-token", None, Some("auth/token"), "lookup-self"),
            "mount \"auth/token\" is refused",
        ),
        (
            vault_row(
                "attack/own-token-by-key",
                None,
                None,
                "auth/token/lookup-self",
            ),
            "mount \"auth\" is refused",
        ),
        (
            vault_row("attack/cubbyhole", None, None, "cubbyhole/x"),
            "mount \"cubbyhole\" is refused",
        ),
        (
            vault_row("attack/other-mount", None, Some("team-b-secret"), "db"),
            "team-b-secret/db is outside every [[vault.allow]] entry",
        ),
        (
            vault_row(
                "attack/other-namespace",
                Some("team-b"),
                None,
                &format!("secret/{KV_SECRET}"),
            ),
            "namespace team-b: secret/payments-api/db is outside every [[vault.allow]] entry",
        ),
        (
            vault_row(
                "attack/dot-dot-mount",
                None,
                Some("secret/../../sys"),
                "raw",
            ),
            "the Vault mount \"secret/../../sys\" has an empty, . or .. segment",
        ),
        (
            vault_row(
                "attack/dot-dot-path",
                None,
                None,
                "secret/payments-api/../../sys/raw",
            ),
            "has an empty, . or .. segment",
        ),
    ]
}

/// A `vault_delegate` row serving field `id` of `key_id`, with a namespace and mount.
fn vault_row(
    path: &str,
    namespace: Option<&str>,
    mount: Option<&str>,
    key_id: &str,
) -> serde_json::Value {
    let mut row = kv_row(path, key_id, Some("id"));
    if let Some(namespace) = namespace {
        row["namespace"] = namespace.into();
    }
    if let Some(mount) = mount {
        row["mount"] = mount.into();
    }
    row
}

/// Both providers' values reach Envoy over SDS, and the token is served as asked.
async fn happy_path(world: &World) -> anyhow::Result<()> {
    let (_, kv_port, kv_upstream) = &world.kv_envoy;
    let (_, transit_port, transit_upstream) = &world.transit_envoy;
    injected(*kv_port, kv_upstream, CANARY_KV_1, RECOVERY).await?;
    injected(*transit_port, transit_upstream, CANARY_TRANSIT_1, RECOVERY).await?;
    let token = served(&world.steeple, TOKEN_NAME).await;
    assert!(
        token.is_some_and(|t| !t.is_empty()),
        "the Vault token is served"
    );
    let logs = world.steeple.logs();
    assert!(logs.contains("logged in to vault"), "{}", tail(&logs));
    Ok(())
}

/// Each malformed reference is refused by logical path; the good ones still serve. A
/// refusal that needs Vault's answer (a missing field) may come a retry after the good
/// rows were served (its first try can meet no token yet), so each is awaited.
async fn malformed_references(world: &World) -> anyhow::Result<()> {
    for (row, reason) in malformed_rows(&world.rows[1]) {
        let path = row["logical_path"].as_str().unwrap_or_default();
        let line = steeple_e2e::wait_for(
            &format!("a refusal logged for {path}"),
            Duration::from_secs(30),
            || async {
                let logs = world.steeple.logs();
                refusal(&logs, path).ok_or_else(|| anyhow::anyhow!("not yet:\n{}", tail(&logs)))
            },
        )
        .await?;
        assert!(
            line.contains(reason),
            "{path}: expected {reason:?} in {line}"
        );
    }
    Ok(())
}

/// A KV update reaches Envoy within the refresh interval (plus Envoy's own latency).
async fn kv_update(world: &World) -> anyhow::Result<()> {
    world.bao.admin().kv_put(
        "secret",
        KV_SECRET,
        &[("password", CANARY_KV_2), ("user", "payments")],
    )?;
    let updated = Instant::now();
    let (_, port, upstream) = &world.kv_envoy;
    injected(*port, upstream, CANARY_KV_2, KV_REFRESH * 5).await?;
    assert!(
        updated.elapsed() < KV_REFRESH * 5,
        "{:?}",
        updated.elapsed()
    );
    Ok(())
}

/// After rotation, a v1 ciphertext still resolves (one sealed before, for a path served
/// only now) and a new v2 ciphertext resolves too.
async fn transit_rotation(world: &mut World) -> anyhow::Result<()> {
    world
        .bao
        .admin()
        .rotate_transit_key("transit", support::TRANSIT_KEY)?;
    let v2 = seal_transit(&world.bao, TRANSIT_V2_PATH, CANARY_TRANSIT_2)?;
    let v1_again = world.v1_held_back.clone();
    assert!(
        v1_again["ciphertext_ref"]
            .as_str()
            .is_some_and(|c| c.starts_with("vault:v1:"))
    );
    assert!(
        v2["ciphertext_ref"]
            .as_str()
            .is_some_and(|c| c.starts_with("vault:v2:"))
    );
    world.rows.extend([v2, v1_again]);
    write_rows(&world.rows_file, &world.rows)?;
    let secrets = sds_client::wait_for(
        world.steeple.sds_socket(),
        &[TRANSIT_V2_PATH, TRANSIT_V1_AGAIN],
        RECOVERY,
    )
    .await?;
    let values: Vec<Vec<u8>> = secrets
        .iter()
        .filter_map(sds_client::secret_bytes)
        .collect();
    assert!(values.contains(&CANARY_TRANSIT_2.as_bytes().to_vec()));
    assert!(values.contains(&CANARY_TRANSIT_1.as_bytes().to_vec()));
    Ok(())
}

/// A Steeple asking for the wrong audience is refused by Vault: one clear ERROR event,
/// and it keeps serving its SVID.
async fn refused_login(world: &World) -> anyhow::Result<()> {
    let config = format!(
        "[vault]\nenabled = true\naddr = \"{}\"\nrole = \"{ROLE}\"\naudience = \"not-vault\"\n",
        world.bao.addr()
    );
    let wrong = SteepleProcess::run(
        &world.dir.path().join("steeple-wrong-audience"),
        world.spire.agent_socket(),
        &config,
    )?;
    eventually(
        "the refused login reported",
        Duration::from_secs(30),
        || async { Ok(wrong.logs().contains("vault refused the login")) },
    )
    .await?;
    let logs = wrong.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("vault refused the login"))
        .unwrap_or_default();
    assert!(
        line.contains("ERROR") && line.contains("audience"),
        "{line}"
    );
    let svid =
        sds_client::wait_for(wrong.sds_socket(), &["default"], Duration::from_secs(30)).await?;
    assert_eq!(svid.len(), 1, "the SVID is still served");
    assert!(served(&wrong, TOKEN_NAME).await.is_none());
    Ok(())
}

/// A path the policy does not grant: Vault answers 403 with a valid token, so the
/// envelope is withdrawn with an ERROR naming its logical path and the Vault path — and
/// the token is not replaced (one `lookup-self`, no login).
async fn policy_denial(world: &mut World) -> anyhow::Result<()> {
    world
        .bao
        .admin()
        .kv_put("secret", DENIED_SECRET, &[("password", CANARY_DENIED)])?;
    let token = served(&world.steeple, TOKEN_NAME).await;
    let logins = login_count(&world.steeple.logs());
    world.rows.push(kv_row(
        DENIED_PATH,
        &format!("secret/{DENIED_SECRET}"),
        Some("password"),
    ));
    write_rows(&world.rows_file, &world.rows)?;
    eventually("the denied path refused", RECOVERY, || async {
        Ok(refusal(&world.steeple.logs(), DENIED_PATH).is_some())
    })
    .await?;
    let logs = world.steeple.logs();
    let line = refusal(&logs, DENIED_PATH).unwrap_or_default();
    assert!(
        line.contains("ERROR")
            && line.contains(&format!("permission denied on secret/{DENIED_SECRET}")),
        "{line}"
    );
    // Its retries (every refresh) check the token again, and it stays valid.
    tokio::time::sleep(KV_REFRESH * 2).await;
    assert!(served(&world.steeple, DENIED_PATH).await.is_none());
    assert_eq!(served(&world.steeple, TOKEN_NAME).await, token);
    assert_eq!(login_count(&world.steeple.logs()), logins, "no new login");
    assert_eq!(
        served(&world.steeple, KV_PATH).await.as_deref(),
        Some(CANARY_KV_2.as_bytes())
    );
    Ok(())
}

/// A token revoked out of band is noticed by the first read Vault denies: the keeper
/// checks it, logs in again within seconds, and meanwhile the KV and transit values stay
/// served — not one poll misses them. A KV update afterwards reaches Envoy.
async fn revoked_token(world: &World) -> anyhow::Result<()> {
    let before = served(&world.steeple, TOKEN_NAME).await.unwrap_or_default();
    let accessor = last_accessor(&world.steeple.logs())
        .ok_or_else(|| anyhow::anyhow!("no login with an accessor logged"))?;
    world.bao.admin().revoke_accessor(&accessor)?;
    let revoked = Instant::now();
    let mut polls = 0;
    loop {
        polls += 1;
        let kv = served(&world.steeple, KV_PATH).await;
        let transit = served(&world.steeple, TRANSIT_PATH).await;
        let elapsed = revoked.elapsed();
        assert_eq!(
            kv.as_deref(),
            Some(CANARY_KV_2.as_bytes()),
            "KV value missed {elapsed:?} after the revocation (poll {polls})"
        );
        assert_eq!(
            transit.as_deref(),
            Some(CANARY_TRANSIT_1.as_bytes()),
            "transit value missed {elapsed:?} after the revocation (poll {polls})"
        );
        let token = served(&world.steeple, TOKEN_NAME).await;
        if token.is_some_and(|t| t != before && !t.is_empty()) {
            break;
        }
        anyhow::ensure!(
            elapsed < RELOGIN_WITHIN,
            "no new token within {RELOGIN_WITHIN:?} of the revocation:\n{}",
            tail(&world.steeple.logs())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let relogin = revoked.elapsed();
    let logs = world.steeple.logs();
    assert!(
        logs.contains("no longer accepts the token (revoked or expired); logging in again"),
        "{}",
        tail(&logs)
    );
    // Until every envelope has read with the new token, values must stay served too.
    let settle = Instant::now() + KV_REFRESH * 2;
    while Instant::now() < settle {
        assert_eq!(
            served(&world.steeple, KV_PATH).await.as_deref(),
            Some(CANARY_KV_2.as_bytes()),
            "KV value missed after the new login"
        );
        assert_eq!(
            served(&world.steeple, TRANSIT_PATH).await.as_deref(),
            Some(CANARY_TRANSIT_1.as_bytes()),
            "transit value missed after the new login"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("revoked token replaced after {relogin:?} ({polls} polls, no miss)");

    world.bao.admin().kv_put(
        "secret",
        KV_SECRET,
        &[("password", CANARY_KV_4), ("user", "payments")],
    )?;
    let (_, port, upstream) = &world.kv_envoy;
    injected(*port, upstream, CANARY_KV_4, KV_REFRESH * 5).await
}

/// While OpenBao is down the last good values keep being served; after it comes back
/// (same storage, unsealed) a new KV value reaches Envoy.
async fn vault_restart(world: &mut World) -> anyhow::Result<()> {
    world.bao.stop()?;
    tokio::time::sleep(KV_REFRESH * 3).await;
    assert_eq!(
        served(&world.steeple, KV_PATH).await.as_deref(),
        Some(CANARY_KV_4.as_bytes())
    );
    assert_eq!(
        served(&world.steeple, TRANSIT_PATH).await.as_deref(),
        Some(CANARY_TRANSIT_1.as_bytes())
    );
    let (_, port, upstream) = &world.kv_envoy;
    eventually_status(*port, 200).await?;
    assert_eq!(
        upstream.last_header("authorization"),
        Some(format!("Bearer {CANARY_KV_4}"))
    );
    let logs = world.steeple.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains(&format!("logical_path={KV_PATH} "))
                && l.contains("serving_last_good=true")),
        "{}",
        tail(&logs)
    );

    world.bao.start_again()?;
    world.bao.admin().kv_put(
        "secret",
        KV_SECRET,
        &[("password", CANARY_KV_3), ("user", "payments")],
    )?;
    injected(*port, upstream, CANARY_KV_3, RECOVERY).await
}

/// How many logins Steeple has logged.
fn login_count(logs: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains("logged in to vault"))
        .count()
}

fn tail(logs: &str) -> String {
    steeple_e2e::process::tail(logs, 40)
}
