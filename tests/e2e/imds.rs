//! The IMDSv2 emulation end to end: JWT-SVIDs from a real SPIRE traded at moto's STS,
//! then two unmodified SDKs of different languages — boto3 (Python, the peers' venv) and
//! aws-sdk-go-v2 (Go, tests/e2e/sdk/go_imds_probe) — find the credentials only through
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` and sign an STS GetCallerIdentity with them, which
//! moto answers with the assumed role's session. Then the refusals on the wire: no token,
//! a token another process minted, a proxied request, another local user; and no secret
//! in Steeple's logs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use steeple_e2e::http::{self, HttpResponse};
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::{Suite, free_port};

use super::aws_envelopes::support::{
    AwsWorld, CREDENTIALS, SESSION_NAME, SeenCredentials, WORKLOAD, request_from_child,
};

/// The account moto's STS puts in every assumed-role ARN (its default account).
const MOTO_ACCOUNT: &str = "123456789012";
/// Another local user (`nobody`).
const NOBODY: u32 = 65534;
const TOKEN_PATH: &str = "/latest/api/token";
const LIST: &str = "/latest/meta-data/iam/security-credentials/";
const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";

/// What a probe printed: the access key id it signed with, the account id the
/// credentials carried ("None" without one), the provider that supplied them, and the
/// caller ARN STS answered.
#[derive(Debug)]
struct ProbeOutput {
    access_key_id: String,
    account_id: String,
    provider: String,
    caller_arn: String,
}

/// Runs `command` with only `PATH`, AWS files pointing nowhere and the IMDS endpoint at
/// `imds_port`, so the SDK can find credentials nowhere else.
fn run_probe(mut command: Command, imds_port: u16) -> anyhow::Result<ProbeOutput> {
    let output = command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{imds_port}"),
        )
        .output()
        .with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{:?} failed: {}",
        command.get_program(),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let [access_key_id, account_id, provider, caller_arn] = lines.as_slice() else {
        anyhow::bail!("expected four lines from the probe, got {stdout:?}");
    };
    Ok(ProbeOutput {
        access_key_id: (*access_key_id).to_owned(),
        account_id: (*account_id).to_owned(),
        provider: (*provider).to_owned(),
        caller_arn: (*caller_arn).to_owned(),
    })
}

/// boto3 (tests/e2e/sdk/boto3_probe.py in the peers' venv): KMS ListKeys at `world`'s
/// KMS, then GetCallerIdentity at its STS.
fn boto3(world: &AwsWorld, imds_port: u16) -> anyhow::Result<ProbeOutput> {
    let python = steeple_e2e::moto::moto_server_bin()?.with_file_name("python");
    let mut command = Command::new(python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/sdk/boto3_probe.py"))
        .arg(world.kms.endpoint())
        .arg(world.sts.endpoint());
    run_probe(command, imds_port)
}

/// aws-sdk-go-v2 (built by tests/peers/install-go-imds-probe.sh): GetCallerIdentity at
/// `world`'s STS.
fn go_sdk(world: &AwsWorld, imds_port: u16) -> anyhow::Result<ProbeOutput> {
    let mut command = Command::new(steeple_e2e::peers::go_imds_probe_bin()?);
    command.arg(world.sts.endpoint());
    run_probe(command, imds_port)
}

/// A session token minted for this (the test) process.
async fn token(port: u16) -> anyhow::Result<String> {
    let response = http::request(port, "PUT", TOKEN_PATH, &[(TTL_HEADER, "60")]).await?;
    anyhow::ensure!(response.status == 200, "PUT token: {response:?}");
    Ok(response.body)
}

async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<HttpResponse> {
    http::request(port, "GET", path, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_the_go_sdk_get_credentials_through_imds_and_refusals_hold() -> anyhow::Result<()>
{
    let world = AwsWorld::start().await?;
    let port = free_port()?;
    let config = world.config(
        free_port()?,
        &format!("imds_listen = \"127.0.0.1:{port}\"\n"),
    )?;
    let suite = Suite::with_spire_config("1h", &[WORKLOAD], &config)?;
    let socket = suite.steeple.sds_socket().to_owned();
    let served = sds_client::wait_for(&socket, &[CREDENTIALS], Duration::from_secs(60)).await?;
    let credentials = served
        .first()
        .and_then(sds_client::secret_bytes)
        .context("the credentials are not a generic secret")?;
    let credentials = SeenCredentials::parse(&credentials)?;

    // Two SDKs in two languages, unmodified, signing with what IMDS served them: moto's
    // STS names the assumed role's session (the workload's SPIFFE ID) as the caller.
    let python = boto3(&world, port)?;
    let go = go_sdk(&world, port)?;
    for (sdk, seen, provider) in [
        ("boto3", &python, "iam-role"),
        ("aws-sdk-go-v2", &go, "EC2RoleProvider"),
    ] {
        assert_eq!(seen.access_key_id, credentials.access_key_id, "{sdk}");
        assert_eq!(seen.provider, provider, "{sdk}: {seen:?}");
        assert!(
            seen.caller_arn
                .starts_with(&format!("arn:aws:sts::{MOTO_ACCOUNT}:assumed-role/"))
                && seen.caller_arn.ends_with(&format!("/{SESSION_NAME}")),
            "{sdk}: {seen:?}"
        );
    }
    // Neither SDK reads AccountId from IMDS yet (botocore 1.44 and aws-sdk-go-v2 1.48 use
    // the legacy path and fields); Steeple serves it, and an SDK that reads it must see the
    // assumed role's account.
    for seen in [&python, &go] {
        assert!(
            ["None", MOTO_ACCOUNT].contains(&seen.account_id.as_str()),
            "{seen:?}"
        );
    }

    // The wire: no token (IMDSv1) is 401; a proxied request is 403 even with a token.
    assert_eq!(get(port, LIST, &[]).await?.status, 401);
    let mine = token(port).await?;
    let listed = get(port, LIST, &[(TOKEN_HEADER, &mine)]).await?;
    assert_eq!((listed.status, listed.body.as_str()), (200, "payments-api"));
    let role = get(
        port,
        &format!("{LIST}payments-api"),
        &[(TOKEN_HEADER, &mine)],
    )
    .await?;
    let served: serde_json::Value = serde_json::from_str(&role.body)?;
    assert_eq!(
        (&served["Code"], &served["Type"], &served["AccountId"]),
        (&"Success".into(), &"AWS-HMAC".into(), &MOTO_ACCOUNT.into())
    );
    let proxied = [
        (TOKEN_HEADER, mine.as_str()),
        ("X-Forwarded-For", "10.1.2.3"),
    ];
    let response = get(port, &format!("{LIST}payments-api"), &proxied).await?;
    assert_eq!(response.status, 403, "{response:?}");
    assert!(!response.body.contains(&credentials.access_key_id));

    // A token is good only for the process that got it, both ways round.
    let get_mine = format!(
        "GET {LIST}payments-api HTTP/1.1\r\nHost: x\r\n{TOKEN_HEADER}: {mine}\r\nConnection: close\r\n\r\n"
    );
    let response = request_from_child(None, port, &get_mine)?;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(!response.contains(&credentials.access_key_id), "{response}");
    let put = format!(
        "PUT {TOKEN_PATH} HTTP/1.1\r\nHost: x\r\n{TTL_HEADER}: 60\r\nConnection: close\r\n\r\n"
    );
    let theirs = request_from_child(None, port, &put)?;
    let (head, their_token) = theirs.split_once("\r\n\r\n").context("no HTTP answer")?;
    let their_token = their_token.trim();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let response = get(port, LIST, &[(TOKEN_HEADER, their_token)]).await?;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(get(port, LIST, &[(TOKEN_HEADER, &mine)]).await?.status, 200);

    // Another local user is refused a token by the policy (by default Steeple's own uid
    // only), and the refusal is an audit event naming it.
    let response = request_from_child(Some(NOBODY), port, &put)?;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains("\"aws-credentials\""), "{response}");
    let denied = format!("uid={NOBODY} gid={NOBODY}");
    let logs = suite.steeple.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("imds") && l.contains(&denied) && l.contains("deny")),
        "no audit event for the refused caller:\n{logs}"
    );

    // Neither the credentials nor any session token reached the logs.
    let mut secrets = credentials.secrets();
    secrets.push(mine.into_bytes());
    secrets.push(their_token.as_bytes().to_vec());
    assert_not_in_logs(&secrets, &suite.steeple.logs())?;
    Ok(())
}
