//! What the Vault envelope suite needs beyond the harness: SPIRE's JWT signing keys as
//! PEM for OpenBao's JWT auth, OpenBao configured from the shipped `deploy/vault/` files,
//! envelope rows (sealed with `steeple envelope seal`), and polling helpers over SDS,
//! Envoy and Steeple's log.

use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use steeple_e2e::openbao::{Admin, JwtKeys, OpenBao};
use steeple_e2e::{RecordingUpstream, Spire, SteepleProcess, sds_client};

/// The workload: the SPIFFE ID `deploy/vault/jwt-role.json` binds.
pub const WORKLOAD: &str = "spiffe://example.org/payments-api";
/// The JWT auth role (as in `deploy/steeple-vault.toml`).
pub const ROLE: &str = "payments-api";
/// The transit key `deploy/vault/policy.hcl` allows.
pub const TRANSIT_KEY: &str = "payments-api";
/// The policy name `deploy/vault/jwt-role.json` attaches.
const POLICY: &str = "steeple-payments-api";

/// The SPIRE server's JWT-SVID signing keys (`bundle show -format spiffe`), as PEM.
pub fn spire_jwt_keys(spire: &Spire) -> anyhow::Result<Vec<String>> {
    let bundle: serde_json::Value =
        serde_json::from_str(&spire.server_cli(&["bundle", "show", "-format", "spiffe"])?)
            .context("parsing the SPIFFE bundle")?;
    let keys = bundle["keys"].as_array().context("bundle has no keys")?;
    let pems: Vec<String> = keys
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .map(rsa_jwk_to_pem)
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!pems.is_empty(), "SPIRE's bundle holds no jwt-svid key");
    Ok(pems)
}

/// An RSA JWK as a PEM SubjectPublicKeyInfo.
fn rsa_jwk_to_pem(jwk: &serde_json::Value) -> anyhow::Result<String> {
    anyhow::ensure!(jwk["kty"] == "RSA", "JWT key is not RSA: {}", jwk["kty"]);
    let part = |name: &str| -> anyhow::Result<Vec<u8>> {
        let text = jwk[name]
            .as_str()
            .with_context(|| format!("JWK lacks {name}"))?;
        Ok(URL_SAFE_NO_PAD.decode(text)?)
    };
    let public_key = der(
        0x30,
        &[der_integer(&part("n")?), der_integer(&part("e")?)].concat(),
    );
    let rsa_encryption = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let bit_string = der(0x03, &[&[0u8][..], &public_key].concat());
    let spki = der(0x30, &[der(0x30, &rsa_encryption), bit_string].concat());
    let body = STANDARD.encode(spki);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    Ok(format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    ))
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_integer(unsigned: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = unsigned.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    der(0x02, &content)
}

/// Configures one namespace of OpenBao (`admin`'s) as an operator following
/// `deploy/vault/` would: JWT auth trusting SPIRE's keys, the shipped policy, the shipped
/// role (with token TTL `token_ttl`) and transit with the workload's key. KV v2 at
/// `secret/` is the caller's (the root namespace has it already).
pub fn configure(admin: &Admin, spire_keys: Vec<String>, token_ttl: &str) -> anyhow::Result<()> {
    admin.enable_jwt_auth("jwt", &JwtKeys::Pubkeys(spire_keys), None)?;
    admin.write_policy(POLICY, include_str!("../../../deploy/vault/policy.hcl"))?;
    let mut role: serde_json::Value =
        serde_json::from_str(include_str!("../../../deploy/vault/jwt-role.json"))?;
    role["token_ttl"] = token_ttl.into();
    admin.write_json(&format!("auth/jwt/role/{ROLE}"), &role)?;
    admin.enable_transit("transit")?;
    admin.create_transit_key("transit", TRANSIT_KEY, false)
}

/// `steeple envelope seal --provider vault_transit` with the operator's (root) token in
/// `VAULT_TOKEN` and `plaintext` on stdin.
pub fn seal_transit(
    bao: &OpenBao,
    path: &str,
    plaintext: &str,
) -> anyhow::Result<serde_json::Value> {
    seal_transit_in(bao, None, TRANSIT_KEY, path, plaintext)
}

/// [`seal_transit`] with transit key `key` of `namespace`, trusting the server's CA if it
/// has one.
pub fn seal_transit_in(
    bao: &OpenBao,
    namespace: Option<&str>,
    key: &str,
    path: &str,
    plaintext: &str,
) -> anyhow::Result<serde_json::Value> {
    let configure = |command: &mut Command| {
        command
            .args(["--provider", "vault_transit", "--key-id", key])
            .args(["--logical-path", path])
            .env("VAULT_ADDR", bao.addr())
            .env("VAULT_TOKEN", bao.root_token())
            .env_remove("VAULT_NAMESPACE")
            .env_remove("VAULT_CACERT");
        if let Some(namespace) = namespace {
            command.env("VAULT_NAMESPACE", namespace);
        }
        if let Some(ca) = bao.ca_file() {
            command.env("VAULT_CACERT", ca);
        }
    };
    steeple_e2e::seal(configure, plaintext.as_bytes())
}

/// A `vault_delegate` row serving `field` of KV secret `key_id`.
pub fn kv_row(path: &str, key_id: &str, field: Option<&str>) -> serde_json::Value {
    let mut row = serde_json::json!({
        "logical_path": path, "provider": "vault_delegate", "key_id": key_id,
    });
    if let Some(field) = field {
        row["field"] = field.into();
    }
    row
}

/// Polls until `check` passes, at most `timeout`; the error says what was awaited.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The generic secret `name` Steeple serves right now, if any.
pub async fn served(steeple: &SteepleProcess, name: &str) -> Option<Vec<u8>> {
    let mut client = sds_client::connect(steeple.sds_socket());
    let secrets = sds_client::fetch(&mut client, &[name]).await.ok()?;
    secrets.first().and_then(sds_client::secret_bytes)
}

/// Waits until a request through the Envoy on `port` reaches `upstream` with
/// `Authorization: Bearer <value>`.
pub async fn injected(
    port: u16,
    upstream: &RecordingUpstream,
    value: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let expected = format!("Bearer {value}");
    eventually(
        &format!("Envoy on {port} injecting the new value"),
        timeout,
        || async {
            steeple_e2e::http_get(port, "/").await?;
            Ok(upstream.last_header("authorization").as_deref() == Some(expected.as_str()))
        },
    )
    .await
}

/// The line of Steeple's log that refuses `logical_path`.
pub fn refusal(logs: &str, logical_path: &str) -> Option<String> {
    logs.lines()
        .find(|l| l.contains(&format!("logical_path={logical_path} ")) && l.contains("refused"))
        .map(str::to_owned)
}

/// The accessor of the token of the latest "logged in to vault" event.
pub fn last_accessor(logs: &str) -> Option<String> {
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains("logged in to vault"))?;
    let rest = line.split("accessor=").nth(1)?;
    Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
}
