//! `vault_transit` envelopes: `vault:vN:…` ciphertext decrypted by a transit key, either
//! the payload itself or — for payloads above [`TRANSIT_DIRECT_MAX`] — a transit-wrapped
//! data key that opens an AES-256-GCM payload (the same data-key layer as KMS).
//!
//! The envelope's encryption context goes to Vault as `context` (base64 of its canonical
//! `k=v,k=v` text), which derived keys require and other keys ignore. Rotating the key in
//! Vault keeps old ciphertexts resolving: each carries its key version.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::Value;
use steeple_plugin_api::aead::{self, KEY_LEN};
use steeple_plugin_api::{
    BoxFuture, EncryptionContext, EnvelopeResolver, EnvelopeRow, Provider, ResolveError, Resolved,
    SealedEnvelope, SecretBytes, VaultAllowlist, VaultTarget, bind_logical_path, format_aad,
};
use zeroize::{Zeroize as _, Zeroizing};

use crate::client::{Call, VaultClient, VaultError, encode_path, json_body};
use crate::token::{TokenSource, denial_error};
use crate::zeroize_json;

/// The transit mount when an envelope names none.
pub const DEFAULT_TRANSIT_MOUNT: &str = "transit";

/// Largest plaintext [`seal_with_transit`] sends to Vault to encrypt directly; above it,
/// a data key is generated and the payload sealed locally.
pub const TRANSIT_DIRECT_MAX: usize = 32 * 1024;

/// The `context` Vault gets for `context`: base64 of its `k=v,k=v` text, or nothing for
/// an empty context.
pub fn transit_context(context: &EncryptionContext) -> Option<String> {
    (!context.is_empty()).then(|| STANDARD.encode(format_aad(context)))
}

/// Resolves `vault_transit` envelopes.
#[derive(Debug, Clone)]
pub struct VaultTransitResolver {
    client: VaultClient,
    tokens: Arc<dyn TokenSource>,
    default_mount: String,
    allowlist: Arc<VaultAllowlist>,
}

#[derive(Serialize)]
struct DecryptBody<'a> {
    ciphertext: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

/// One transit key: where it is mounted, its name, the namespace it lives in.
struct TransitKey<'a> {
    mount: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

impl std::fmt::Display for TransitKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.mount, self.name)
    }
}

impl VaultTransitResolver {
    /// A resolver decrypting through `client` with tokens from `tokens`, with the transit
    /// keys `allowlist` covers only (others are refused with no call made).
    pub fn new(
        client: VaultClient,
        tokens: Arc<dyn TokenSource>,
        allowlist: Arc<VaultAllowlist>,
    ) -> Self {
        Self {
            client,
            tokens,
            default_mount: DEFAULT_TRANSIT_MOUNT.to_owned(),
            allowlist,
        }
    }

    /// Uses `mount` for envelopes that name none (default [`DEFAULT_TRANSIT_MOUNT`]).
    pub fn with_default_mount(mut self, mount: &str) -> Self {
        self.default_mount = mount.trim_matches('/').to_owned();
        self
    }

    async fn open(&self, envelope: &SealedEnvelope) -> Result<Resolved, ResolveError> {
        let path = &envelope.logical_path;
        let key = TransitKey {
            mount: envelope
                .vault
                .mount
                .as_deref()
                .map_or(self.default_mount.as_str(), |m| m.trim_matches('/')),
            name: envelope.key_id.trim_matches('/'),
            namespace: envelope
                .vault
                .namespace
                .as_deref()
                .or(self.client.namespace()),
        };
        self.allow(&key)
            .map_err(|problem| ResolveError::Refused(format!("envelope {path:?}: {problem}")))?;
        let token = self.tokens.token().ok_or_else(|| {
            ResolveError::Unavailable("no valid Vault token yet (login pending or failing)".into())
        })?;
        let plaintext = match &envelope.data_key {
            None => {
                let text = transit_text(path, "ciphertext_ref", &envelope.ciphertext)?;
                self.decrypt(&token, &key, text, &envelope.context).await?
            }
            Some(wrapped) => {
                let text = transit_text(path, "data_key_ciphertext", wrapped)?;
                let dek = self.decrypt(&token, &key, text, &envelope.context).await?;
                if dek.len() != KEY_LEN {
                    return Err(ResolveError::Undecryptable(format!(
                        "envelope {path:?}: the data key is {} bytes, not {KEY_LEN}",
                        dek.len()
                    )));
                }
                let aad = aead::associated_data(path, &envelope.context);
                aead::open(dek.expose(), &aad, &envelope.ciphertext)
                    .map_err(|e| ResolveError::Undecryptable(format!("envelope {path:?}: {e}")))?
            }
        };
        Ok(Resolved {
            plaintext,
            key_id: format!("vault-transit:{key}"),
        })
    }

