//! Revocation in `self` mode: the workload's registration entry is deleted on a real SPIRE
//! server, SPIRE agent ends Steeple's Workload API stream with `PermissionDenied`, and
//! Steeple withdraws the identity at once — within the agent's sync interval, not when the
//! SVID expires an hour later — with an audit event; it keeps retrying, so the entry
//! created again is served again without a restart.

use std::time::Duration;

use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::suite::uid_selector;
use steeple_e2e::{Spire, SpireOptions, SteepleProcess};

const ID: &str = "spiffe://example.org/revoked";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_entry_withdraws_the_identity_and_a_new_one_brings_it_back() -> anyhow::Result<()>
{
    let spire = Spire::start(SpireOptions::default())?;
    let entry = spire.create_entry(ID, &uid_selector(), None)?;
    let dir = tempfile::Builder::new()
        .prefix("steeple-revoke-")
        .tempdir_in("/tmp")?;
    let audit = dir.path().join("audit.jsonl");
    let config = format!("[audit]\nsink = \"file:{}\"\n", audit.display());
    let steeple = SteepleProcess::run(&dir.path().join("steeple"), spire.agent_socket(), &config)?;
    let served = sds_client::wait_for(
        steeple.sds_socket(),
        &["default", ID],
        Duration::from_secs(30),
    )
    .await?;
    let keys: Vec<Vec<u8>> = served.iter().filter_map(sds_client::secret_bytes).collect();

    spire.delete_entry(&entry)?;
    let deleted = tokio::time::Instant::now();
    let mut client = sds_client::connect(steeple.sds_socket());
    while sds_client::fetch(&mut client, &["default"]).await.is_ok() {
        anyhow::ensure!(
            deleted.elapsed() < Duration::from_secs(15),
            "the SVID is still served 15 s after its entry was deleted:\n{}",
            steeple.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = sds_client::fetch(&mut client, &[ID]).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("not available"),
        "{refused:#}"
    );
    let trail = std::fs::read_to_string(&audit).unwrap_or_default();
    anyhow::ensure!(
        trail
            .lines()
            .any(|l| l.contains("\"revoked\"") && l.contains(ID)),
        "no audited revocation of {ID}:\n{trail}"
    );

    spire.create_entry(ID, &uid_selector(), None)?;
    sds_client::wait_for(
        steeple.sds_socket(),
        &["default", ID],
        Duration::from_secs(30),
    )
    .await?;
    assert_not_in_logs(&keys, &steeple.logs())?;
    assert_not_in_logs(&keys, &trail)?;
    eprintln!(
        "revocation: withdrawn {:?} after the entry was deleted",
        deleted.elapsed()
    );
    Ok(())
}
