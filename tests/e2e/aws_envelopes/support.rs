//! What the AWS agent suite shares: sealing with the real `steeple envelope seal`, the
//! agent's `[aws]` config against two moto servers (STS, KMS), reading credentials back
//! from SDS and the container endpoint, and running boto3.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use base64::Engine as _;
use steeple_e2e::moto::{DUMMY_ACCESS_KEY, Moto};
use steeple_e2e::sds_client;

/// The workload's SPIFFE ID (SPIRE entry) and the STS session name derived from it.
pub const WORKLOAD: &str = "spiffe://example.org/payments/api";
pub const SESSION_NAME: &str = "example.org-payments-api";
/// The role the agent assumes (moto accepts any).
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/payments-api";
/// The SDS name of the credentials (the default).
pub const CREDENTIALS: &str = "aws-credentials";
/// The token SDK callers send to the container endpoint.
pub const CONTAINER_TOKEN: &str = "container-endpoint-token-3f9a";

/// `steeple envelope seal --provider kms_envelope` against `kms`, with the operator's own
/// (dummy) credentials, `plaintext` on stdin.
pub fn seal(
    kms: &Moto,
    key: &str,
    path: &str,
    aad: &str,
    plaintext: &[u8],
) -> anyhow::Result<serde_json::Value> {
    let configure = |command: &mut Command| {
        command
            .args(["--provider", "kms_envelope"])
            .args(["--key-id", key, "--kms-endpoint", &kms.endpoint()])
            .args(["--logical-path", path, "--aad", aad])
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", DUMMY_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", "operator-secret")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    };
    steeple_e2e::seal(configure, plaintext)
}

/// Writes `rows` to `file` atomically (write, then rename), as config management would.
fn write_rows(file: &Path, rows: &[serde_json::Value]) -> anyhow::Result<()> {
    let temp = file.with_extension("tmp");
    std::fs::write(&temp, serde_json::to_vec(rows)?)?;
    std::fs::rename(&temp, file)?;
    Ok(())
}

/// `arn:aws:kms:<region>:<account>:` of `key_arn`: the allowlist prefix for its account.
fn account_prefix(key_arn: &str) -> anyhow::Result<String> {
    let (prefix, _) = key_arn
        .split_once("key/")
        .with_context(|| format!("{key_arn} is not a key ARN"))?;
    Ok(prefix.to_owned())
}

/// What every AWS test starts from: moto for STS and another for KMS (so STS can be
/// stopped alone), a key in us-east-1, an envelope directory and the container
/// endpoint's token file, all under one temp dir.
pub struct AwsWorld {
    pub sts: Moto,
    pub kms: Moto,
    /// A key whose account and region are allowlisted.
    pub key: String,
    pub envelopes: PathBuf,
    pub token_file: PathBuf,
    pub work: tempfile::TempDir,
}

impl AwsWorld {
    pub async fn start() -> anyhow::Result<Self> {
        let sts = Moto::start().await?;
        let kms = Moto::start().await?;
        let key = kms.create_key("us-east-1").await?;
        let work = tempfile::Builder::new()
            .prefix("steeple-aws-")
            .tempdir_in("/tmp")?;
        let envelopes = work.path().join("envelopes");
        std::fs::create_dir_all(&envelopes)?;
        let token_file = work.path().join("container-token");
        std::fs::write(&token_file, CONTAINER_TOKEN)?;
        Ok(Self {
            sts,
            kms,
            key,
            envelopes,
            token_file,
            work,
        })
    }

    /// The agent config: envelopes from the directory, STS and KMS at the two motos, the
    /// key's account allowlisted, the container endpoint on `container_port`, plus `extra`
    /// keys for `[aws]`.
    pub fn config(&self, container_port: u16, extra_aws: &str) -> anyhow::Result<String> {
        Ok(format!(
            "[envelopes]\nenabled = true\npaths = [\"{envelopes}\"]\npoll_interval = \"200ms\"\n\
             max_ciphertext_bytes = 65536\n\
             [aws]\nenabled = true\nrole_arn = \"{ROLE_ARN}\"\nsts_endpoint = \"{sts}\"\n\
             kms_endpoint = \"{kms}\"\nkey_arn_allowlist = [\"{allow}\"]\n\
             container_credentials_listen = \"127.0.0.1:{container_port}\"\n\
             container_credentials_token_file = \"{token}\"\n{extra_aws}",
            envelopes = self.envelopes.display(),
            sts = self.sts.endpoint(),
            kms = self.kms.endpoint(),
            allow = account_prefix(&self.key)?,
            token = self.token_file.display(),
        ))
    }

    /// Writes `rows` as the envelope file.
    pub fn write_rows(&self, rows: &[serde_json::Value]) -> anyhow::Result<()> {
        write_rows(&self.envelopes.join("rows.json"), rows)
    }
}

/// Credentials as an SDK reads them (credential_process or container JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: time::OffsetDateTime,
    /// `AccountId`, when the agent knew it.
    pub account_id: Option<String>,
}

