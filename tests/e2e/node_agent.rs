//! One Steeple per node (`[workload_api] mode = "delegated"`) against a real SPIRE agent
//! serving the Delegated Identity API on its admin socket, with Steeple's own SPIFFE ID in
//! its `authorized_delegates`. Workloads are registered by `unix:uid`, each a real Envoy
//! run as its own uid (`setpriv`) on the *same* Steeple SDS socket. Proven:
//! - each workload's `default` is its own: A and B do mTLS with each other, each side
//!   accepting only the other's SPIFFE ID;
//! - A asking for B's SPIFFE ID is refused, and the refusal audited;
//! - A's connection handed to another process that uses it after A exited is refused (the
//!   pidfd guard: nothing attested for a pid reaches anyone but the process that connected);
//! - a third uid with no entry gets no SVID, its Envoy held waiting, and gets its own once
//!   an entry is created — the same Envoy, without reconnecting;
//! - `[[callers]]` by SPIFFE ID: only A's identity may fetch the envelope
//!   `payments/db-password`; B, same rules otherwise, is refused;
//! - SPIRE agent stopped and started under load: not one request fails, and Steeple
//!   follows the restarted agent (a new caller is served);
//! - B's entry deleted: B's SVID is withdrawn while A is still served;
//! - no private key Steeple served shows in its logs.
//!
//! Needs root (to run Envoys and callers as other users).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use steeple_e2e::bootstrap::{TlsNames, mtls_client, mtls_server};
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::steeple::{seal_local, write_rows};
use steeple_e2e::suite::eventually_status;
use steeple_e2e::{Envoy, Spire, SpireOptions, SteepleProcess, free_port, http_get};

const STEEPLE: &str = "spiffe://example.org/steeple";
const A: (&str, u32) = ("spiffe://example.org/workload-a", 1101);
const B: (&str, u32) = ("spiffe://example.org/workload-b", 1102);
const C: (&str, u32) = ("spiffe://example.org/workload-c", 1103);
const ENVELOPE: &str = "payments/db-password";
const CANARY: &str = "canary-node-agent-payments-0001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workload_gets_its_own_identity_and_nothing_of_anyone_elses() -> anyhow::Result<()> {
    anyhow::ensure!(
        rustix::process::geteuid().is_root(),
        "this suite runs workloads as other users and needs root"
    );
    let mut spire = Spire::start(SpireOptions {
        authorized_delegates: vec![STEEPLE.to_owned()],
        ..SpireOptions::default()
    })?;
    spire.create_entry(STEEPLE, "unix:uid:0", None)?;
    spire.create_entry(A.0, &format!("unix:uid:{}", A.1), None)?;
    let b_entry = spire.create_entry(B.0, &format!("unix:uid:{}", B.1), None)?;
    let node = NodeAgent::start(&spire)?;

    // A serves, B calls: each presents its own `default`, and accepts only the other.
    let (server_port, client_port) = (free_port()?, free_port()?);
    let _server = node.envoy(
        &mtls_server(free_port()?, server_port, node.sds(), &names(B.0), "from-a"),
        A.1,
    )?;
    let _client = node.envoy(
        &mtls_client(
            free_port()?,
            client_port,
            server_port,
            node.sds(),
            &names(A.0),
        ),
        B.1,
    )?;
    let (_, body) = eventually_status(client_port, 200)
        .await
        .with_context(|| node.steeple.logs())?;
    assert_eq!(body, "from-a");

    // A asking for B's SVID: refused, audited.
    let refused = node.fetch_as(A.1, B.0, 5)?;
    anyhow::ensure!(
        !refused.0 && refused.1.contains("not an SVID of this workload"),
        "A fetching B's SVID: {refused:?}"
    );
    node.wait_audited_denial(A.1, B.0).await?;

    // The envelope only A's identity is granted.
    let (served, out) = node.fetch_as(A.1, ENVELOPE, 15)?;
    anyhow::ensure!(served, "A denied {ENVELOPE}: {out}");
    let (served, out) = node.fetch_as(B.1, ENVELOPE, 3)?;
    anyhow::ensure!(
        !served && out.contains("not authorized for resource"),
        "B fetching {ENVELOPE}: {out}"
    );
    node.wait_audited_denial(B.1, ENVELOPE).await?;

    // A's JWT-SVID is A's, fetched for A on demand.
    let (served, out) = node.fetch_as(A.1, "jwt-svid:payments-api", 15)?;
    anyhow::ensure!(served, "A's JWT-SVID not served: {out}");
    anyhow::ensure!(out.contains(&format!("\"sub\":\"{}\"", A.0)), "{out}");

    // A's connection, used by a process A handed it to after A exited: never served.
    let inherited = node.run_as(
        A.1,
        "sds-inherit",
        &[node.sds().as_os_str(), "default".as_ref()],
    )?;
    anyhow::ensure!(
        inherited.contains("refused: PermissionDenied") && inherited.contains("gone"),
        "an inherited connection of an exited process: {inherited}"
    );

    no_entry_then_entry(&spire, &node).await?;
    agent_restart_under_load(&mut spire, &node, client_port).await?;

    // B's entry deleted: B's SVID withdrawn, A's still served.
    spire.delete_entry(&b_entry)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while node.fetch_as(B.1, "default", 2)?.0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "B's SVID still served 30 s after its entry was deleted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(node.fetch_as(A.1, "default", 10)?.0, "A lost its SVID");
    assert_eq!(http_get(client_port, "/").await?.0, 200);

    // Steeple's own delegated SVID (root is uid 0, its own entry): its key never logged.
    let own = sds_client::wait_for(node.sds(), &["default"], Duration::from_secs(10)).await?;
    let keys: Vec<Vec<u8>> = own.iter().filter_map(sds_client::secret_bytes).collect();
    assert!(!keys.is_empty());
    let mut secrets = keys;
    secrets.push(CANARY.as_bytes().to_vec());
    assert_not_in_logs(&secrets, &node.steeple.logs())?;
    let audit = std::fs::read_to_string(&node.audit).unwrap_or_default();
    assert_not_in_logs(&secrets, &audit)?;
    Ok(())
}

