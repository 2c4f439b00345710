//! `vault_delegate` envelopes: the envelope names a KV secret (path, optional namespace,
//! mount and version) and the field to serve; the resolver reads it with the keeper's
//! token and serves that one field.

use std::sync::Arc;

use serde_json::Value;
use steeple_plugin_api::{
    BoxFuture, EnvelopeResolver, Provider, ResolveError, Resolved, SealedEnvelope, SecretBytes,
    VaultAllowlist, VaultTarget,
};

use crate::client::{Call, VaultClient, VaultError, encode_path};
use crate::token::{TokenSource, denial_error};
use crate::zeroize_json;

/// Which KV secrets engine version the mounts speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvVersion {
    /// KV v1: `GET <mount>/<path>` → `data`.
    V1,
    /// KV v2 (the default): `GET <mount>/data/<path>[?version=N]` → `data.data`.
    #[default]
    V2,
}

impl KvVersion {
    /// `1` or `2`, as written in configuration.
    pub fn from_number(version: u8) -> Option<Self> {
        match version {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }
}

/// A KV secret reference split into its mount and the path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPath {
    /// The secrets engine mount, e.g. `secret`.
    pub mount: String,
    /// The secret's path inside the mount, e.g. `payments/db`.
    pub path: String,
}

impl KvPath {
    /// Splits `key_id`: its first segment is the mount, unless `mount` is given, in which
    /// case all of `key_id` is the path inside that mount.
    pub fn split(key_id: &str, mount: Option<&str>) -> Result<Self, String> {
        let key_id = key_id.trim_matches('/');
        let (mount, path) = match mount.map(|m| m.trim_matches('/')) {
            Some(mount) => (mount, key_id),
            None => key_id.split_once('/').unwrap_or((key_id, "")),
        };
        if mount.is_empty() {
            return Err("the Vault mount is empty".to_owned());
        }
        if path.is_empty() {
            return Err(format!(
                "key_id {key_id:?} names no secret inside mount {mount:?} (expected <mount>/<path>, e.g. secret/payments/db)"
            ));
        }
        Ok(Self {
            mount: mount.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The API path (after `/v1/`) that reads this secret, with a pinned `version`.
    pub fn api_path(&self, kv: KvVersion, version: Option<u64>) -> Result<String, String> {
        let (mount, path) = (encode_path(&self.mount), encode_path(&self.path));
        match (kv, version) {
            (KvVersion::V2, None) => Ok(format!("{mount}/data/{path}")),
            (KvVersion::V2, Some(v)) => Ok(format!("{mount}/data/{path}?version={v}")),
            (KvVersion::V1, None) => Ok(format!("{mount}/{path}")),
            (KvVersion::V1, Some(_)) => {
                Err("a version pin needs KV v2, but this resolver reads KV v1".to_owned())
            }
        }
    }
}

impl std::fmt::Display for KvPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.mount, self.path)
    }
}

/// Resolves `vault_delegate` envelopes from a KV secrets engine.
#[derive(Debug, Clone)]
pub struct VaultKvResolver {
    client: VaultClient,
    tokens: Arc<dyn TokenSource>,
    kv: KvVersion,
    allowlist: Arc<VaultAllowlist>,
}

impl VaultKvResolver {
    /// A resolver reading KV `kv` mounts through `client` with tokens from `tokens`, for
    /// the secrets `allowlist` covers only (others are refused with no call made).
    pub fn new(
        client: VaultClient,
        tokens: Arc<dyn TokenSource>,
        kv: KvVersion,
        allowlist: Arc<VaultAllowlist>,
    ) -> Self {
        Self {
            client,
            tokens,
            kv,
            allowlist,
        }
    }