impl SeenCredentials {
    /// Parses either JSON shape (`SessionToken` or `Token`).
    pub fn parse(json: &[u8]) -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(json)?;
        let text = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("no {name} in the credentials"))
        };
        let expiration = time::OffsetDateTime::parse(
            &text("Expiration")?,
            &time::format_description::well_known::Rfc3339,
        )?;
        Ok(Self {
            access_key_id: text("AccessKeyId")?,
            secret_access_key: text("SecretAccessKey")?,
            session_token: text("SessionToken").or_else(|_| text("Token"))?,
            expiration,
            account_id: text("AccountId").ok(),
        })
    }

    /// The secret parts, for the canary check.
    pub fn secrets(&self) -> Vec<Vec<u8>> {
        vec![
            self.secret_access_key.clone().into_bytes(),
            self.session_token.clone().into_bytes(),
        ]
    }
}

/// The credentials the agent serves over SDS.
pub async fn sds_credentials(socket: &Path) -> anyhow::Result<SeenCredentials> {
    let served = sds_client::fetch(&mut sds_client::connect(socket), &[CREDENTIALS]).await?;
    let first = served.first().context("no credentials served")?;
    SeenCredentials::parse(&sds_client::secret_bytes(first).context("not a generic secret")?)
}

/// `GET /` on the container endpoint with the right token: status and credentials.
pub async fn container_credentials(port: u16) -> anyhow::Result<(u16, Option<SeenCredentials>)> {
    let response =
        steeple_e2e::http::request(port, "GET", "/", &[("Authorization", CONTAINER_TOKEN)]).await?;
    let credentials = match response.status {
        200 => Some(SeenCredentials::parse(response.body.as_bytes())?),
        _ => None,
    };
    Ok((response.status, credentials))
}

/// The Python of the peers' venv (where moto and boto3 live).
fn venv_python() -> anyhow::Result<std::path::PathBuf> {
    let moto = steeple_e2e::moto::moto_server_bin()?;
    Ok(moto.with_file_name("python"))
}

/// Runs an unmodified boto3 (tests/e2e/sdk/boto3_probe.py) with only `env` (plus PATH)
/// set, calling KMS ListKeys at `kms`; returns the access key id it signed with and the
/// account id boto3 read with the credentials ("None" without one).
pub fn boto3_access_key(kms: &Moto, env: &[(&str, String)]) -> anyhow::Result<(String, String)> {
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/sdk/boto3_probe.py");
    let output = Command::new(venv_python()?)
        .arg(probe)
        .arg(kms.endpoint())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let mut lines = stdout.lines().map(str::trim);
    let access_key = lines.next().context("boto3 printed nothing")?.to_owned();
    let account_id = lines
        .next()
        .context("boto3 printed no account id")?
        .to_owned();
    Ok((access_key, account_id))
}

/// `GET /` on the container endpoint at `port` with `token`, sent by another local user
/// (`uid`); the raw HTTP response.
pub fn container_get_as(uid: u32, port: u16, token: &str) -> anyhow::Result<String> {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    request_from_child(Some(uid), port, &request)
}

/// One raw HTTP/1.1 request to 127.0.0.1:`port` sent by another process — bash's
/// `/dev/tcp`, as user `uid` through `setpriv` when given. bash reads the answer with its
/// own `read`: a program exec'd after connecting would be refused as another program.
/// The raw response.
pub fn request_from_child(uid: Option<u32>, port: u16, request: &str) -> anyhow::Result<String> {
    let script = "exec 3<>/dev/tcp/127.0.0.1/$1 && printf '%b' \"$2\" >&3 && \
         while IFS= read -r line <&3 || [[ -n $line ]]; do printf '%s\\n' \"$line\"; done";
    let mut command = match uid {
        Some(uid) => {
            let mut setpriv = Command::new("setpriv");
            setpriv
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--", "bash"]);
            setpriv
        }
        None => Command::new("bash"),
    };
    let output = command
        .args(["-c", script, "request"])
        .arg(port.to_string())
        .arg(request.replace("\r\n", "\\r\\n"))
        .output()
        .context("running bash")?;
    anyhow::ensure!(
        output.status.success(),
        "the request from another process failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The claims of the JWT in `token` (not verified: STS did that).
pub fn jwt_parts(token: &str) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    let mut parts = token.split('.');
    let mut decode = |what: &str| -> anyhow::Result<serde_json::Value> {
        let part = parts.next().with_context(|| format!("no JWT {what}"))?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part)?;
        Ok(serde_json::from_slice(&json)?)
    };
    Ok((decode("header")?, decode("claims")?))
}

/// A random-looking printable canary of `len` bytes.
pub fn canary(tag: &str, len: usize) -> Vec<u8> {
    let mut bytes = format!("canary-{tag}-").into_bytes();
    let mut state: u32 = 0x9e37_79b9 ^ len as u32;
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        bytes.push(b'a' + (state % 26) as u8);
    }
    bytes
}
