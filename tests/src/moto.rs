//! A real moto server (AWS STS and KMS) on loopback in a temp dir: stoppable and
//! restartable on the same port to stage an outage, with helpers to create KMS keys and
//! aliases and to encrypt with a context.
//!
//! Requests are counted with moto's own request recorder (`MOTO_ENABLE_RECORDING`): moto
//! appends every request it serves, headers and body, to `requests.jsonl` in the temp dir
//! before handling it. [`Moto::requests`] reads that file back, so a test can prove that a
//! call was, or was not, made, with nothing between the client and moto.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;

use crate::process::{ChildProcess, free_port, wait_for};
use crate::{http, peers};

/// How long moto gets to answer HTTP after starting (it imports every service).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The dummy credentials the helpers sign with (moto checks no signature).
pub const DUMMY_ACCESS_KEY: &str = "test";

/// The `moto_server` binary: `$STEEPLE_MOTO_SERVER_BIN`; else `moto_server` next to
/// `$STEEPLE_ENVOY_BIN` (both come from the venv `tests/peers/install-envoy.sh` builds);
/// else the default cache path.
pub fn moto_server_bin() -> anyhow::Result<PathBuf> {
    if std::env::var_os("STEEPLE_MOTO_SERVER_BIN").is_none()
        && let Some(envoy) = std::env::var_os("STEEPLE_ENVOY_BIN")
        && let Some(dir) = Path::new(&envoy).parent()
        && dir.join("moto_server").is_file()
    {
        return Ok(dir.join("moto_server"));
    }
    peers::moto_server_bin()
}

/// One request moto served, from its recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MotoRequest {
    /// The operation: the `X-Amz-Target` header for JSON protocols (KMS:
    /// `TrentService.Decrypt`), else the `Action` form parameter for query protocols (STS:
    /// `AssumeRoleWithWebIdentity`); empty for anything else.
    pub operation: String,
    /// Whether it carried an `Authorization` header (a SigV4 signature).
    pub signed: bool,
    /// The access key id it was signed with (from the SigV4 `Credential=` scope).
    pub access_key_id: Option<String>,
    /// Form parameters of a query-protocol body, decoded, in order.
    pub form: Vec<(String, String)>,
    /// `KeyId` of a JSON-protocol body (KMS), if it named one.
    pub key_id: Option<String>,
}

impl MotoRequest {
    /// The first form parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running moto server. Dropping it stops it; its state (keys, aliases) lives in memory
/// and is gone after [`Moto::stop`].
#[derive(Debug)]
pub struct Moto {
    // Declared before `dir`: the process stops before its directory goes.
    process: ChildProcess,
    dir: tempfile::TempDir,
    port: u16,
}

impl Moto {
    /// Starts `moto_server -H 127.0.0.1 -p <free port>` in a fresh temp dir and returns
    /// once it answers HTTP (at most 60 s).
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("steeple-moto-")
            .tempdir()
            .context("creating moto's temp dir")?;
        let port = free_port()?;
        let process = spawn(dir.path(), port)?;
        let moto = Self { process, dir, port };
        moto.wait_ready().await?;
        Ok(moto)
    }

    /// `http://127.0.0.1:<port>`, for the SDKs' endpoint override.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops moto (SIGTERM, then SIGKILL): nothing listens on the port until
    /// [`Moto::start_again`]. Blocks for at most the process stop timeout.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.process.stop()?;
        Ok(())
    }

    /// Starts moto again on the same port, with empty state, and waits until it answers.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.process = spawn(self.dir.path(), self.port)?;
        self.wait_ready().await
    }

    /// Everything moto logged so far (across restarts).
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// Every request moto served since it first started, oldest first.
    pub fn requests(&self) -> anyhow::Result<Vec<MotoRequest>> {
        let path = recording(self.dir.path());
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(parse_recorded)
            .collect()
    }

    /// How many requests for `operation` (see [`MotoRequest::operation`]) moto served.
    pub fn count(&self, operation: &str) -> anyhow::Result<usize> {
        Ok(self
            .requests()?
            .iter()
            .filter(|r| r.operation == operation)
            .count())
    }

    /// An SDK configuration signing with dummy static credentials, for `region`.
    pub fn sdk_config(&self, region: &str) -> aws_config::SdkConfig {
        let credentials = Credentials::new(DUMMY_ACCESS_KEY, "test", None, None, "moto-dummy");
        aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build()
    }

    /// A KMS client for `region` pointed at moto.
    pub fn kms_client(&self, region: &str) -> aws_sdk_kms::Client {
        let config = aws_sdk_kms::config::Builder::from(&self.sdk_config(region))
            .endpoint_url(self.endpoint())
            // moto is plain HTTP on loopback; the SDK has no default client in this build.
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    /// Creates a symmetric key in `region`; returns its ARN.
    pub async fn create_key(&self, region: &str) -> anyhow::Result<String> {
        let output = self
            .kms_client(region)
            .create_key()
            .description("steeple e2e")
            .send()
            .await
            .context("moto CreateKey")?;
        output
            .key_metadata
            .and_then(|m| m.arn)
            .context("moto CreateKey returned no ARN")
    }

    /// Creates `alias/<name>` for `key_arn` (in the key's region); returns the alias ARN.
    pub async fn create_alias(&self, key_arn: &str, name: &str) -> anyhow::Result<String> {
        let (prefix, _) = key_arn
            .split_once(":key/")
            .with_context(|| format!("{key_arn} is not a key ARN"))?;
        let region = prefix
            .split(':')
            .nth(3)
            .context("no region in the key ARN")?;
        self.kms_client(region)
            .create_alias()
            .alias_name(format!("alias/{name}"))
            .target_key_id(key_arn)
            .send()
            .await
            .context("moto CreateAlias")?;
        Ok(format!("{prefix}:alias/{name}"))
    }

    /// KMS `Encrypt` of `plaintext` under `key_arn` (key or alias ARN) and `context`.
    pub async fn encrypt(
        &self,
        key_arn: &str,
        plaintext: &[u8],
        context: &BTreeMap<String, String>,
    ) -> anyhow::Result<Vec<u8>> {
        let region = key_arn.split(':').nth(3).context("no region in the ARN")?;
        let output = self
            .kms_client(region)
            .encrypt()
            .key_id(key_arn)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(Some(context.clone().into_iter().collect()))
            .send()
            .await
            .context("moto Encrypt")?;
        Ok(output
            .ciphertext_blob
            .context("moto Encrypt returned no ciphertext")?
            .into_inner())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let port = self.port;
        let ready = wait_for("moto to answer HTTP", START_TIMEOUT, || async move {
            let (status, _) = http::get(port, "/moto-api/").await?;
            anyhow::ensure!(status == 200, "moto answered {status}");
            Ok(())
        })
        .await;
        ready.with_context(|| format!("moto logs:\n{}", crate::process::tail(&self.logs(), 30)))
    }
}