    async fn read(&self, envelope: &SealedEnvelope) -> Result<Resolved, ResolveError> {
        let fail = |problem: String| {
            ResolveError::Undecryptable(format!("envelope {:?}: {problem}", envelope.logical_path))
        };
        let vault = &envelope.vault;
        let field = vault
            .field
            .as_deref()
            .ok_or_else(|| fail("no field named (vault_delegate serves one field)".into()))?;
        let secret = KvPath::split(&envelope.key_id, vault.mount.as_deref()).map_err(fail)?;
        let namespace = vault.namespace.as_deref().or(self.client.namespace());
        self.allowlist
            .check(&VaultTarget {
                namespace,
                mount: &secret.mount,
                path: &secret.path,
            })
            .map_err(|problem| {
                ResolveError::Refused(format!("envelope {:?}: {problem}", envelope.logical_path))
            })?;
        let api_path = secret.api_path(self.kv, vault.version).map_err(fail)?;
        let token = self.tokens.token().ok_or_else(|| {
            ResolveError::Unavailable("no valid Vault token yet (login pending or failing)".into())
        })?;
        let sent = self
            .client
            .send(Call {
                method: reqwest::Method::GET,
                path: &api_path,
                namespace,
                token: Some(&token),
                body: None,
            })
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) if e.status() == Some(403) => {
                let verdict = self.tokens.denied(&token).await;
                let what = secret.to_string();
                return Err(denial_error(
                    verdict,
                    &what,
                    kv_error(&e, &secret, vault.version),
                ));
            }
            Err(e) => return Err(kv_error(&e, &secret, vault.version)),
        };
        let mut json: Value = serde_json::from_slice(&answer.body)
            .map_err(|_| ResolveError::Unavailable(format!("{secret}: answer is not JSON")))?;
        let result = pick_field(&json, self.kv, &secret, field).map_err(fail);
        zeroize_json(&mut json);
        Ok(Resolved {
            plaintext: result?,
            key_id: format!("vault-kv:{secret}"),
        })
    }
}

/// The field's value: strings as their UTF-8 bytes, anything else as compact JSON.
fn pick_field(
    json: &Value,
    kv: KvVersion,
    secret: &KvPath,
    field: &str,
) -> Result<SecretBytes, String> {
    let data = match kv {
        KvVersion::V1 => json.get("data"),
        KvVersion::V2 => json.get("data").and_then(|d| d.get("data")),
    };
    let Some(Value::Object(data)) = data else {
        return Err(format!(
            "{secret} holds no data (deleted or destroyed version?)"
        ));
    };
    match data.get(field) {
        Some(Value::String(text)) => Ok(SecretBytes::copy_from(text.as_bytes())),
        Some(other) => {
            let mut bytes = serde_json::to_vec(other).unwrap_or_default();
            let secret = SecretBytes::copy_from(&bytes);
            zeroize::Zeroize::zeroize(&mut bytes);
            Ok(secret)
        }
        None => {
            let fields: Vec<&str> = data.keys().map(String::as_str).collect();
            Err(format!(
                "field {field:?} not found in {secret} (its fields: {})",
                fields.join(", ")
            ))
        }
    }
}

/// Maps a failed read: 404 and 403 are upstream answers (a 403 the keeper finds to be a
/// dead token is retried instead, see [`denial_error`]), unreachable or 5xx is retryable.
fn kv_error(e: &VaultError, secret: &KvPath, version: Option<u64>) -> ResolveError {
    if e.is_transient() {
        return ResolveError::Unavailable(format!("reading {secret}: {e}"));
    }
    let at = match version {
        Some(v) => format!("{secret} (version {v})"),
        None => secret.to_string(),
    };
    let detail = e.vault_errors();
    match e.status() {
        Some(404) if detail.contains("namespace") => {
            ResolveError::Upstream(format!("secret not found at {at}: {detail}"))
        }
        Some(404) => ResolveError::Upstream(format!("secret not found at {at}")),
        Some(403) => ResolveError::Upstream(format!("permission denied on {at}")),
        _ => ResolveError::Upstream(format!("reading {at}: {e}")),
    }
}

impl EnvelopeResolver for VaultKvResolver {
    fn provider(&self) -> Provider {
        Provider::VaultDelegate
    }

    fn resolve<'a>(
        &'a self,
        envelope: &'a SealedEnvelope,
    ) -> BoxFuture<'a, Result<Resolved, ResolveError>> {
        Box::pin(self.read(envelope))
    }
}

#[cfg(test)]
#[path = "kv_tests.rs"]
mod tests;
