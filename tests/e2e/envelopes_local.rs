//! Envelopes end to end with the dev-only `local` provider: rows sealed by
//! `steeple envelope seal`, read from a hot-reloaded directory, resolved in memory and
//! served over SDS, where Envoy's credential-injector filter sends one upstream.
//! Malformed rows are refused by logical path while the rest keep being served.

use std::time::Duration;

use base64::Engine as _;
use steeple_e2e::bootstrap::credential_injector;
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::steeple::{malformed_rows, seal_local as seal, write_rows};
use steeple_e2e::suite::eventually_status;
use steeple_e2e::{Envoy, RecordingUpstream, SteepleProcess, free_port};

const TOKEN_PATH: &str = "upstream/api-token";
const CANARY_1: &str = "canary-envelope-token-0001";
const CANARY_2: &str = "canary-envelope-token-0002";
const CANARY_DB: &str = "canary-envelope-db-password";

/// Rows that must each be refused with a reason naming their logical path: the shared
/// malformed ones plus an AAD mismatch.
fn refused_rows(master: &str) -> anyhow::Result<Vec<(serde_json::Value, String)>> {
    let good = seal(master, "bad/aad", "env=dev", "irrelevant-plaintext-1")?;
    let mut rows = malformed_rows(&good, "rot13", 4096);
    // Sealed for env=dev, presented with env=prod: the AEAD refuses it.
    let mut tampered = seal(master, "bad/context", "env=dev", "irrelevant-plaintext-2")?;
    tampered["aad"] = "env=prod".into();
    rows.push((tampered, "cannot decrypt".to_owned()));
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_envelopes_reach_envoy_and_bad_rows_are_refused_by_path() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-env-")
        .tempdir_in("/tmp")?;
    let envelopes = dir.path().join("envelopes");
    std::fs::create_dir_all(&envelopes)?;
    let master = base64::engine::general_purpose::STANDARD.encode(rand_bytes()?);
    let good_file = envelopes.join("good.json");
    write_rows(
        &good_file,
        &[
            seal(&master, TOKEN_PATH, "service=api", CANARY_1)?,
            seal(&master, "db/password", "", CANARY_DB)?,
        ],
    )?;
    let bad = refused_rows(&master)?;
    let bad_rows: Vec<_> = bad.iter().map(|(row, _)| row.clone()).collect();
    write_rows(&envelopes.join("bad.json"), &bad_rows)?;

    let config = format!(
        "[envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
         max_ciphertext_bytes = 4096\nlocal_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n",
        envelopes.display()
    );
    let steeple = SteepleProcess::dev_with(
        &dir.path().join("steeple"),
        &config,
        &[("STEEPLE_LOCAL_MASTER_KEY", master.as_str())],
    )?;

    // Served over SDS by logical path.
    let served = sds_client::wait_for(
        steeple.sds_socket(),
        &["db/password"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(
        sds_client::secret_bytes(&served[0]).unwrap_or_default(),
        CANARY_DB.as_bytes()
    );

    // Envoy sends the token upstream.
    let upstream = RecordingUpstream::start().await?;
    let (admin, port) = (free_port()?, free_port()?);
    let _envoy = Envoy::start(
        &credential_injector(
            admin,
            port,
            upstream.port(),
            steeple.sds_socket(),
            TOKEN_PATH,
        ),
        dir.path(),
    )?;
    eventually_status(port, 200).await?;
    assert_eq!(
        upstream.last_header("authorization"),
        Some(format!("Bearer {CANARY_1}"))
    );

    // Each malformed row is refused, naming its logical path and the reason.
    for (row, reason) in &bad {
        let path = row["logical_path"].as_str().unwrap_or_default();
        let logs = steeple.logs();
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("logical_path={path}")) && l.contains("refused"));
        let line = line.ok_or_else(|| anyhow::anyhow!("no refusal logged for {path}"))?;
        assert!(
            line.contains(reason),
            "{path}: expected {reason:?} in {line}"
        );
    }

    // Hot reload: a re-sealed value is pushed to Envoy without a restart.
    write_rows(
        &good_file,
        &[
            seal(&master, TOKEN_PATH, "service=api", CANARY_2)?,
            seal(&master, "db/password", "", CANARY_DB)?,
        ],
    )?;
    let bearer_2 = format!("Bearer {CANARY_2}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        steeple_e2e::http_get(port, "/").await?;
        if upstream.last_header("authorization").as_deref() == Some(bearer_2.as_str()) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "new value never reached Envoy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken file is reported and its last good rows stay served.
    std::fs::write(&good_file, "[{ this is not json")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(steeple.logs().contains("envelope file refused"));
    steeple_e2e::http_get(port, "/").await?;
    assert_eq!(upstream.last_header("authorization"), Some(bearer_2));
    let served = sds_client::fetch(
        &mut sds_client::connect(steeple.sds_socket()),
        &["db/password"],
    )
    .await?;
    assert_eq!(served.len(), 1);

    assert_not_in_logs(
        &[
            CANARY_1.into(),
            CANARY_2.into(),
            CANARY_DB.into(),
            master.into_bytes(),
        ],
        &steeple.logs(),
    )?;
    Ok(())
}

fn rand_bytes() -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))?;
    Ok(key)
}