fn recording(dir: &Path) -> PathBuf {
    dir.join("requests.jsonl")
}

fn spawn(dir: &Path, port: u16) -> anyhow::Result<ChildProcess> {
    let mut command = Command::new(moto_server_bin()?);
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir)
        .env("MOTO_ENABLE_RECORDING", "true")
        .env("MOTO_RECORDER_FILEPATH", recording(dir));
    ChildProcess::spawn("moto", command, dir)
}

/// One recorder line: `{"headers": {...}, "method", "url", "body", "body_encoded"}`.
fn parse_recorded(line: &str) -> anyhow::Result<MotoRequest> {
    let entry: serde_json::Value = serde_json::from_str(line).context("moto recorder line")?;
    let header = |name: &str| {
        entry["headers"].as_object().and_then(|headers| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
        })
    };
    let body_text = entry["body"].as_str().unwrap_or_default();
    let body = if entry["body_encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(body_text)
            .context("moto recorder body")?
    } else {
        body_text.as_bytes().to_vec()
    };
    let is_form = header("content-type").is_some_and(|t| t.contains("x-www-form-urlencoded"));
    let form = if is_form {
        parse_form(&String::from_utf8_lossy(&body))
    } else {
        Vec::new()
    };
    let action = form
        .iter()
        .find(|(n, _)| n == "Action")
        .map(|(_, v)| v.clone());
    Ok(MotoRequest {
        operation: header("x-amz-target")
            .map(str::to_owned)
            .or(action)
            .unwrap_or_default(),
        signed: header("authorization").is_some(),
        access_key_id: header("authorization").and_then(signing_key_id),
        form,
        key_id: serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|json| json["KeyId"].as_str().map(str::to_owned)),
    })
}

/// `AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/aws4_request, …`.
fn signing_key_id(authorization: &str) -> Option<String> {
    let (_, scope) = authorization.split_once("Credential=")?;
    scope.split('/').next().map(str::to_owned)
}

/// `a=b&c=d%2Fe` → pairs, percent- and `+`-decoded.
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_recorder_lines() {
        let form = base64::engine::general_purpose::STANDARD
            .encode("Action=AssumeRoleWithWebIdentity&RoleSessionName=a%2Fb+c&DurationSeconds=900");
        let sts = format!(
            r#"{{"headers": {{"Content-Type": "application/x-www-form-urlencoded"}}, "method": "POST", "url": "/", "body": "{form}", "body_encoded": true}}"#
        );
        let request = parse_recorded(&sts).unwrap();
        assert_eq!(request.operation, "AssumeRoleWithWebIdentity");
        assert!(!request.signed);
        assert_eq!(request.param("RoleSessionName"), Some("a/b c"));
        assert_eq!(request.param("DurationSeconds"), Some("900"));

        let kms = r#"{"headers": {"X-Amz-Target": "TrentService.Decrypt", "Authorization": "AWS4-HMAC-SHA256 x"}, "method": "POST", "url": "/", "body": "{}", "body_encoded": false}"#;
        let request = parse_recorded(kms).unwrap();
        assert_eq!(request.operation, "TrentService.Decrypt");
        assert!(request.signed);
        assert_eq!(request.access_key_id, None, "no Credential= scope");
        assert!(request.form.is_empty());
        assert_eq!(
            signing_key_id(
                "AWS4-HMAC-SHA256 Credential=ASIA1/20260101/us-east-1/kms/aws4_request, X=y"
            ),
            Some("ASIA1".to_owned())
        );
    }
}
