//! Part 1: cold and warm resolve latency against a local OpenBao (the harness's dev
//! server), calling `VaultKvResolver` and `VaultTransitResolver` directly with a
//! policy-limited token, next to the same Vault call made over a bare HTTP/1.1
//! connection. *Cold*: a resolver built just before (its client untimed, its connection
//! pool empty) resolving a row never resolved before; the anchor opens a new TCP
//! connection. *Warm*: one resolver resolving the same row again (what the registry does
//! on every refresh); the anchor reuses one keep-alive connection. Kinds and cases are
//! interleaved so drift affects them alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use steeple_e2e::openbao::OpenBao;
use steeple_plugin_api::{
    EncryptionContext, EnvelopeResolver, EnvelopeRow, SecretBytes, VaultAllowRule, VaultAllowlist,
};
use steeple_plugin_vault::{
    KvVersion, StaticToken, TokenSource, VaultClient, VaultClientConfig, VaultKvResolver,
    VaultTransitResolver, seal_with_transit,
};

use crate::args::Args;
use crate::http::RawHttp;
use crate::stats::Latency;

/// Direct transit payload: a password or API token.
pub const DIRECT_BYTES: usize = 1024;
/// Data-key layer payload (above the plugin's 32 KiB direct limit).
pub const DATA_KEY_BYTES: usize = 64 * 1024;
/// KV secret value size.
pub const KV_BYTES: usize = 64;
/// Rounds run and dropped before measuring.
const WARMUP: usize = 10;
/// Transit key and policy name.
const KEY: &str = "bench";
const POLICY: &str = r#"
path "secret/data/bench/*" { capabilities = ["read"] }
path "transit/decrypt/bench" { capabilities = ["update"] }
"#;

/// The kinds of envelope measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `vault_delegate`: a KV v2 read.
    Kv,
    /// `vault_transit`, ciphertext decrypted by Vault.
    TransitDirect,
    /// `vault_transit` with the data-key layer: Vault unwraps the key, AES-GCM locally.
    TransitDataKey,
}

impl Kind {
    const ALL: [Self; 3] = [Self::Kv, Self::TransitDirect, Self::TransitDataKey];

    /// The row label in the report.
    pub fn label(self) -> &'static str {
        match self {
            Self::Kv => "vault_delegate (KV v2 read)",
            Self::TransitDirect => "vault_transit, direct",
            Self::TransitDataKey => "vault_transit, data-key layer",
        }
    }

    /// What the anchor calls.
    pub fn anchor(self) -> &'static str {
        match self {
            Self::Kv => "GET secret/data/…",
            Self::TransitDirect => "POST transit/decrypt (payload)",
            Self::TransitDataKey => "POST transit/decrypt (data key)",
        }
    }

    /// Plaintext size.
    pub fn payload_bytes(self) -> usize {
        match self {
            Self::Kv => KV_BYTES,
            Self::TransitDirect => DIRECT_BYTES,
            Self::TransitDataKey => DATA_KEY_BYTES,
        }
    }
}

/// One kind, measured.
#[derive(Debug)]
pub struct KindResult {
    /// Which kind.
    pub kind: Kind,
    /// Resolver, cold.
    pub cold: Latency,
    /// Bare call on a new connection.
    pub cold_anchor: Latency,
    /// Resolver, warm.
    pub warm: Latency,
    /// Bare call on a kept connection.
    pub warm_anchor: Latency,
}

/// Part 1's results.
#[derive(Debug)]
pub struct ResolveResults {
    /// One per kind.
    pub kinds: Vec<KindResult>,
    /// Median time to build a `VaultClient` (rustls, native roots): paid once per agent,
    /// not per resolve, so left out of the cold figures.
    pub client_build: Duration,
    /// `/proc/loadavg` before and after.
    pub load: (String, String),
}

/// Runs part 1.
pub async fn run(args: &Args) -> anyhow::Result<ResolveResults> {
    let load_before = crate::loadavg();
    let bao = OpenBao::start()?;
    let setup = Setup::prepare(&bao, WARMUP + args.resolves).await?;
    let warm_kv = setup.resolvers()?;
    let mut warm_http = RawHttp::connect(bao.port()).await?;
    let mut samples: [[Vec<Duration>; 4]; 3] = Default::default();
    let mut builds = Vec::new();
    eprintln!("bench: part 1, {} rounds of each kind", args.resolves);
    for i in 0..WARMUP + args.resolves {
        for (k, kind) in Kind::ALL.into_iter().enumerate() {
            let built = Instant::now();
            let cold = setup.resolvers()?;
            builds.push(built.elapsed());
            let row = &setup.rows[k][i + 1];
            let times = [
                timed(cold.resolve(kind, row, &setup.plaintexts[k])).await?,
                timed(bare(
                    &mut RawHttp::connect(bao.port()).await?,
                    &setup,
                    kind,
                    row,
                ))
                .await?,
                timed(warm_kv.resolve(kind, &setup.rows[k][0], &setup.plaintexts[k])).await?,
                timed(bare(&mut warm_http, &setup, kind, &setup.rows[k][0])).await?,
            ];
            if i >= WARMUP {
                for (case, t) in times.into_iter().enumerate() {
                    samples[k][case].push(t);
                }
            }
        }
    }
    let mut kinds = Vec::new();
    for (kind, [cold, cold_anchor, warm, warm_anchor]) in Kind::ALL.into_iter().zip(samples) {
        kinds.push(KindResult {
            kind,
            cold: Latency::of(cold)?,
            cold_anchor: Latency::of(cold_anchor)?,
            warm: Latency::of(warm)?,
            warm_anchor: Latency::of(warm_anchor)?,
        });
    }
    Ok(ResolveResults {
        kinds,
        client_build: Latency::of(builds)?.p50,
        load: (load_before, crate::loadavg()),
    })
}

