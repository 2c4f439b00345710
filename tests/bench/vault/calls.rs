//! Part 2: Vault calls per hour versus the number of consumers. The release `steeple dev`
//! logs in to an audited OpenBao with JWT-SVIDs from its own dev Workload API (OpenBao's
//! JWT auth trusts the dev JWT key, read from the `jwt-bundle:` SDS resource), and serves
//! one `vault_delegate` and one `vault_transit` row, re-read every 5 s, with a 30 s token.
//! For each N, N `StreamSecrets` consumers (100 per connection, Envoy node, ACKing) follow
//! both logical paths for one window; the audit log counts Vault requests by endpoint.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use steeple_e2e::SteepleProcess;
use steeple_e2e::process::tail;
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_plugin_api::{EncryptionContext, SecretBytes};
use steeple_plugin_vault::{VaultClientConfig, seal_with_transit};
use tempfile::TempDir;

use crate::args::Args;
use crate::audited::{AuditCounts, AuditedOpenBao};
use crate::consumers::Consumers;
use crate::jwk;

/// The `vault_delegate` row's logical path.
pub const KV_PATH: &str = "bench/db-password";
/// The `vault_transit` row's logical path.
pub const TRANSIT_PATH: &str = "bench/api-token";
/// `vault.kv_refresh_interval` and `envelopes.refresh_interval`.
pub const REFRESH: Duration = Duration::from_secs(5);
/// The JWT role's `token_ttl` (renewed at 62–72 % of it).
pub const TOKEN_TTL: Duration = Duration::from_secs(30);
const TRUST_DOMAIN: &str = "bench.test";
const WORKLOAD: &str = "spiffe://bench.test/bench";
const ROLE: &str = "bench";
const POLICY: &str = r#"
path "secret/data/bench/*" { capabilities = ["read"] }
path "transit/decrypt/bench" { capabilities = ["update"] }
"#;
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Vault requests during one window.
#[derive(Debug)]
pub struct CallsRound {
    /// Consumer streams open during the window.
    pub consumers: usize,
    /// The window's length.
    pub window: Duration,
    /// Requests by endpoint.
    pub counts: AuditCounts,
    /// SDS responses per consumer in the window.
    pub pushes_per_consumer: f64,
}

impl CallsRound {
    /// `calls` in the window, scaled to one hour.
    pub fn per_hour(&self, calls: usize) -> f64 {
        calls as f64 * 3600.0 / self.window.as_secs_f64()
    }
}

/// Part 2's results.
#[derive(Debug)]
pub struct CallsResults {
    /// Each consumer count, in order.
    pub rounds: Vec<CallsRound>,
    /// `/proc/loadavg` before and after.
    pub load: (String, String),
    /// No canary or token in Steeple's or OpenBao's logs.
    pub logs_clean: bool,
}

/// Runs part 2.
pub async fn run(args: &Args) -> anyhow::Result<CallsResults> {
    let load_before = crate::loadavg();
    let bao = AuditedOpenBao::start().await?;
    let world = Agent::start(&bao).await?;
    let mut rounds = Vec::new();
    for &n in &args.consumers {
        let round = measure(&bao, &world.steeple, n, args.window).await?;
        let c = round.counts;
        eprintln!(
            "bench: calls N={n}: login {} renew {} lookup {} kv {} decrypt {} other {} in {:?}",
            c.login, c.renew, c.lookup, c.kv, c.decrypt, c.other, round.window
        );
        rounds.push(round);
    }
    // Steeple's log only: OpenBao's audit log also holds the bench's own admin writes.
    let logs_clean = assert_not_in_logs(&world.secrets, &world.steeple.logs()).is_ok();
    if assert_not_in_logs(&world.secrets, &bao.logs()).is_err() {
        eprintln!("bench: note: a canary appears in OpenBao's log or audit log");
    }
    Ok(CallsResults {
        rounds,
        load: (load_before, crate::loadavg()),
        logs_clean,
    })
}

/// `steeple dev` serving the two rows, logged in to Vault.
struct Agent {
    // Declared first: the agent stops (and revokes its token) before its directory goes.
    steeple: SteepleProcess,
    _dir: TempDir,
    secrets: Vec<Vec<u8>>,
}

impl Agent {
    async fn start(bao: &AuditedOpenBao) -> anyhow::Result<Self> {
        let (kv_value, transit_value) = (crate::canary(64), crate::canary(64));
        configure(bao, &kv_value).await?;
        let dir = tempfile::Builder::new()
            .prefix("steeple-bench-vault-")
            .tempdir_in("/tmp")?;
        let envelopes = dir.path().join("envelopes");
        std::fs::create_dir_all(&envelopes)?;
        let rows = [
            serde_json::json!({
                "logical_path": KV_PATH, "provider": "vault_delegate",
                "key_id": "secret/bench/db", "field": "password",
            }),
            seal(bao, &transit_value).await?,
        ];
        std::fs::write(envelopes.join("rows.json"), serde_json::to_vec(&rows)?)?;
        let steeple =
            SteepleProcess::dev_with(&dir.path().join("steeple"), &config(bao, &envelopes), &[])?;
        trust_dev_jwt_key(bao, steeple.sds_socket()).await?;
        let served = sds_client::wait_for(
            steeple.sds_socket(),
            &[KV_PATH, TRANSIT_PATH],
            READY_TIMEOUT,
        )
        .await
        .with_context(|| format!("steeple logs (tail):\n{}", tail(&steeple.logs(), 20)))?;
        for (path, value) in [(KV_PATH, &kv_value), (TRANSIT_PATH, &transit_value)] {
            anyhow::ensure!(
                served
                    .iter()
                    .any(|s| s.name == path && sds_client::secret_bytes(s).as_ref() == Some(value)),
                "{path} is not served with its plaintext"
            );
        }
        let secrets = vec![
            kv_value,
            transit_value,
            bao.root_token().as_bytes().to_vec(),
        ];
        Ok(Self {
            steeple,
            _dir: dir,
            secrets,
        })
    }
}

