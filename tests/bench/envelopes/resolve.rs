//! Part 2: cold resolve latency of KMS envelopes against moto. Each measured resolve is of
//! a row never resolved before (validated from its JSON fields, then
//! `KmsEnvelopeResolver::resolve`), direct (KMS `Encrypt`, < 4 KiB) and with the data-key
//! layer (64 KiB); a bare `Decrypt` through `aws-sdk-kms` is the anchor. The three are
//! interleaved so moto's drift affects them alike.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use steeple_e2e::moto::{self, Moto};
use steeple_plugin_api::{
    CredentialExchanger, EncryptionContext, EnvelopeResolver, EnvelopeRow, SecretBytes,
    bind_logical_path,
};
use steeple_plugin_aws::{
    KmsConfig, KmsEnvelopeResolver, SealOptions, StsConfig, StsExchanger, seal_with_kms,
};
use tokio::sync::watch;

use crate::args::Args;
use crate::stats::Latency;

/// The region moto's key lives in.
pub const REGION: &str = "us-east-1";
/// The role moto's STS hands credentials for (moto accepts any).
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/bench";
/// Direct payload size: a password or API token (KMS `Encrypt` takes ≤ 4 KiB).
pub const DIRECT_BYTES: usize = 1024;
/// Data-key payload size.
pub const DATA_KEY_BYTES: usize = 64 * 1024;
/// Largest decoded ciphertext the rows may carry.
const MAX_CIPHERTEXT: usize = 128 * 1024;
/// Calls of each kind run and dropped before measuring (connection pool, moto's caches).
const WARMUP: usize = 10;
/// moto's recorder name of KMS `Decrypt`.
const DECRYPT: &str = "TrentService.Decrypt";

/// One kind of call, measured.
#[derive(Debug)]
pub struct ResolveRow {
    /// What was timed.
    pub label: &'static str,
    /// Plaintext size, bytes.
    pub payload_bytes: usize,
    /// Latency over the resolves.
    pub latency: Latency,
    /// KMS `Decrypt` calls moto saw per timed call.
    pub decrypts_per_call: f64,
}

/// Part 2's results.
#[derive(Debug)]
pub struct ResolveResults {
    /// The bare `Decrypt` anchor, then direct and data-key resolves.
    pub rows: Vec<ResolveRow>,
    /// The very first resolve of a new resolver (builds the region's client, connects).
    pub first_resolve: Duration,
    /// moto's version, from its package metadata.
    pub moto_version: String,
}

/// Runs part 2.
pub async fn run(args: &Args) -> anyhow::Result<ResolveResults> {
    let moto = Moto::start().await?;
    let calls = Calls::prepare(&moto, args.resolves + WARMUP + 1).await?;
    let first = Instant::now();
    calls.run(Kind::Direct, args.resolves + WARMUP).await?;
    let first_resolve = first.elapsed();
    // Warm-up, counting moto's Decrypts per call (reading its recorder is slow, so the
    // measured calls are only checked in total).
    let mut decrypts = [0usize; 3];
    for i in 0..WARMUP {
        for kind in Kind::ALL {
            let before = moto.count(DECRYPT)?;
            calls.run(kind, i).await?;
            decrypts[kind as usize] += moto.count(DECRYPT)? - before;
        }
    }
    let before = moto.count(DECRYPT)?;
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for i in WARMUP..WARMUP + args.resolves {
        for kind in Kind::ALL {
            let started = Instant::now();
            calls.run(kind, i).await?;
            samples[kind as usize].push(started.elapsed());
        }
    }
    let measured = moto.count(DECRYPT)? - before;
    let expected = decrypts.iter().sum::<usize>() * args.resolves / WARMUP;
    anyhow::ensure!(
        measured == expected,
        "moto saw {measured} Decrypts in the measured loop, the warm-up predicted {expected}"
    );
    let mut rows = Vec::new();
    for (kind, samples) in Kind::ALL.into_iter().zip(samples) {
        rows.push(ResolveRow {
            label: kind.label(),
            payload_bytes: kind.payload_bytes(),
            latency: Latency::of(samples)?,
            decrypts_per_call: decrypts[kind as usize] as f64 / WARMUP as f64,
        });
    }
    Ok(ResolveResults {
        rows,
        first_resolve,
        moto_version: moto_version(),
    })
}

/// The calls compared, in the order they run in each round.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bare = 0,
    Direct = 1,
    DataKey = 2,
}

impl Kind {
    const ALL: [Self; 3] = [Self::Bare, Self::Direct, Self::DataKey];

    fn label(self) -> &'static str {
        match self {
            Self::Bare => "bare KMS Decrypt (aws-sdk-kms)",
            Self::Direct => "resolve, direct",
            Self::DataKey => "resolve, data-key layer",
        }
    }

    fn payload_bytes(self) -> usize {
        match self {
            Self::Bare | Self::Direct => DIRECT_BYTES,
            Self::DataKey => DATA_KEY_BYTES,
        }
    }
}

/// Everything the calls need: sealed rows (each resolved once), a resolver and a plain
/// KMS client.
struct Calls {
    resolver: KmsEnvelopeResolver,
    kms: aws_sdk_kms::Client,
    context: EncryptionContext,
    direct: Vec<EnvelopeRow>,
    large: Vec<EnvelopeRow>,
}

