//! Part 3: upstream calls per hour versus the number of consumers. `steeple dev` (release
//! build) with `[aws]` against moto (20 s sessions) and one `kms_envelope` row refreshed
//! every 30 s; for each N, N SDS streams follow the envelope and `aws-credentials`, and N
//! `steeple aws credential-process` calls are spread over the window; moto's recorder
//! counts `AssumeRoleWithWebIdentity` and KMS `Decrypt`.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use steeple_e2e::SteepleProcess;
use steeple_e2e::moto::Moto;
use steeple_e2e::process::tail;
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::steeple::steeple_bin;
use steeple_plugin_api::EncryptionContext;
use steeple_plugin_aws::{SealOptions, seal_with_kms};
use tempfile::TempDir;
use tokio::task::JoinSet;

use crate::args::Args;
use crate::consumers::Consumers;
use crate::resolve::{REGION, ROLE_ARN};
use crate::rows;

/// The envelope's logical path.
pub const LOGICAL_PATH: &str = "bench/db-password";
/// The credentials secret (the agent's default name).
pub const CREDENTIALS: &str = "aws-credentials";
/// Requested STS session length.
pub const SESSION: Duration = Duration::from_secs(20);
/// How often the agent resolves every envelope again.
pub const REFRESH: Duration = Duration::from_secs(30);
/// moto's recorder names of the counted operations.
const STS_OP: &str = "AssumeRoleWithWebIdentity";
const DECRYPT_OP: &str = "TrentService.Decrypt";
/// How long the agent may take to serve both secrets after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The log line the exchange loop writes after each successful STS call.
const EXCHANGED: &str = "credentials exchanged";

/// Upstream calls during one window.
#[derive(Debug)]
pub struct UpstreamRound {
    /// Consumer streams open (and credential-process calls made) during the window.
    pub consumers: usize,
    /// `steeple aws credential-process` calls that succeeded.
    pub credential_process_calls: usize,
    /// The window's length.
    pub window: Duration,
    /// `AssumeRoleWithWebIdentity` calls moto served in the window.
    pub sts_calls: usize,
    /// KMS calls of any kind moto served in the window.
    pub kms_calls: usize,
    /// KMS `Decrypt` calls among them.
    pub decrypt_calls: usize,
    /// SDS responses per consumer stream in the window.
    pub pushes_per_consumer: f64,
}

impl UpstreamRound {
    /// `calls` in the window, scaled to one hour.
    pub fn per_hour(&self, calls: usize) -> f64 {
        calls as f64 * 3600.0 / self.window.as_secs_f64()
    }
}

/// Part 3's results.
#[derive(Debug)]
pub struct UpstreamResults {
    /// Each consumer count, in order.
    pub rounds: Vec<UpstreamRound>,
    /// From the first window's start to the last one's end (establishing included).
    pub total_time: Duration,
    /// `AssumeRoleWithWebIdentity` calls in that time.
    pub total_sts: usize,
    /// KMS `Decrypt` calls in that time.
    pub total_decrypts: usize,
}

/// Runs part 3.
pub async fn run(args: &Args) -> anyhow::Result<UpstreamResults> {
    let moto = Moto::start().await?;
    let agent = AwsAgent::start(&moto).await?;
    let (start, started) = (Counts::read(&moto)?, Instant::now());
    let mut rounds = Vec::new();
    let mut secrets = HashSet::from([agent.plaintext.clone()]);
    for &n in &args.consumers {
        let round = measure(&moto, &agent.steeple, n, args.window, &mut secrets).await?;
        eprintln!(
            "bench: upstream N={n}: {} STS, {} KMS Decrypt in {:?} ({:.1} pushes/consumer)",
            round.sts_calls, round.decrypt_calls, round.window, round.pushes_per_consumer
        );
        rounds.push(round);
    }
    let end = Counts::read(&moto)?;
    let secrets: Vec<Vec<u8>> = secrets.into_iter().collect();
    assert_not_in_logs(&secrets, &agent.steeple.logs())?;
    Ok(UpstreamResults {
        rounds,
        total_time: started.elapsed(),
        total_sts: end.sts - start.sts,
        total_decrypts: end.decrypt - start.decrypt,
    })
}

/// `steeple dev` with `[aws]` against moto, serving one `kms_envelope` row.
struct AwsAgent {
    // Declared first: the agent stops before its directory goes.
    steeple: SteepleProcess,
    _dir: TempDir,
    plaintext: Vec<u8>,
}

impl AwsAgent {
    /// Creates a key in moto, seals a fresh canary under it, starts the agent, and waits
    /// until it serves both the plaintext and credentials.
    async fn start(moto: &Moto) -> anyhow::Result<Self> {
        let key = moto.create_key(REGION).await?;
        let dir = tempfile::Builder::new()
            .prefix("steeple-bench-aws-")
            .tempdir_in("/tmp")?;
        let plaintext = rows::canary(64)?;
        let envelopes = dir.path().join("envelopes");
        std::fs::create_dir_all(&envelopes)?;
        let row = seal(moto, &key, &plaintext).await?;
        rows::write_rows(&envelopes.join("rows.json"), &[row])?;
        let config = config(moto, &key, &envelopes)?;
        let steeple = SteepleProcess::dev_with(&dir.path().join("steeple"), &config, &[])?;
        let names = [LOGICAL_PATH, CREDENTIALS];
        let served = sds_client::wait_for(steeple.sds_socket(), &names, READY_TIMEOUT)
            .await
            .with_context(|| format!("steeple logs (tail):\n{}", tail(&steeple.logs(), 20)))?;
        anyhow::ensure!(
            served.iter().any(|s| s.name == LOGICAL_PATH
                && sds_client::secret_bytes(s).as_deref() == Some(&plaintext[..])),
            "the served envelope is not the sealed plaintext"
        );
        anyhow::ensure!(
            steeple.logs().contains(EXCHANGED),
            "Steeple serves {CREDENTIALS} but never logged {EXCHANGED:?}"
        );
        Ok(Self {
            steeple,
            _dir: dir,
            plaintext,
        })
    }
}

