//! SIGHUP and SIGTERM on a running agent, with a real Envoy on its SDS socket and an SDS
//! stream held open by the test:
//! - a reload that moves the envelope files takes effect on the open stream (same stream,
//!   new value) and Envoy's SDS connection is never dropped;
//! - a reload that changes `[log] level` changes what the log shows;
//! - a malformed configuration, and one that changes a start-only section, are refused
//!   (the log names the key / section) and the running configuration keeps working;
//! - a reload that narrows `[[callers]]` closes the open stream that lost its grant with
//!   PermissionDenied, while Envoy's stream (still granted) stays;
//! - SIGTERM ends open streams, removes the socket and exits 0 within the grace period,
//!   and Envoy keeps serving on the secrets it holds.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use rustix::process::Signal;
use steeple_e2e::bootstrap::dev_on_free_ports;
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::steeple::{seal_local, write_rows};
use steeple_e2e::suite::eventually_status;
use steeple_e2e::{Envoy, SteepleProcess, http_get};
use tokio::sync::mpsc;

const ID: &str = "spiffe://steeple.dev/workload";
const TOKEN: &str = "payments/api-token";
const ADDED: &str = "payments/added";
const CANARY_1: &str = "canary-reload-0001";
const CANARY_2: &str = "canary-reload-0002";
const CANARY_3: &str = "canary-reload-0003";
const CANARY_4: &str = "canary-reload-0004";
/// Envoy's SDS cluster in the dev bootstrap.
const SDS_TOTAL: &str = "cluster.steeple_sds.upstream_cx_total";
const SDS_ACTIVE: &str = "cluster.steeple_sds.upstream_cx_active";
/// The dev CA's DEBUG line, every 2 s with its 4 s X.509-SVIDs.
const REISSUED: &str = "dev trust domain reissued its X.509-SVIDs";

/// The dev config (the harness adds debug logging): envelopes from `rows`, plus `extra`.
fn config(rows: &Path, extra: &str) -> String {
    format!(
        "[dev]\nworkload_id = \"{ID}\"\nx509_svid_ttl = \"4s\"\n\
         [envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
         local_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n{extra}",
        rows.display()
    )
}

/// An open StreamSecrets stream for `name` that ACKs what it receives.
struct OpenStream {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
    name: String,
}

impl OpenStream {
    async fn open(socket: &Path, name: &str) -> anyhow::Result<Self> {
        let (requests, rx) = mpsc::channel(4);
        requests.send(sds_client::request(&[name])).await?;
        let responses = sds_client::connect(socket)
            .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self {
            requests,
            responses,
            name: name.to_owned(),
        })
    }

    /// The next pushed value (at most 30 s), ACKed.
    async fn next_value(&mut self) -> anyhow::Result<Vec<u8>> {
        let response = tokio::time::timeout(Duration::from_secs(30), self.responses.message())
            .await
            .map_err(|_| anyhow::anyhow!("no push on the open stream within 30 s"))??
            .ok_or_else(|| anyhow::anyhow!("the open stream ended"))?;
        let mut ack = sds_client::request(&[&self.name]);
        ack.version_info.clone_from(&response.version_info);
        ack.response_nonce.clone_from(&response.nonce);
        self.requests.send(ack).await?;
        let secrets = sds_client::decode(&response)?;
        let secret = secrets
            .first()
            .ok_or_else(|| anyhow::anyhow!("an empty push"))?;
        sds_client::secret_bytes(secret).ok_or_else(|| anyhow::anyhow!("not a generic secret"))
    }

    /// Pushes until one carries `value`.
    async fn wait_value(&mut self, value: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.next_value().await? != value.as_bytes() {
            anyhow::ensure!(Instant::now() < deadline, "never pushed the new value");
        }
        Ok(())
    }
}

/// Writes `toml` (with the harness's debug logging) as the config, sends SIGHUP and waits
/// until the log shows `outcome` one more time than before.
async fn reload(steeple: &mut SteepleProcess, toml: &str, outcome: &str) -> anyhow::Result<String> {
    reload_at(steeple, "debug", toml, outcome).await
}