    /// A transit key name is one segment; the (namespace, mount, key) must be allowed.
    fn allow(&self, key: &TransitKey<'_>) -> Result<(), String> {
        if key.name.contains('/') {
            return Err(format!(
                "transit key name {:?} has a '/' (key_id names one key of the mount)",
                key.name
            ));
        }
        self.allowlist.check(&VaultTarget {
            namespace: key.namespace,
            mount: key.mount,
            path: key.name,
        })
    }

    /// `POST <mount>/decrypt/<key>` → the base64-decoded plaintext.
    async fn decrypt(
        &self,
        token: &SecretBytes,
        key: &TransitKey<'_>,
        ciphertext: &str,
        context: &EncryptionContext,
    ) -> Result<SecretBytes, ResolveError> {
        let api_path = format!(
            "{}/decrypt/{}",
            encode_path(key.mount),
            encode_path(key.name)
        );
        let body = json_body(&DecryptBody {
            ciphertext,
            context: transit_context(context),
        });
        let sent = self
            .client
            .send(Call {
                method: reqwest::Method::POST,
                path: &api_path,
                namespace: key.namespace,
                token: Some(token),
                body: Some(body),
            })
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) if e.status() == Some(403) => {
                let verdict = self.tokens.denied(token).await;
                let what = format!("transit key {key}");
                return Err(denial_error(
                    verdict,
                    &what,
                    transit_error(&e, &key.to_string()),
                ));
            }
            Err(e) => return Err(transit_error(&e, &key.to_string())),
        };
        let mut json: Value = serde_json::from_slice(&answer.body).map_err(|_| {
            ResolveError::Unavailable(format!("decrypting with {key}: answer is not JSON"))
        })?;
        let plaintext =
            decode_field(&json, "plaintext").map(|bytes| SecretBytes::copy_from(&bytes));
        zeroize_json(&mut json);
        plaintext.map_err(|problem| {
            ResolveError::Unavailable(format!("decrypting with {key}: {problem}"))
        })
    }
}

/// The `vault:vN:` text of a transit ciphertext, checked again here because a
/// `SealedEnvelope` need not come from `EnvelopeRow::validate`.
fn transit_text<'a>(
    logical_path: &str,
    field: &str,
    bytes: &'a [u8],
) -> Result<&'a str, ResolveError> {
    let bad = || {
        ResolveError::Undecryptable(format!(
            "envelope {logical_path:?}: {field} does not start with vault:v<N>:"
        ))
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
    let (version, body) = text
        .strip_prefix("vault:v")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(bad)?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) || body.is_empty() {
        return Err(bad());
    }
    Ok(text)
}

/// `data.<field>` of an answer, base64-decoded into a zeroizing buffer.
fn decode_field(json: &Value, field: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = json
        .get("data")
        .and_then(|d| d.get(field))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no data.{field} in the answer"))?;
    STANDARD
        .decode(text)
        .map(Zeroizing::new)
        .map_err(|_| format!("data.{field} is not base64"))
}

/// Maps a failed transit call. 400 is Vault saying the ciphertext does not decrypt as
/// given (wrong key, context, tampered, version too new), except a missing key.
fn transit_error(e: &VaultError, key: &str) -> ResolveError {
    if e.is_transient() {
        return ResolveError::Unavailable(format!("decrypting with {key}: {e}"));
    }
    let detail = e.vault_errors();
    match e.status() {
        Some(400) if detail.contains("not found") => {
            ResolveError::Upstream(format!("transit key {key}: {detail}"))
        }
        Some(400) => ResolveError::Undecryptable(format!("transit key {key}: {detail}")),
        Some(403) => ResolveError::Upstream(format!("permission denied on transit key {key}")),
        _ => ResolveError::Upstream(format!("decrypting with {key}: {e}")),
    }
}