impl Calls {
    /// Creates a key in moto and seals `n` rows of each size under it.
    async fn prepare(moto: &Moto, n: usize) -> anyhow::Result<Self> {
        let key = moto.create_key(REGION).await?;
        let context: EncryptionContext = [("app", "bench"), ("env", "bench")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        eprintln!("bench: sealing {n} direct and {n} data-key rows with moto");
        Ok(Self {
            resolver: resolver(moto, &key).await?,
            kms: moto.kms_client(REGION),
            direct: seal_rows(moto, &key, "direct", &context, DIRECT_BYTES, n).await?,
            large: seal_rows(moto, &key, "large", &context, DATA_KEY_BYTES, n).await?,
            context,
        })
    }

    /// One call of `kind` on the `i`th row.
    async fn run(&self, kind: Kind, i: usize) -> anyhow::Result<()> {
        match kind {
            Kind::Bare => bare_decrypt(&self.kms, &self.direct[i], &self.context).await,
            Kind::Direct => resolve(&self.resolver, &self.direct[i]).await,
            Kind::DataKey => resolve(&self.resolver, &self.large[i]).await,
        }
    }
}

/// The version in the venv's `moto-<version>.dist-info` next to `moto_server`.
fn moto_version() -> String {
    let version = || -> Option<String> {
        let venv = moto::moto_server_bin()
            .ok()?
            .parent()?
            .parent()?
            .join("lib");
        for python in std::fs::read_dir(venv).ok()?.flatten() {
            let packages = python.path().join("site-packages");
            for entry in std::fs::read_dir(packages).ok()?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(v) = name.strip_prefix("moto-") {
                    return v.strip_suffix(".dist-info").map(str::to_owned);
                }
            }
        }
        None
    };
    version().unwrap_or_else(|| "(version unknown)".to_owned())
}

/// A resolver signing with credentials moto's STS handed out for a dummy JWT.
async fn resolver(moto: &Moto, key: &str) -> anyhow::Result<KmsEnvelopeResolver> {
    let exchanger = StsExchanger::new(StsConfig {
        role_arn: ROLE_ARN.to_owned(),
        endpoint: Some(moto.endpoint()),
        duration: Duration::from_secs(3600),
        ..StsConfig::default()
    })?;
    let credentials = exchanger.exchange(&dummy_jwt()).await?;
    let (_tx, rx) = watch::channel(Some(credentials));
    let prefix = key
        .split_once(":key/")
        .map(|(account, _)| format!("{account}:key/"))
        .context("moto returned no key ARN")?;
    Ok(KmsEnvelopeResolver::new(
        KmsConfig {
            key_arn_allowlist: vec![prefix],
            endpoint: Some(moto.endpoint()),
            ..KmsConfig::default()
        },
        Arc::new(rx),
    )?)
}

/// A syntactically valid JWT whose subject names the workload (moto checks nothing).
fn dummy_jwt() -> SecretBytes {
    let b64 = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let header = b64(r#"{"alg":"RS256","typ":"JWT","kid":"bench"}"#);
    let claims = b64(
        r#"{"iss":"https://oidc.example.org","sub":"spiffe://example.org/bench","aud":["sts.amazonaws.com"],"exp":4102444800}"#,
    );
    SecretBytes::new(format!("{header}.{claims}.{}", b64("signature")).into_bytes())
}

/// `count` rows of `bytes` random-looking bytes each, sealed under `key`.
async fn seal_rows(
    moto: &Moto,
    key: &str,
    prefix: &str,
    context: &EncryptionContext,
    bytes: usize,
    count: usize,
) -> anyhow::Result<Vec<EnvelopeRow>> {
    let options = SealOptions {
        endpoint: Some(moto.endpoint()),
        sdk_config: Some(moto.sdk_config(REGION)),
    };
    let mut rows = Vec::with_capacity(count);
    for i in 0..count {
        let plaintext: Vec<u8> = (0..bytes).map(|b| (b * 31 + i * 7) as u8).collect();
        let path = format!("bench/{prefix}/{i}");
        rows.push(seal_with_kms(&options, key, &path, context, &plaintext).await?);
    }
    Ok(rows)
}

/// What the agent does with a new row: validate it, then resolve it.
async fn resolve(resolver: &KmsEnvelopeResolver, row: &EnvelopeRow) -> anyhow::Result<()> {
    let sealed = row.validate(MAX_CIPHERTEXT)?;
    let resolved = resolver
        .resolve(&sealed)
        .await
        .with_context(|| format!("resolving {}", row.logical_path))?;
    anyhow::ensure!(!resolved.plaintext.expose().is_empty(), "empty plaintext");
    Ok(())
}

/// KMS `Decrypt` of a direct row's ciphertext, as any SDK user would call it: with the
/// context it was sealed under, which binds the row's logical path (`steeple_logical_path`).
async fn bare_decrypt(
    kms: &aws_sdk_kms::Client,
    row: &EnvelopeRow,
    context: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let blob = base64::engine::general_purpose::STANDARD.decode(&row.ciphertext_ref)?;
    let context = bind_logical_path(context, &row.logical_path).map_err(anyhow::Error::msg)?;
    kms.decrypt()
        .ciphertext_blob(Blob::new(blob))
        .key_id(&row.key_id)
        .set_encryption_context(Some(context.into_iter().collect()))
        .send()
        .await
        .context("bare KMS Decrypt")?;
    Ok(())
}