/// No `[[callers]]` rule: every local caller gets its own identity (as from SPIRE agent's
/// own SDS), and nothing else — the envelope needs a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rules_every_caller_gets_its_own_identity_and_nothing_else() -> anyhow::Result<()> {
    let spire = Spire::start(SpireOptions {
        authorized_delegates: vec![STEEPLE.to_owned()],
        ..SpireOptions::default()
    })?;
    spire.create_entry(STEEPLE, "unix:uid:0", None)?;
    spire.create_entry(A.0, &format!("unix:uid:{}", A.1), None)?;
    let node = NodeAgent::start_with(&spire, "")?;
    let (served, out) = node.fetch_as(A.1, "default", 15)?;
    anyhow::ensure!(served, "A's default: {out}");
    let (served, out) = node.fetch_as(A.1, "jwt-svid:anything", 15)?;
    anyhow::ensure!(served && out.contains(A.0), "A's JWT-SVID: {out}");
    let (served, out) = node.fetch_as(A.1, ENVELOPE, 3)?;
    anyhow::ensure!(!served && out.contains("not authorized"), "{out}");
    Ok(())
}

/// Steeple has an entry but is not in the agent's `authorized_delegates`: it says so at
/// start, naming the agent setting, and serves no workload anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_delegate_is_told_which_agent_setting_to_change() -> anyhow::Result<()> {
    let spire = Spire::start(SpireOptions {
        authorized_delegates: vec!["spiffe://example.org/someone-else".to_owned()],
        ..SpireOptions::default()
    })?;
    spire.create_entry(STEEPLE, "unix:uid:0", None)?;
    let node = NodeAgent::start(&spire)?;
    node.wait_log("add Steeple's own SPIFFE ID to the SPIRE agent's authorized_delegates")
        .await?;
    assert!(node.own_log_lines().contains("ERROR"));
    let (served, out) = node.fetch_as(A.1, "default", 2)?;
    assert!(!served, "{out}");
    // `steeple doctor` says the same.
    let doctor = std::process::Command::new(steeple_e2e::steeple::steeple_bin()?)
        .args(["doctor", "--json", "--config"])
        .arg(node.steeple.dir().join("steeple.toml"))
        .output()?;
    assert!(!doctor.status.success());
    let checks: serde_json::Value = serde_json::from_slice(&doctor.stdout)?;
    let delegated = checks
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == "workload_api.delegated"))
        .with_context(|| format!("no workload_api.delegated check in {checks}"))?;
    assert_eq!(delegated["status"], "fail", "{delegated}");
    assert!(
        delegated["fix"]
            .as_str()
            .is_some_and(|f| f.contains("authorized_delegates")),
        "{delegated}"
    );
    Ok(())
}