async fn timed(call: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    call.await?;
    Ok(started.elapsed())
}

/// The server, a policy-limited token, and the rows: index 0 is the warm row, the rest
/// are resolved once each.
struct Setup {
    addr: String,
    token: String,
    rows: [Vec<EnvelopeRow>; 3],
    plaintexts: [Vec<u8>; 3],
}

impl Setup {
    async fn prepare(bao: &OpenBao, cold: usize) -> anyhow::Result<Self> {
        let admin = bao.admin();
        admin.enable_transit("transit")?;
        admin.create_transit_key("transit", KEY, false)?;
        admin.write_policy(KEY, POLICY)?;
        let created: serde_json::Value = serde_json::from_str(&admin.cli(&[
            "token",
            "create",
            "-policy=bench",
            "-ttl=2h",
            "-format=json",
        ])?)?;
        let token = created["auth"]["client_token"]
            .as_str()
            .context("token create printed no client_token")?
            .to_owned();
        let plaintexts = Kind::ALL.map(|k| crate::canary(k.payload_bytes()));
        eprintln!(
            "bench: writing {} KV secrets and sealing {} rows of each transit kind",
            cold + 1,
            cold + 1
        );
        let mut root = RawHttp::connect(bao.port()).await?;
        let client = client(&bao.addr())?;
        let root_token = SecretBytes::copy_from(bao.root_token().as_bytes());
        let mut rows: [Vec<EnvelopeRow>; 3] = Default::default();
        for i in 0..=cold {
            let secret = format!("bench/kv-{i}");
            let password = String::from_utf8(plaintexts[0].clone())?;
            let body = serde_json::json!({ "data": { "password": password } });
            root.call(
                "POST",
                &format!("secret/data/{secret}"),
                bao.root_token(),
                Some(&body),
            )
            .await?
            .json("writing a KV secret")?;
            rows[0].push(EnvelopeRow {
                logical_path: format!("bench/kv/{i}"),
                provider: "vault_delegate".into(),
                key_id: format!("secret/{secret}"),
                field: Some("password".into()),
                ..EnvelopeRow::default()
            });
            for k in [1, 2] {
                let path = format!("bench/transit-{k}/{i}");
                let context = EncryptionContext::new();
                let row = seal_with_transit(
                    &client,
                    &root_token,
                    "transit",
                    KEY,
                    &path,
                    &context,
                    &plaintexts[k],
                )
                .await?;
                rows[k].push(row);
            }
        }
        Ok(Self {
            addr: bao.addr(),
            token,
            rows,
            plaintexts,
        })
    }

    /// A new client (fresh connection pool) and both resolvers on it.
    fn resolvers(&self) -> anyhow::Result<Resolvers> {
        let vault = client(&self.addr)?;
        let tokens: Arc<dyn TokenSource> =
            Arc::new(StaticToken(SecretBytes::copy_from(self.token.as_bytes())));
        // What the bench reads, as an operator would allow it in [[vault.allow]].
        let rule = |mount: &str, path: &str| VaultAllowRule {
            namespace: None,
            mount: mount.to_owned(),
            paths: vec![path.to_owned()],
        };
        let allowlist = Arc::new(VaultAllowlist::new(vec![
            rule("secret", "bench"),
            rule("transit", KEY),
        ])?);
        Ok(Resolvers {
            kv: VaultKvResolver::new(
                vault.clone(),
                tokens.clone(),
                KvVersion::V2,
                allowlist.clone(),
            ),
            transit: VaultTransitResolver::new(vault, tokens, allowlist),
        })
    }
}

fn client(addr: &str) -> anyhow::Result<VaultClient> {
    Ok(VaultClientConfig {
        addr: addr.to_owned(),
        ca_file: None,
        namespace: None,
        timeout: Duration::from_secs(5),
    }
    .build()?)
}

/// The two resolvers the agent builds, on one client.
struct Resolvers {
    kv: VaultKvResolver,
    transit: VaultTransitResolver,
}

impl Resolvers {
    /// What the agent does with a row: validate, resolve; checks the plaintext.
    async fn resolve(&self, kind: Kind, row: &EnvelopeRow, expected: &[u8]) -> anyhow::Result<()> {
        let sealed = row.validate(1 << 20)?;
        let resolver: &dyn EnvelopeResolver = match kind {
            Kind::Kv => &self.kv,
            _ => &self.transit,
        };
        let resolved = resolver
            .resolve(&sealed)
            .await
            .with_context(|| format!("resolving {}", row.logical_path))?;
        anyhow::ensure!(
            resolved.plaintext.expose() == expected,
            "{} resolved to the wrong plaintext",
            row.logical_path
        );
        Ok(())
    }
}

/// The Vault call the resolver makes for `row`, over `http`, with the same token.
async fn bare(
    http: &mut RawHttp,
    setup: &Setup,
    kind: Kind,
    row: &EnvelopeRow,
) -> anyhow::Result<()> {
    let answer = match kind {
        Kind::Kv => {
            let path = format!("secret/data/{}", row.key_id.trim_start_matches("secret/"));
            http.call("GET", &path, &setup.token, None).await?
        }
        Kind::TransitDirect | Kind::TransitDataKey => {
            let ciphertext = match kind {
                Kind::TransitDataKey => {
                    row.data_key_ciphertext.as_deref().context("no data key")?
                }
                _ => row.ciphertext_ref.as_str(),
            };
            let body = serde_json::json!({ "ciphertext": ciphertext });
            http.call("POST", "transit/decrypt/bench", &setup.token, Some(&body))
                .await?
        }
    };
    answer.json(kind.anchor()).map(drop)
}