/// [`reload`] with `[log] level = level`.
async fn reload_at(
    steeple: &mut SteepleProcess,
    level: &str,
    toml: &str,
    outcome: &str,
) -> anyhow::Result<String> {
    let before = steeple.logs().matches(outcome).count();
    let toml = format!("[log]\nlevel = \"{level}\"\n{toml}");
    std::fs::write(steeple.dir().join("steeple.toml"), toml)?;
    steeple.signal(Signal::HUP)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = steeple.logs();
        if logs.matches(outcome).count() > before {
            return Ok(logs);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {outcome:?} in the log after SIGHUP:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_without_dropping_streams_and_sigterm_drains() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-reload-")
        .tempdir_in("/tmp")?;
    let master = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let (rows_a, rows_b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    write_rows(&rows_a, &[seal_local(&master, TOKEN, "", CANARY_1)?])?;
    write_rows(
        &rows_b,
        &[
            seal_local(&master, TOKEN, "", CANARY_2)?,
            seal_local(&master, ADDED, "", CANARY_3)?,
        ],
    )?;
    let run = dir.path().join("run");
    let mut steeple = SteepleProcess::dev_with(
        &run,
        &config(&rows_a, ""),
        &[("STEEPLE_LOCAL_MASTER_KEY", &master)],
    )?;
    let (yaml, client) = dev_on_free_ports(&steeple.printed_bootstrap()?)?;
    let envoy = Envoy::start(&yaml, dir.path())?;
    eventually_status(client, 200).await?;
    assert_eq!(envoy.stat(SDS_TOTAL).await?, Some(1));

    let mut stream = OpenStream::open(steeple.sds_socket(), TOKEN).await?;
    stream.wait_value(CANARY_1).await?;

    // 1. Moved envelope files: the open stream gets the new value; a new path is served.
    let logs = reload(&mut steeple, &config(&rows_b, ""), "configuration reloaded").await?;
    assert!(logs.contains("[envelopes]/[control_plane]"), "{logs}");
    stream.wait_value(CANARY_2).await?;
    let added =
        sds_client::wait_for(steeple.sds_socket(), &[ADDED], Duration::from_secs(30)).await?;
    assert_eq!(
        sds_client::secret_bytes(&added[0]).as_deref(),
        Some(CANARY_3.as_bytes())
    );

    // 1b. `[log] level` applies: at info the dev CA's reissues (DEBUG, every 2 s) are no
    // longer logged; back at debug they are again.
    let quiet_from = reload_at(
        &mut steeple,
        "info",
        &config(&rows_b, ""),
        "configuration reloaded",
    )
    .await?
    .len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = steeple
        .logs()
        .get(quiet_from..)
        .unwrap_or_default()
        .to_owned();
    assert!(
        !quiet.contains(REISSUED),
        "DEBUG lines at level info:\n{quiet}"
    );
    let loud_from = reload(&mut steeple, &config(&rows_b, ""), "configuration reloaded")
        .await?
        .len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !steeple
        .logs()
        .get(loud_from..)
        .unwrap_or_default()
        .contains(REISSUED)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no DEBUG line back at level debug"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 2. A malformed config is refused, naming the key; the running config stays.
    let logs = reload(
        &mut steeple,
        &config(&rows_a, "").replace("poll_interval", "pol_interval"),
        "new configuration refused",
    )
    .await?;
    assert!(
        logs.contains("pol_interval"),
        "the refusal names the key:\n{logs}"
    );
    write_rows(
        &rows_b,
        &[
            seal_local(&master, TOKEN, "", CANARY_4)?,
            seal_local(&master, ADDED, "", CANARY_3)?,
        ],
    )?;
    stream.wait_value(CANARY_4).await?;

    // 3. A start-only section changed: refused, named.
    let logs = reload(
        &mut steeple,
        &config(&rows_b, "[sds]\nsocket_mode = \"0660\"\n"),
        "new configuration refused",
    )
    .await?;
    assert!(logs.contains("[sds] changed"), "{logs}");

    // 4. Narrowed [[callers]]: the stream on payments/* loses its grant and is closed;
    // Envoy's (SVID and bundle names) keeps its.
    let uid = rustix::process::geteuid().as_raw();
    let callers =
        format!("[[callers]]\nuids = [{uid}]\nresources = [\"spiffe://*\", \"ROOTCA\"]\n");
    reload(
        &mut steeple,
        &config(&rows_b, &callers),
        "configuration reloaded",
    )
    .await?;
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.responses.message())
        .await
        .map_err(|_| anyhow::anyhow!("the revoked stream stayed open"))?;
    let status = closed.expect_err("the revoked stream got a push");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(TOKEN), "{}", status.message());

    // Through all four reloads Envoy kept its one SDS connection and kept serving.
    assert_eq!(
        envoy.stat(SDS_TOTAL).await?,
        Some(1),
        "Envoy's SDS stream was dropped"
    );
    assert_eq!(envoy.stat(SDS_ACTIVE).await?, Some(1));
    assert_eq!(http_get(client, "/").await?.0, 200);

    // 5. SIGTERM: open streams end, the socket goes, exit 0 within the grace period.
    let mut envoy_like = OpenStream::open(steeple.sds_socket(), ID).await?;
    tokio::time::timeout(Duration::from_secs(10), envoy_like.responses.message())
        .await
        .map_err(|_| anyhow::anyhow!("no SVID on a fresh stream"))??;
    let stopping = Instant::now();
    steeple.signal(Signal::TERM)?;
    let ended = tokio::time::timeout(Duration::from_secs(10), envoy_like.responses.message())
        .await
        .map_err(|_| anyhow::anyhow!("the stream outlived SIGTERM by 10 s"))?;
    assert!(
        !matches!(ended, Ok(Some(_))),
        "a push after SIGTERM: {ended:?}"
    );
    let status = steeple.wait_exit(Duration::from_secs(12))?;
    let drained_in = stopping.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        drained_in < Duration::from_secs(10),
        "took {drained_in:?}, longer than the 10 s grace"
    );
    assert!(!steeple.sds_socket().exists(), "the SDS socket was left");
    for _ in 0..5 {
        assert_eq!(
            http_get(client, "/").await?.0,
            200,
            "Envoy after Steeple left"
        );
    }
    println!("SIGTERM to exit: {drained_in:?}");

    let logs = format!("{}{}", steeple.logs(), envoy.logs());
    let canaries: Vec<Vec<u8>> = [CANARY_1, CANARY_2, CANARY_3, CANARY_4]
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_not_in_logs(&canaries, &logs)?;
    Ok(())
}