/// A uid with no entry: its Envoy gets nothing and waits; once an entry is created the
/// same Envoy gets that SVID.
async fn no_entry_then_entry(spire: &Spire, node: &NodeAgent) -> anyhow::Result<()> {
    let port = free_port()?;
    let admin = free_port()?;
    let envoy = node.envoy(
        &mtls_server(admin, port, node.sds(), &names(A.0), "from-c"),
        C.1,
    )?;
    node.wait_log("no registration entry matches this SDS caller")
        .await?;
    assert!(envoy.certificate_serials(C.0).await?.is_empty());
    spire.create_entry(C.0, &format!("unix:uid:{}", C.1), None)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while envoy.certificate_serials(C.0).await?.is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "C's Envoy never got C's SVID after its entry was created:\n{}",
            node.steeple.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Requests through the mTLS pair while SPIRE agent is down for 10 s and back: none
/// fails; then a caller Steeple has not seen before is served.
async fn agent_restart_under_load(
    spire: &mut Spire,
    node: &NodeAgent,
    client_port: u16,
) -> anyhow::Result<()> {
    let load = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, 0u32);
        let end = tokio::time::Instant::now() + Duration::from_secs(16);
        while tokio::time::Instant::now() < end {
            match http_get(client_port, "/").await {
                Ok((200, _)) => ok += 1,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (ok, failed)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    spire.stop_agent()?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    spire.start_agent()?;
    let (ok, failed) = load.await?;
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > 50, "only {ok} requests");
    let (served, stderr) = node.fetch_as(C.1, "default", 30)?;
    anyhow::ensure!(
        served,
        "no new caller served after the agent restart: {stderr}\n{}",
        node.own_log_lines()
    );
    Ok(())
}

/// `certificate: default`, validation `ROOTCA`, accepting only `peer`.
fn names(peer: &str) -> TlsNames<'_> {
    TlsNames {
        certificate: "default",
        validation: Some("ROOTCA"),
        peer_id: peer,
    }
}

/// Steeple as a node agent, its SDS socket open to every local user (the per-workload
/// roles suite runs one too).
pub(crate) struct NodeAgent {
    pub(crate) steeple: SteepleProcess,
    pub(crate) audit: PathBuf,
    pub(crate) dir: tempfile::TempDir,
}

impl NodeAgent {
    /// A's identity granted everything, every workload its own identity's names.
    fn start(spire: &Spire) -> anyhow::Result<Self> {
        let uids = [0, A.1, B.1, C.1].map(|u| u.to_string()).join(", ");
        let rules = format!(
            "[[callers]]\nuids = [{uids}]\nspiffe_ids = [\"{}\"]\nresources = [\"*\"]\n\
             [[callers]]\nuids = [{uids}]\n\
             resources = [\"default\", \"ROOTCA\", \"ALL\", \"spiffe://*\", \"jwt-svid:*\"]\n",
            A.0
        );
        Self::start_with(spire, &rules)
    }

    /// Steeple as a node agent with `rules` (`[[callers]]`, maybe none, and any other
    /// sections to add).
    pub(crate) fn start_with(spire: &Spire, rules: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("steeple-node-")
            .tempdir_in("/tmp")?;
        set_mode(dir.path(), 0o755)?;
        let steeple_dir = dir.path().join("steeple");
        std::fs::create_dir_all(&steeple_dir)?;
        set_mode(&steeple_dir, 0o755)?;
        let audit = dir.path().join("audit.jsonl");
        let envelopes = dir.path().join("envelopes");
        std::fs::create_dir_all(&envelopes)?;
        let master = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        write_rows(
            &envelopes.join("rows.json"),
            &[seal_local(&master, ENVELOPE, "", CANARY)?],
        )?;
        let config = format!(
            "[workload_api]\nmode = \"delegated\"\nadmin_socket = \"{}\"\n\
             [sds]\nsocket_mode = \"0666\"\n\
             [audit]\nsink = \"file:{}\"\n\
             [envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
             local_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n{rules}",
            spire.admin_socket().display(),
            audit.display(),
            envelopes.display(),
        );
        let steeple = SteepleProcess::run_with(
            &steeple_dir,
            spire.agent_socket(),
            &config,
            &[("STEEPLE_LOCAL_MASTER_KEY", master.as_str())],
        )?;
        Ok(Self {
            steeple,
            audit,
            dir,
        })
    }

