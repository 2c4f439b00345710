//! A caller in another PID namespace (another pod) has pid 0 in the peer credentials the
//! kernel gives Steeple, so the exited/reused-process check cannot run for it. Steeple
//! (`steeple dev` serving a local envelope) runs as pid 1 of a PID namespace of its own;
//! the test process, outside it, is such a caller. By default it is served, counted in
//! `steeple_sds_callers_without_pid_total` and its admission audited with the note; with
//! `sds.require_caller_pid = true` its connection is closed, counted as refused and the
//! denial audited, while a caller inside Steeple's namespace (`sds-fetch` started through
//! `nsenter`), whose pid Steeple sees, is still served. Needs root (unshare, nsenter).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::steeple::{seal_local, write_rows};
use steeple_e2e::{SteepleProcess, free_port};

const PATH: &str = "payments/api-token";
const CANARY: &str = "canary-pid-namespace-0001";
const NOTE: &str = "no pid in its peer credentials";
const WITHOUT_PID: &str = "steeple_sds_callers_without_pid_total";
const REFUSED: &str = "steeple_sds_connections_refused_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_pid_is_served_with_a_note_by_default() -> anyhow::Result<()> {
    let agent = NamespacedAgent::start("steeple-pidns-default-", "")?;
    let served =
        sds_client::wait_for(agent.steeple.sds_socket(), &[PATH], Duration::from_secs(30)).await?;
    assert_eq!(
        sds_client::secret_bytes(&served[0]).as_deref(),
        Some(CANARY.as_bytes()),
        "the caller outside the namespace was not served the envelope"
    );

    assert!(agent.metric(WITHOUT_PID).await? >= 1, "{WITHOUT_PID}");
    assert_eq!(agent.metric(REFUSED).await?, 0, "{REFUSED}");
    let events = agent.audit_events()?;
    let noted = events.iter().any(|e| {
        e["message"] == "sds connection"
            && e["decision"] == "admit"
            && e["caller_uid"] == 0
            && e["note"].as_str().is_some_and(|n| n.contains(NOTE))
    });
    assert!(noted, "no audited admission with {NOTE:?} in {events:?}");
    let granted = events.iter().any(|e| {
        e["message"] == "sds"
            && e["decision"] == "grant"
            && e["resource"] == PATH
            && e["caller"]
                .as_str()
                .is_some_and(|c| c.contains("pid=none(liveness-unchecked)"))
    });
    assert!(
        granted,
        "no audited grant to a pid-less caller in {events:?}"
    );
    agent.assert_no_canary()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_caller_pid_refuses_it_and_serves_a_caller_in_the_namespace() -> anyhow::Result<()>
{
    let agent = NamespacedAgent::start(
        "steeple-pidns-strict-",
        "[sds]\nrequire_caller_pid = true\n",
    )?;
    // First a caller whose pid Steeple sees: the agent serves, so the refusal below is
    // the policy's and not an agent still starting.
    let inside = agent.fetch_inside_namespace().await?;
    assert_eq!(inside["bytes"], CANARY.len(), "{inside}");
    assert_eq!(agent.metric(WITHOUT_PID).await?, 0, "{WITHOUT_PID}");
    assert_eq!(agent.metric(REFUSED).await?, 0, "{REFUSED}");

    let mut outside = sds_client::connect(agent.steeple.sds_socket());
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        sds_client::fetch(&mut outside, &[PATH]),
    )
    .await
    .context("the refused caller's connection was left open")?;
    let Err(refused) = answer else {
        anyhow::bail!("a caller without a pid was served under sds.require_caller_pid");
    };
    // Closed under the client (closed or broken pipe, as the race goes), not answered
    // with a gRPC status.
    let transport = refused
        .downcast_ref::<tonic::Status>()
        .and_then(std::error::Error::source)
        .is_some_and(|e| e.is::<tonic::transport::Error>());
    assert!(transport, "not a closed connection: {refused:#}");
    // One connection, one refusal.
    assert_eq!(agent.metric(REFUSED).await?, 1, "{REFUSED}");
    assert_eq!(agent.metric(WITHOUT_PID).await?, 1, "{WITHOUT_PID}");

    let events = agent.audit_events()?;
    let denied = events.iter().any(|e| {
        e["message"] == "sds connection refused"
            && e["decision"] == "deny"
            && e["caller_uid"] == 0
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains(NOTE) && r.contains("sds.require_caller_pid"))
    });
    assert!(denied, "no audited refusal in {events:?}");
    // The caller inside was granted as the process it is, its pid as Steeple sees it.
    let inside_pid = format!("pid={} ", inside["pid"]);
    let granted_inside = events.iter().any(|e| {
        e["message"] == "sds"
            && e["decision"] == "grant"
            && e["caller"]
                .as_str()
                .is_some_and(|c| c.contains(&inside_pid) && c.ends_with("/sds-fetch"))
    });
    assert!(
        granted_inside,
        "no grant to sds-fetch {inside_pid}in {events:?}"
    );
    let granted_outside = events.iter().any(|e| {
        e["message"] == "sds" && e["caller"].as_str().is_some_and(|c| c.contains("pid=none"))
    });
    assert!(
        !granted_outside,
        "a pid-less caller reached SDS: {events:?}"
    );
    agent.assert_no_canary()
}