impl EnvelopeResolver for VaultTransitResolver {
    fn provider(&self) -> Provider {
        Provider::VaultTransit
    }

    fn resolve<'a>(
        &'a self,
        envelope: &'a SealedEnvelope,
    ) -> BoxFuture<'a, Result<Resolved, ResolveError>> {
        Box::pin(self.open(envelope))
    }
}

#[derive(Serialize)]
struct EncryptBody<'a> {
    plaintext: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

#[derive(Serialize)]
struct DataKeyBody {
    bits: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

/// Seals `plaintext` as a `vault_transit` row for `logical_path` and `context` with
/// transit key `key` at `mount`, in the client's namespace: encrypted by Vault directly
/// up to [`TRANSIT_DIRECT_MAX`] bytes, else under a fresh data key from
/// `<mount>/datakey/plaintext/<key>` with the payload sealed locally (AES-256-GCM). The
/// logical path is bound into the context ([`bind_logical_path`]).
pub async fn seal_with_transit(
    client: &VaultClient,
    token: &SecretBytes,
    mount: &str,
    key: &str,
    logical_path: &str,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<EnvelopeRow, VaultError> {
    let mount = mount.trim_matches('/');
    let context =
        &bind_logical_path(context, logical_path).map_err(|problem| VaultError::Request {
            path: format!("{mount}/encrypt/{key}"),
            problem,
        })?;
    let mut row = EnvelopeRow {
        logical_path: logical_path.to_owned(),
        provider: Provider::VaultTransit.as_str().to_owned(),
        key_id: key.to_owned(),
        aad: format_aad(context),
        namespace: client.namespace().map(str::to_owned),
        mount: (mount != DEFAULT_TRANSIT_MOUNT).then(|| mount.to_owned()),
        ..EnvelopeRow::default()
    };
    if plaintext.len() <= TRANSIT_DIRECT_MAX {
        let mut encoded = Zeroizing::new(STANDARD.encode(plaintext));
        let body = json_body(&EncryptBody {
            plaintext: &encoded,
            context: transit_context(context),
        });
        encoded.zeroize();
        let path = format!("{}/encrypt/{}", encode_path(mount), encode_path(key));
        let json = post_json(client, token, &path, body).await?;
        row.ciphertext_ref = text_field(&json, &path, "ciphertext")?;
        return Ok(row);
    }
    let path = format!(
        "{}/datakey/plaintext/{}",
        encode_path(mount),
        encode_path(key)
    );
    let body = json_body(&DataKeyBody {
        bits: 256,
        context: transit_context(context),
    });
    let mut json = post_json(client, token, &path, body).await?;
    let wrapped = text_field(&json, &path, "ciphertext");
    let dek = decode_field(&json, "plaintext");
    zeroize_json(&mut json);
    let malformed = |problem: String| VaultError::Malformed {
        path: path.clone(),
        problem,
    };
    let dek = dek.map_err(malformed)?;
    let aad = aead::associated_data(logical_path, context);
    let payload = aead::seal(&dek, &aad, plaintext).map_err(|e| malformed(e.to_string()))?;
    row.ciphertext_ref = STANDARD.encode(payload);
    row.data_key_ciphertext = Some(wrapped?);
    Ok(row)
}

async fn post_json(
    client: &VaultClient,
    token: &SecretBytes,
    path: &str,
    body: Zeroizing<Vec<u8>>,
) -> Result<Value, VaultError> {
    let answer = client
        .send(Call {
            method: reqwest::Method::POST,
            path,
            namespace: None,
            token: Some(token),
            body: Some(body),
        })
        .await?;
    serde_json::from_slice(&answer.body).map_err(|_| VaultError::Malformed {
        path: path.to_owned(),
        problem: "answer is not JSON".to_owned(),
    })
}

fn text_field(json: &Value, path: &str, field: &str) -> Result<String, VaultError> {
    json.get("data")
        .and_then(|d| d.get(field))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| VaultError::Malformed {
            path: path.to_owned(),
            problem: format!("no data.{field} in the answer"),
        })
}

#[cfg(test)]
#[path = "transit_tests.rs"]
mod tests;