    pub(crate) fn sds(&self) -> &Path {
        self.steeple.sds_socket()
    }

    fn envoy(&self, bootstrap: &str, uid: u32) -> anyhow::Result<Envoy> {
        Envoy::start_as_user(bootstrap, self.dir.path(), uid)
    }

    /// `sds-fetch` run as `uid` for `name`: whether it was served, and what it printed
    /// (its JSON line, or its error).
    pub(crate) fn fetch_as(
        &self,
        uid: u32,
        name: &str,
        timeout_s: u32,
    ) -> anyhow::Result<(bool, String)> {
        let timeout = timeout_s.to_string();
        let args = [self.sds().as_os_str(), name.as_ref(), timeout.as_ref()];
        let output = self.command_as(uid, "sds-fetch", &args)?.output()?;
        let printed = if output.status.success() {
            String::from_utf8_lossy(&output.stdout).into_owned()
        } else {
            String::from_utf8_lossy(&output.stderr).into_owned()
        };
        Ok((output.status.success(), printed))
    }

    /// Steeple's log without the HTTP/2 stack's lines (for failure messages).
    fn own_log_lines(&self) -> String {
        let logs = self.steeple.logs();
        let own = logs
            .lines()
            .filter(|l| !l.contains(" h2::") && !l.contains(" tower::") && !l.contains(" hyper"));
        own.collect::<Vec<_>>().join("\n")
    }

    /// One of the suite's helper binaries run as `uid` with `args`: what it printed.
    fn run_as(&self, uid: u32, bin: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<String> {
        let output = self.command_as(uid, bin, args)?.output()?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr))
    }

    /// A copy of helper binary `bin` every local user may run.
    pub(crate) fn runnable_copy(&self, bin: &str) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let built = match bin {
            "sds-fetch" => PathBuf::from(env!("CARGO_BIN_EXE_sds-fetch")),
            "sds-inherit" => PathBuf::from(env!("CARGO_BIN_EXE_sds-inherit")),
            "sds-vault-read" => PathBuf::from(env!("CARGO_BIN_EXE_sds-vault-read")),
            "steeple" => steeple_e2e::steeple::steeple_bin()?,
            "go-sdk-probe" => steeple_e2e::peers::go_imds_probe_bin()?,
            other => anyhow::bail!("no helper binary {other}"),
        };
        let copy = self.dir.path().join(format!("helper-{bin}"));
        if !copy.exists() {
            std::fs::copy(built, &copy)?;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(copy)
    }

    /// The command running helper binary `bin` (copied where `uid` may run it) as `uid`.
    pub(crate) fn command_as(
        &self,
        uid: u32,
        bin: &str,
        args: &[&std::ffi::OsStr],
    ) -> anyhow::Result<std::process::Command> {
        let copy = self.runnable_copy(bin)?;
        let mut command = std::process::Command::new("setpriv");
        command
            .args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_owned(),
            ])
            .arg(&copy)
            .args(args);
        Ok(command)
    }

    async fn wait_log(&self, text: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.steeple.logs().contains(text) {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no {text:?} in Steeple's log:\n{}",
                self.steeple.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Waits for the audit trail's denial of `resource` to a caller of `uid`.
    pub(crate) async fn wait_audited_denial(&self, uid: u32, resource: &str) -> anyhow::Result<()> {
        let caller = format!("uid={uid} ");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|e| {
                    e["decision"] == "deny"
                        && e["resource"] == resource
                        && e["caller"].as_str().is_some_and(|c| c.starts_with(&caller))
                });
            if found {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no audited denial of {resource} to uid {uid}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