/// `steeple dev` in a PID namespace of its own, serving one local envelope, with its
/// admin listener and audit file; everything under one temp dir.
struct NamespacedAgent {
    steeple: SteepleProcess,
    admin: u16,
    audit_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl NamespacedAgent {
    /// Starts the agent with `extra_toml` added to its config.
    fn start(prefix: &str, extra_toml: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            rustix::process::geteuid().is_root(),
            "this suite runs Steeple in a PID namespace of its own and needs root"
        );
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?;
        let envelopes = dir.path().join("envelopes");
        std::fs::create_dir_all(&envelopes)?;
        let master = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        write_rows(
            &envelopes.join("rows.json"),
            &[seal_local(&master, PATH, "", CANARY)?],
        )?;
        let admin = free_port()?;
        let audit_file = dir.path().join("audit.jsonl");
        let config = format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [audit]\nsink = \"file:{}\"\n\
             [envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
             local_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n{extra_toml}",
            audit_file.display(),
            envelopes.display()
        );
        let steeple = SteepleProcess::dev_in_pid_namespace(
            &dir.path().join("steeple"),
            &config,
            &[("STEEPLE_LOCAL_MASTER_KEY", master.as_str())],
        )?;
        let ours = std::fs::read_link("/proc/self/ns/pid")?;
        let its = std::fs::read_link(format!("/proc/{}/ns/pid", steeple.pid()))?;
        anyhow::ensure!(ours != its, "steeple runs in this test's PID namespace");
        Ok(Self {
            steeple,
            admin,
            audit_file,
            _dir: dir,
        })
    }

    /// `sds-fetch` for [`PATH`], run inside the agent's PID namespace; its report.
    async fn fetch_inside_namespace(&self) -> anyhow::Result<serde_json::Value> {
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new("nsenter")
                .arg(format!("--pid=/proc/{}/ns/pid", self.steeple.pid()))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_sds-fetch"))
                .arg(self.steeple.sds_socket())
                .args([PATH, "30"])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("sds-fetch did not finish")??;
        anyhow::ensure!(
            output.status.success(),
            "sds-fetch in the agent's namespace: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.steeple.logs()
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// The sum of every sample of `prefix` on the agent's `/metrics`.
    async fn metric(&self, prefix: &str) -> anyhow::Result<u64> {
        steeple_e2e::http::metric_sum(self.admin, prefix).await
    }

    /// Every audit event written so far (each line must be a JSON object).
    fn audit_events(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        read_events(&self.audit_file)
    }

    /// The canary is in neither the agent's log nor its audit trail.
    fn assert_no_canary(&self) -> anyhow::Result<()> {
        let canary = [CANARY.as_bytes().to_vec()];
        assert_not_in_logs(&canary, &self.steeple.logs())?;
        assert_not_in_logs(&canary, &std::fs::read_to_string(&self.audit_file)?)
    }
}

fn read_events(file: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}
