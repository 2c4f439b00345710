//! The agent's AWS side end to end: JWT-SVIDs from a real SPIRE traded for credentials at
//! moto's STS, KMS envelopes (sealed by `steeple envelope seal`) decrypted at a second
//! moto, served over SDS to a real Envoy, and the credentials handed to an unmodified
//! boto3 through `credential_process` and the container-credentials endpoint. Then
//! faults: bad envelopes, keys outside the allowlist, STS outages, short sessions with a
//! thousand consumers, and the start-time key probe.

mod consumers;
/// Shared with the IMDS suite, which starts the same AWS world.
pub(crate) mod support;

use std::time::Duration;

use steeple_e2e::bootstrap::credential_injector;
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::steeple::{malformed_rows, steeple_bin};
use steeple_e2e::suite::eventually_status;
use steeple_e2e::{Envoy, RecordingUpstream, SteepleProcess, Suite, free_port};
use support::*;

const TOKEN_PATH: &str = "upstream/api-token";
/// Another local user (`nobody`).
const NOBODY: u32 = 65534;
const BUNDLE_PATH: &str = "app/ca-bundle";
/// The account moto's STS puts in every assumed-role ARN (its default account).
const MOTO_ACCOUNT: &str = "123456789012";

/// Waits (at most 30 s) for a log line about `path` that contains `reason`: envelopes
/// are first tried before any credentials exist, so earlier lines may say something else.
async fn logged_error(steeple: &SteepleProcess, path: &str, reason: &str) -> anyhow::Result<()> {
    let field = format!("logical_path={path}");
    steeple_e2e::wait_for(
        &format!("an error naming {path} with {reason:?}"),
        Duration::from_secs(30),
        || async {
            let logs = steeple.logs();
            anyhow::ensure!(
                logs.lines()
                    .any(|l| l.contains(&field) && l.contains(reason)),
                "last lines:\n{}",
                steeple_e2e::process::tail(&logs, 10)
            );
            Ok(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_envelopes_reach_envoy_and_sdks_get_the_exchanged_credentials() -> anyhow::Result<()> {
    let world = AwsWorld::start().await?;
    let foreign = world.kms.create_key("eu-west-1").await?;

    let token = canary("kms-token", 40);
    let bundle = canary("kms-bundle", 10 * 1024);
    let good = seal(
        &world.kms,
        &world.key,
        TOKEN_PATH,
        "service=api,env=prod",
        &token,
    )?;
    let large = seal(&world.kms, &world.key, BUNDLE_PATH, "service=api", &bundle)?;
    assert!(
        large["data_key_ciphertext"].is_string(),
        "10 KiB goes through the data-key layer"
    );
    let mut mismatch = seal(
        &world.kms,
        &world.key,
        "bad/context",
        "env=dev",
        b"irrelevant-plaintext",
    )?;
    // Another context, the logical-path binding kept: KMS itself must refuse it.
    let tampered = mismatch["aad"]
        .as_str()
        .unwrap_or_default()
        .replace("env=dev", "env=prod");
    mismatch["aad"] = tampered.into();
    // The adversarial review's copy (issue 12.3): a good row under a name another caller
    // may fetch. Its context is intact, so KMS would decrypt it; the path binding refuses.
    let mut copied = good.clone();
    copied["logical_path"] = "copied/token".into();
    let outside = seal(
        &world.kms,
        &foreign,
        "bad/outside",
        "",
        b"irrelevant-outside",
    )?;
    let bad = malformed_rows(&good, "kms_envelop", 65536);
    let mut rows = vec![good.clone(), large, mismatch, outside, copied];
    rows.extend(bad.iter().map(|(row, _)| row.clone()));
    world.write_rows(&rows)?;

    let container_port = free_port()?;
    let config = world.config(container_port, "")?;
    let suite = Suite::with_spire_config("1h", &[WORKLOAD], &config)?;
    let socket = suite.steeple.sds_socket().to_owned();

    // Both envelopes resolved in memory and served by logical path.
    let served =
        sds_client::wait_for(&socket, &[TOKEN_PATH, BUNDLE_PATH], Duration::from_secs(60)).await?;
    let value = |name: &str| {
        served
            .iter()
            .find(|s| s.name == name)
            .and_then(sds_client::secret_bytes)
    };
    assert_eq!(value(TOKEN_PATH).as_deref(), Some(token.as_slice()));
    assert_eq!(value(BUNDLE_PATH).as_deref(), Some(bundle.as_slice()));

    // STS got a real RS256 JWT-SVID for the workload, and a session name derived from it.
    let calls = world.sts.requests()?;
    let assume: Vec<_> = calls
        .iter()
        .filter(|r| r.operation == "AssumeRoleWithWebIdentity")
        .collect();
    assert_eq!(assume.len(), 1, "one exchange for the whole agent");
    assert_eq!(assume[0].param("RoleArn"), Some(ROLE_ARN));
    assert_eq!(assume[0].param("RoleSessionName"), Some(SESSION_NAME));
    assert!(!assume[0].signed, "AssumeRoleWithWebIdentity is unsigned");
    let jwt = assume[0].param("WebIdentityToken").unwrap_or_default();
    let (header, claims) = jwt_parts(jwt)?;
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["sub"], WORKLOAD);
    assert_eq!(claims["aud"][0], "sts.amazonaws.com");

    // Each bad row is reported by logical path; the good ones are served regardless.
    logged_error(&suite.steeple, "bad/context", "InvalidCiphertextException").await?;
    logged_error(
        &suite.steeple,
        "copied/token",
        "sealed for logical path \"upstream/api-token\"",
    )
    .await?;
    logged_error(
        &suite.steeple,
        "bad/outside",
        "outside the KMS key allowlist",
    )
    .await?;
    for (row, reason) in &bad {
        let path = row["logical_path"].as_str().unwrap_or_default();
        logged_error(&suite.steeple, path, reason).await?;
    }

    // KMS was called only with the exchanged credentials, never for the foreign key.
    let credentials = sds_credentials(&socket).await?;
    // The account of the assumed role (moto's STS answers with its default account).
    assert_eq!(credentials.account_id.as_deref(), Some(MOTO_ACCOUNT));
    let decrypts: Vec<_> = world
        .kms
        .requests()?
        .into_iter()
        .filter(|r| r.operation == "TrentService.Decrypt")
        .collect();
    assert!(decrypts.len() >= 3, "{decrypts:?}");
    for call in &decrypts {
        assert_eq!(
            call.access_key_id.as_ref(),
            Some(&credentials.access_key_id)
        );
        assert_ne!(call.key_id.as_deref(), Some(foreign.as_str()));
    }

    // Envoy injects the decrypted token upstream.
    let upstream = RecordingUpstream::start().await?;
    let (admin, port) = (free_port()?, free_port()?);
    let _envoy = Envoy::start(
        &credential_injector(admin, port, upstream.port(), &socket, TOKEN_PATH),
        suite.dir(),
    )?;
    eventually_status(port, 200).await?;
    let bearer = format!("Bearer {}", String::from_utf8_lossy(&token));
    assert_eq!(upstream.last_header("authorization"), Some(bearer));

    // An unmodified boto3 signs with the same credentials, through credential_process…
    let aws_config = world.work.path().join("aws-config");
    std::fs::write(
        &aws_config,
        format!(
            "[profile steeple]\ncredential_process = {} aws credential-process --socket {}\n",
            steeple_bin()?.display(),
            socket.display()
        ),
    )?;
    let via_process = boto3_access_key(
        &world.kms,
        &[
            ("AWS_CONFIG_FILE", aws_config.display().to_string()),
            ("AWS_PROFILE", "steeple".into()),
        ],
    )?;
    assert_eq!(
        via_process,
        (credentials.access_key_id.clone(), MOTO_ACCOUNT.to_owned()),
        "boto3 reads AccountId from credential_process"
    );
    // …and through the container-credentials endpoint.
    let via_container = boto3_access_key(
        &world.kms,
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://127.0.0.1:{container_port}/"),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                world.token_file.display().to_string(),
            ),
        ],
    )?;
    assert_eq!(
        via_container,
        (credentials.access_key_id.clone(), MOTO_ACCOUNT.to_owned()),
        "boto3 reads AccountId from the container endpoint"
    );
    let (_, from_container) = container_credentials(container_port).await?;
    assert_eq!(
        from_container.and_then(|c| c.account_id).as_deref(),
        Some(MOTO_ACCOUNT)
    );
    let list_keys_signers: Vec<_> = world
        .kms
        .requests()?
        .into_iter()
        .filter(|r| r.operation == "TrentService.ListKeys")
        .map(|r| r.access_key_id)
        .collect();
    assert_eq!(
        list_keys_signers,
        vec![Some(credentials.access_key_id.clone()); 2]
    );
    // A caller without the token gets nothing.
    let (status, _) = steeple_e2e::http_get(container_port, "/").await?;
    assert_eq!(status, 401);
    // Another local user holding the token is refused too: the policy (by default only
    // Steeple's own uid) is checked against the process behind the loopback connection.
    let response = container_get_as(NOBODY, container_port, CONTAINER_TOKEN)?;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains(r#"\"aws-credentials\""#), "{response}");
    assert!(!response.contains(&credentials.access_key_id), "{response}");
    let denied = format!("uid={NOBODY} gid={NOBODY}");
    let logs = suite.steeple.logs();
    assert!(
        logs.lines().any(|l| l.contains("container-credentials")
            && l.contains(&denied)
            && l.contains("deny")),
        "no audit event for the refused caller:\n{logs}"
    );

    let mut secrets = vec![token, bundle, CONTAINER_TOKEN.as_bytes().to_vec()];
    secrets.extend(credentials.secrets());
    assert_not_in_logs(&secrets, &suite.steeple.logs())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_sessions_refresh_without_gaps_once_for_all_consumers_and_survive_sts_outages()
-> anyhow::Result<()> {
    let mut world = AwsWorld::start().await?;
    let token = canary("kms-outage", 48);
    world.write_rows(&[seal(
        &world.kms,
        &world.key,
        TOKEN_PATH,
        "service=api",
        &token,
    )?])?;
    let container_port = free_port()?;
    let config = world.config(container_port, "session_duration = \"20s\"\n")?;
    let suite = Suite::with_spire_config("1h", &[WORKLOAD], &config)?;
    let socket = suite.steeple.sds_socket().to_owned();
    sds_client::wait_for(&socket, &[TOKEN_PATH, CREDENTIALS], Duration::from_secs(60)).await?;

    // 1,000 SDS consumers of the credentials while two refreshes go by; the container
    // endpoint is polled throughout and must never miss.
    let fleet = consumers::Fleet::subscribe(&socket, CREDENTIALS, 1000).await?;
    let window = Duration::from_secs(32);
    let polled = consumers::poll_container(container_port, window).await?;
    let per_consumer = fleet.finish().await?;
    assert!(
        polled.failures.is_empty(),
        "container endpoint gaps: {:?}",
        polled.failures
    );
    assert!(
        polled.access_keys.len() >= 3,
        "20 s sessions over 32 s: at least two refreshes, saw {:?}",
        polled.access_keys
    );
    let exchanges = world.sts.count("AssumeRoleWithWebIdentity")?;
    assert!(
        exchanges <= polled.access_keys.len() + 1,
        "{exchanges} STS calls for {} credential sets",
        polled.access_keys.len()
    );
    for (i, keys) in per_consumer.iter().enumerate() {
        assert!(
            keys.len() >= 3,
            "consumer {i} saw only {} credential sets",
            keys.len()
        );
    }

    // STS goes away: the last credentials stay served until they expire, then are
    // withdrawn (never served stale), while the resolved envelope stays served.
    world.sts.stop()?;
    let last = container_credentials(container_port)
        .await?
        .1
        .ok_or_else(|| anyhow::anyhow!("no credentials just before the outage"))?;
    let until_expiry = last.expiration - time::OffsetDateTime::now_utc();
    let before = Duration::try_from(until_expiry - time::Duration::seconds(2)).unwrap_or_default();
    tokio::time::sleep(before).await;
    let (status, during) = container_credentials(container_port).await?;
    assert_eq!(status, 200, "still served before expiry");
    assert_eq!(
        during.map(|c| c.access_key_id),
        Some(last.access_key_id.clone())
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, _) = container_credentials(container_port).await?;
    assert_eq!(status, 503, "expired credentials are not served");
    assert!(sds_credentials(&socket).await.is_err());
    assert!(
        suite
            .steeple
            .logs()
            .contains("credentials expired before a refresh succeeded")
    );
    let served = sds_client::fetch(&mut sds_client::connect(&socket), &[TOKEN_PATH]).await?;
    assert_eq!(
        served.len(),
        1,
        "the resolved envelope outlives the credentials"
    );

    // STS is back: the exchange recovers on its own.
    world.sts.start_again().await?;
    let recovered = steeple_e2e::wait_for(
        "credentials after STS recovery",
        Duration::from_secs(45),
        || async {
            match container_credentials(container_port).await? {
                (200, Some(c)) => Ok(c),
                (status, _) => anyhow::bail!("container endpoint answered {status}"),
            }
        },
    )
    .await?;
    assert!(recovered.expiration > time::OffsetDateTime::now_utc());
    assert!(
        suite
            .steeple
            .logs()
            .contains("credential exchange recovered")
    );

    let mut secrets = vec![token, CONTAINER_TOKEN.as_bytes().to_vec()];
    secrets.extend(last.secrets());
    secrets.extend(recovered.secrets());
    assert_not_in_logs(&secrets, &suite.steeple.logs())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_probe_stops_the_agent_naming_a_key_it_may_not_use() -> anyhow::Result<()> {
    let world = AwsWorld::start().await?;
    let foreign = world.kms.create_key("eu-west-1").await?;
    world.write_rows(&[
        seal(&world.kms, &world.key, "ok/path", "", b"irrelevant-ok")?,
        seal(
            &world.kms,
            &foreign,
            "bad/outside",
            "",
            b"irrelevant-outside",
        )?,
    ])?;
    let config = world.config(free_port()?, "probe_keys = true\n")?;
    let dir = world.work.path().join("agent");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("steeple.toml"), config)?;
    // `steeple dev` (its own Workload API; moto's STS takes any token) is enough here.
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(steeple_bin()?)
            .arg("dev")
            .arg("--config")
            .arg(dir.join("steeple.toml"))
            .arg("--dir")
            .arg(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("steeple: aws.probe_keys: KMS key ")
            && last.contains(&foreign)
            && last.contains("outside the KMS key allowlist"),
        "{last}"
    );
    assert!(stderr.contains("KMS key probe passed"), "{stderr}");
    let describes: Vec<_> = world
        .kms
        .requests()?
        .into_iter()
        .filter(|r| r.operation == "TrentService.DescribeKey")
        .collect();
    assert!(
        describes
            .iter()
            .all(|r| r.key_id.as_deref() != Some(foreign.as_str())),
        "no call for a key outside the allowlist"
    );
    Ok(())
}