/// Transit key, KV secret, policy, and JWT auth trusting a throwaway key for now (the
/// agent's first logins fail with a signature error, which it retries within seconds).
async fn configure(bao: &AuditedOpenBao, kv_value: &[u8]) -> anyhow::Result<()> {
    use serde_json::json;
    bao.admin("POST", "sys/mounts/transit", json!({ "type": "transit" }))
        .await?;
    bao.admin("POST", "transit/keys/bench", json!({})).await?;
    let password = String::from_utf8(kv_value.to_vec())?;
    bao.admin(
        "POST",
        "secret/data/bench/db",
        json!({ "data": { "password": password } }),
    )
    .await?;
    bao.admin("PUT", "sys/policies/acl/bench", json!({ "policy": POLICY }))
        .await?;
    bao.admin("POST", "sys/auth/jwt", json!({ "type": "jwt" }))
        .await?;
    let pems = vec![jwk::throwaway_pem()?];
    bao.admin(
        "POST",
        "auth/jwt/config",
        json!({ "jwt_validation_pubkeys": pems }),
    )
    .await?;
    let role = json!({
        "role_type": "jwt", "user_claim": "sub", "bound_subject": WORKLOAD,
        "bound_audiences": ["vault"], "token_policies": [ROLE], "token_type": "service",
        "token_ttl": format!("{}s", TOKEN_TTL.as_secs()), "token_max_ttl": "24h",
    });
    bao.admin("POST", &format!("auth/jwt/role/{ROLE}"), role)
        .await?;
    Ok(())
}

/// Reads the dev JWT key from the agent's SDS and makes JWT auth trust it.
async fn trust_dev_jwt_key(bao: &AuditedOpenBao, socket: &Path) -> anyhow::Result<()> {
    let name = format!("jwt-bundle:spiffe://{TRUST_DOMAIN}");
    let served = sds_client::wait_for(socket, &[name.as_str()], READY_TIMEOUT).await?;
    let jwks = served
        .first()
        .and_then(sds_client::secret_bytes)
        .with_context(|| format!("{name} carries no bytes"))?;
    let pems = jwk::jwks_to_pems(&jwks)?;
    let body = serde_json::json!({ "jwt_validation_pubkeys": pems });
    bao.admin("POST", "auth/jwt/config", body).await.map(drop)
}

/// The `vault_transit` row, sealed with the root token.
async fn seal(bao: &AuditedOpenBao, plaintext: &[u8]) -> anyhow::Result<serde_json::Value> {
    let client = VaultClientConfig {
        addr: bao.addr(),
        ca_file: None,
        namespace: None,
        timeout: Duration::from_secs(5),
    }
    .build()?;
    let root = SecretBytes::copy_from(bao.root_token().as_bytes());
    let context = EncryptionContext::new();
    let row = seal_with_transit(
        &client,
        &root,
        "transit",
        "bench",
        TRANSIT_PATH,
        &context,
        plaintext,
    )
    .await?;
    Ok(serde_json::to_value(row)?)
}

fn config(bao: &AuditedOpenBao, envelopes: &Path) -> String {
    let refresh = REFRESH.as_secs();
    format!(
        "[dev]\ntrust_domain = \"{TRUST_DOMAIN}\"\nworkload_id = \"{WORKLOAD}\"\n\
         [envelopes]\nenabled = true\npaths = [\"{}\"]\nrefresh_interval = \"{refresh}s\"\n\
         [vault]\nenabled = true\naddr = \"{}\"\nrole = \"{ROLE}\"\naudience = \"vault\"\n\
         kv_refresh_interval = \"{refresh}s\"\nallow_insecure = true\n",
        envelopes.display(),
        bao.addr(),
    )
}

/// One window with `n` consumers.
async fn measure(
    bao: &AuditedOpenBao,
    steeple: &SteepleProcess,
    n: usize,
    window: Duration,
) -> anyhow::Result<CallsRound> {
    let consumers = Consumers::open(steeple.sds_socket(), n, &[KV_PATH, TRANSIT_PATH]);
    consumers
        .wait_ready(READY_TIMEOUT + Duration::from_millis(20) * n as u32)
        .await?;
    let (before, responses, started) = (bao.counts()?, consumers.responses(), Instant::now());
    tokio::time::sleep(window).await;
    let after = bao.counts()?;
    let elapsed = started.elapsed();
    let pushes = consumers.responses() - responses;
    anyhow::ensure!(
        consumers.failed() == 0,
        "{} consumers failed",
        consumers.failed()
    );
    consumers.close().await;
    Ok(CallsRound {
        consumers: n,
        window: elapsed,
        counts: after.since(&before),
        pushes_per_consumer: pushes as f64 / n as f64,
    })
}