/// The row, sealed with KMS `Encrypt` under `key`.
async fn seal(moto: &Moto, key: &str, plaintext: &[u8]) -> anyhow::Result<serde_json::Value> {
    let options = SealOptions {
        endpoint: Some(moto.endpoint()),
        sdk_config: Some(moto.sdk_config(REGION)),
    };
    let context: EncryptionContext = [("app".to_owned(), "bench".to_owned())].into();
    let row = seal_with_kms(&options, key, LOGICAL_PATH, &context, plaintext).await?;
    Ok(serde_json::to_value(row)?)
}

/// The agent's configuration: `[aws]` against moto, `[envelopes]` from `envelopes`.
fn config(moto: &Moto, key: &str, envelopes: &Path) -> anyhow::Result<String> {
    let (account, _) = key.split_once(":key/").context("not a key ARN")?;
    let endpoint = moto.endpoint();
    Ok(format!(
        "[aws]\nenabled = true\nrole_arn = \"{ROLE_ARN}\"\nsession_duration = \"{}s\"\n\
         sts_endpoint = \"{endpoint}\"\nkms_endpoint = \"{endpoint}\"\n\
         allow_insecure_endpoints = true\nkey_arn_allowlist = [\"{account}:key/\"]\n\
         [envelopes]\nenabled = true\npaths = [\"{}\"]\nrefresh_interval = \"{}s\"\n",
        SESSION.as_secs(),
        envelopes.display(),
        REFRESH.as_secs(),
    ))
}

/// One window with `n` consumers.
async fn measure(
    moto: &Moto,
    steeple: &SteepleProcess,
    n: usize,
    window: Duration,
    secrets: &mut HashSet<Vec<u8>>,
) -> anyhow::Result<UpstreamRound> {
    let consumers = Consumers::open(steeple.sds_socket(), n, &[LOGICAL_PATH, CREDENTIALS]);
    let establish = READY_TIMEOUT + Duration::from_millis(20) * n as u32;
    consumers.wait_ready(establish).await?;
    let before = Counts::read(moto)?;
    let (responses, started) = (consumers.responses(), Instant::now());
    let calls = credential_process_calls(steeple.sds_socket(), n, window, secrets).await?;
    tokio::time::sleep_until((started + window).into()).await;
    let after = Counts::read(moto)?;
    let elapsed = started.elapsed();
    let pushes = consumers.responses() - responses;
    anyhow::ensure!(
        consumers.failed() == 0,
        "{} consumers failed",
        consumers.failed()
    );
    consumers.close().await;
    Ok(UpstreamRound {
        consumers: n,
        credential_process_calls: calls,
        window: elapsed,
        sts_calls: after.sts - before.sts,
        kms_calls: after.kms - before.kms,
        decrypt_calls: after.decrypt - before.decrypt,
        pushes_per_consumer: pushes as f64 / n as f64,
    })
}

/// Runs `n` `steeple aws credential-process` calls evenly over `window` (the last one
/// starting before it ends); each must print credentials. Returns how many ran, and adds
/// the secret parts of what they printed to `secrets` (for the log check).
async fn credential_process_calls(
    socket: &Path,
    n: usize,
    window: Duration,
    secrets: &mut HashSet<Vec<u8>>,
) -> anyhow::Result<usize> {
    let bin = steeple_bin()?;
    let every = window.mul_f64(0.9) / n as u32;
    let mut calls = JoinSet::new();
    for i in 0..n {
        tokio::time::sleep(if i == 0 { Duration::ZERO } else { every }).await;
        let mut command = tokio::process::Command::new(&bin);
        command
            .args(["aws", "credential-process", "--socket"])
            .arg(socket)
            .kill_on_drop(true);
        calls.spawn(async move {
            let output = command.output().await?;
            anyhow::ensure!(
                output.status.success(),
                "steeple aws credential-process failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            let printed: serde_json::Value = serde_json::from_slice(&output.stdout)
                .context("steeple aws credential-process printed no JSON")?;
            anyhow::ensure!(
                printed["AccessKeyId"].is_string(),
                "steeple aws credential-process printed no AccessKeyId"
            );
            Ok(["SecretAccessKey", "SessionToken"]
                .map(|k| printed[k].as_str().unwrap_or_default().as_bytes().to_vec()))
        });
    }
    let mut ran = 0;
    while let Some(call) = calls.join_next().await {
        secrets.extend(call??);
        ran += 1;
    }
    Ok(ran)
}

/// Cumulative counts from moto's recorder.
struct Counts {
    sts: usize,
    kms: usize,
    decrypt: usize,
}

impl Counts {
    fn read(moto: &Moto) -> anyhow::Result<Self> {
        let requests = moto.requests()?;
        let count = |f: &dyn Fn(&str) -> bool| requests.iter().filter(|r| f(&r.operation)).count();
        Ok(Self {
            sts: count(&|op| op == STS_OP),
            kms: count(&|op| op.starts_with("TrentService.")),
            decrypt: count(&|op| op == DECRYPT_OP),
        })
    }
}
