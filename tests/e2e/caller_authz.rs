//! Per-caller authorization through real Envoys running as another local user. Steeple
//! (as root, the test's uid) serves two envelopes; `[[callers]]` grants `nobody` only
//! `payments/*`. An Envoy run as `nobody` gets `payments/api-token` and injects it
//! upstream; a second one, also `nobody`, asking for `admin/root-token` is refused — the
//! upstream never sees that secret, and Steeple audits the denial with the caller's uid
//! and the resource — while root (Steeple's own uid, per its rule) still fetches it.
//! The audit trail goes to its own file (`[audit] sink`): the grant, the denial and both
//! resolves are there as JSON lines, none in the operational log, no secret in either.
//! Needs root (to run as `nobody`).

use std::time::Duration;

use base64::Engine as _;
use steeple_e2e::bootstrap::credential_injector;
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::steeple::{seal_local, write_rows};
use steeple_e2e::{Envoy, RecordingUpstream, SteepleProcess, free_port};

const NOBODY: u32 = 65534;
const GRANTED: &str = "payments/api-token";
const DENIED: &str = "admin/root-token";
const CANARY_GRANTED: &str = "canary-authz-payments-0001";
const CANARY_DENIED: &str = "canary-authz-admin-0001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_gets_only_what_its_rule_grants() -> anyhow::Result<()> {
    anyhow::ensure!(
        rustix::process::geteuid().is_root(),
        "this suite runs Envoys as nobody and needs root"
    );
    let dir = tempfile::Builder::new()
        .prefix("steeple-authz-")
        .tempdir_in("/tmp")?;
    // nobody must reach the SDS socket (and the Envoy binary) under it.
    set_mode(dir.path(), 0o755)?;
    let envelopes = dir.path().join("envelopes");
    std::fs::create_dir_all(&envelopes)?;
    let master = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    write_rows(
        &envelopes.join("rows.json"),
        &[
            seal_local(&master, GRANTED, "", CANARY_GRANTED)?,
            seal_local(&master, DENIED, "", CANARY_DENIED)?,
        ],
    )?;
    let audit_file = dir.path().join("audit.jsonl");
    let config = format!(
        "[audit]\nsink = \"file:{}\"\n\
         [sds]\nsocket_mode = \"0666\"\n\
         [[callers]]\nuids = [0]\nresources = [\"*\"]\n\
         [[callers]]\nuids = [{NOBODY}]\nresources = [\"payments/*\"]\n\
         [envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
         local_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n",
        audit_file.display(),
        envelopes.display()
    );
    let steeple_dir = dir.path().join("steeple");
    std::fs::create_dir_all(&steeple_dir)?;
    set_mode(&steeple_dir, 0o755)?;
    let steeple = SteepleProcess::dev_with(
        &steeple_dir,
        &config,
        &[("STEEPLE_LOCAL_MASTER_KEY", master.as_str())],
    )?;
    // Root, Steeple's own uid, is granted everything.
    let served = sds_client::wait_for(
        steeple.sds_socket(),
        &[GRANTED, DENIED],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(served.len(), 2);

    let granted = injector_as_nobody(&steeple, dir.path(), GRANTED).await?;
    let denied = injector_as_nobody(&steeple, dir.path(), DENIED).await?;

    // The granted Envoy injects its secret.
    let expected = format!("Bearer {CANARY_GRANTED}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while granted.2.last_header("authorization").as_deref() != Some(expected.as_str()) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the Envoy run as nobody never injected {GRANTED}:\n{}",
            steeple.logs()
        );
        let _ = steeple_e2e::http_get(granted.1, "/").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The denied one: refused by Steeple, audited, and nothing reaches its upstream.
    let nobody = format!("uid={NOBODY} ");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let denial = loop {
        let events = audit_events(&audit_file)?;
        if let Some(event) = events.iter().find(|e| {
            e["decision"] == "deny"
                && e["resource"] == DENIED
                && e["caller"].as_str().is_some_and(|c| c.starts_with(&nobody))
        }) {
            break event.to_string();
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no audited denial of {DENIED} for uid {NOBODY} in {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for _ in 0..8 {
        let _ = steeple_e2e::http_get(denied.1, "/").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let leaked = denied.2.requests().iter().any(|r| {
        r.header("authorization")
            .is_some_and(|v| v.contains(CANARY_DENIED))
    });
    assert!(!leaked, "the denied secret reached the upstream");
    assert!(!denial.contains(CANARY_DENIED), "{denial}");

    let events = audit_events(&audit_file)?;
    let granted_event = events.iter().any(|e| {
        e["message"] == "sds"
            && e["decision"] == "grant"
            && e["resource"] == GRANTED
            && e["caller"].as_str().is_some_and(|c| c.starts_with(&nobody))
    });
    assert!(granted_event, "no audited grant of {GRANTED} to nobody");
    for path in [GRANTED, DENIED] {
        let resolved = events.iter().any(|e| {
            e["message"] == "resolve"
                && e["logical_path"] == path
                && e["provider"] == "local"
                && e["outcome"] == "ok"
        });
        assert!(resolved, "no audited resolve of {path}");
    }
    let logs = steeple.logs();
    assert!(
        !logs.contains("steeple::audit"),
        "audit events in the operational log"
    );
    let audit_text = std::fs::read_to_string(&audit_file)?;
    let canaries = [CANARY_GRANTED.into(), CANARY_DENIED.into()];
    assert_not_in_logs(&canaries, &logs)?;
    assert_not_in_logs(&canaries, &audit_text)?;
    drop((granted, denied));
    Ok(())
}

/// An Envoy run as `nobody`, injecting generic secret `name` into requests on its port.
async fn injector_as_nobody(
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
    let envoy = Envoy::start_as_user(&bootstrap, dir, NOBODY)?;
    Ok((envoy, port, upstream))
}

/// Every audit event written so far (each line must be a JSON object).
fn audit_events(file: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

fn set_mode(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
