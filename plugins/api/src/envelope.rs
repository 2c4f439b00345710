//! The envelope model: metadata only (never plaintext), in the field names of the control
//! plane's `/v1/crypto/envelope-secrets` rows so its JSON reads as is.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Which provider resolves an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// AWS KMS `Decrypt` (optionally of a data key, see [`SealedEnvelope::data_key`]).
    KmsEnvelope,
    /// A Vault KV secret the envelope points at.
    VaultDelegate,
    /// Vault transit `decrypt`.
    VaultTransit,
    /// Dev only: AES-256-GCM under a master key from the environment.
    Local,
}

impl Provider {
    /// Every provider, for error messages.
    pub const ALL: [Provider; 4] = [
        Self::KmsEnvelope,
        Self::VaultDelegate,
        Self::VaultTransit,
        Self::Local,
    ];

    /// The wire name (`kms_envelope`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KmsEnvelope => "kms_envelope",
            Self::VaultDelegate => "vault_delegate",
            Self::VaultTransit => "vault_transit",
            Self::Local => "local",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One envelope row as stored by the control plane or written in an envelope file.
/// Unknown fields (ids, timestamps) are ignored.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnvelopeRow {
    /// Operator-chosen label; also the SDS resource name. Not a secret.
    pub logical_path: String,
    /// `kms_envelope`, `vault_delegate`, `vault_transit` or `local`.
    pub provider: String,
    /// The key that sealed the ciphertext (a KMS key ARN, a transit key, a local key id).
    #[serde(default)]
    pub key_id: String,
    /// Base64 ciphertext: the KMS `CiphertextBlob`, or with a data key the AES-256-GCM
    /// payload (nonce ‖ ciphertext ‖ tag).
    #[serde(default)]
    pub ciphertext_ref: String,
    /// Encryption context as `k=v,k=v` (may be empty).
    #[serde(default)]
    pub aad: String,
    /// Base64 data key wrapped by `key_id`, when the payload is sealed with a data key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_key_ciphertext: Option<String>,
    /// Vault: the namespace (`X-Vault-Namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Vault: the secrets engine mount (default: the first segment of a KV path, or
    /// `transit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// `vault_delegate`: the field of the secret's data to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `vault_delegate`: pin a KV v2 version (a number or a numeric string).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "number_or_string"
    )]
    pub version: Option<u64>,
}

/// Accepts `3` and `"3"` (control planes differ).
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Version {
        Number(u64),
        Text(String),
    }
    match Option::<Version>::deserialize(d)? {
        None => Ok(None),
        Some(Version::Number(n)) => Ok(Some(n)),
        Some(Version::Text(t)) if t.is_empty() => Ok(None),
        Some(Version::Text(t)) => t
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("version is not a number")),
    }
}

/// Where a Vault envelope points, beyond `key_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultRef {
    /// `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// The secrets engine mount.
    pub mount: Option<String>,
    /// `vault_delegate`: the data field to serve.
    pub field: Option<String>,
    /// `vault_delegate`: a pinned KV v2 version.
    pub version: Option<u64>,
}

impl fmt::Debug for EnvelopeRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopeRow")
            .field("logical_path", &self.logical_path)
            .field("provider", &self.provider)
            .field("key_id", &self.key_id)
            .field(
                "ciphertext_ref",
                &format_args!("<{} chars>", self.ciphertext_ref.len()),
            )
            .field("aad", &self.aad)
            .finish_non_exhaustive()
    }
}

/// An encryption context: exact, case-sensitive key/value pairs, kept sorted.
pub type EncryptionContext = BTreeMap<String, String>;

/// An envelope that passed validation, its binary fields decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedEnvelope {
    /// The label it is served under.
    pub logical_path: String,
    /// Who resolves it.
    pub provider: Provider,
    /// The sealing key.
    pub key_id: String,
    /// Decoded ciphertext (see [`EnvelopeRow::ciphertext_ref`]).
    pub ciphertext: Vec<u8>,
    /// Parsed `aad`.
    pub context: EncryptionContext,
    /// Decoded wrapped data key, if the payload uses the data-key layer. For
    /// `vault_transit` it is the `vault:vN:…` text.
    pub data_key: Option<Vec<u8>>,
    /// Vault references (empty for other providers).
    pub vault: VaultRef,
}

impl fmt::Debug for SealedEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedEnvelope")
            .field("logical_path", &self.logical_path)
            .field("provider", &self.provider)
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .field("context", &self.context)
            .field("data_key", &self.data_key.is_some())
            .field("vault", &self.vault)
            .finish()
    }
}

/// Why an envelope row was refused. Every message names the logical path and never
/// carries ciphertext or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("envelope {logical_path:?}: {problem}")]
pub struct EnvelopeError {
    /// The row's `logical_path` (`<empty>` when it had none).
    pub logical_path: String,
    /// What is wrong.
    pub problem: String,
}

/// Most bytes a logical path may have (it is also an SDS resource name).
pub const MAX_LOGICAL_PATH_LEN: usize = 512;

impl EnvelopeRow {
    /// Checks every field and decodes the binary ones. `max_ciphertext_bytes` bounds the
    /// decoded ciphertext and data key.
    pub fn validate(&self, max_ciphertext_bytes: usize) -> Result<SealedEnvelope, EnvelopeError> {
        let fail = |problem: String| EnvelopeError {
            logical_path: if self.logical_path.is_empty() {
                "<empty>".to_owned()
            } else {
                self.logical_path
                    .chars()
                    .take(MAX_LOGICAL_PATH_LEN)
                    .collect()
            },
            problem,
        };
        check_logical_path(&self.logical_path).map_err(fail)?;
        let provider = Provider::parse(&self.provider).ok_or_else(|| {
            let known: Vec<_> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            fail(format!(
                "unknown provider {:?} (expected one of {})",
                self.provider,
                known.join(", ")
            ))
        })?;
        if self.key_id.trim().is_empty() {
            return Err(fail("key_id is empty".into()));
        }
        let (ciphertext, data_key) = self
            .decode_payload(provider, max_ciphertext_bytes)
            .map_err(fail)?;
        let context = parse_aad(&self.aad).map_err(fail)?;
        self.check_vault_fields(provider).map_err(fail)?;
        Ok(SealedEnvelope {
            logical_path: self.logical_path.clone(),
            provider,
            key_id: self.key_id.clone(),
            ciphertext,
            context,
            data_key,
            vault: VaultRef {
                namespace: self.namespace.clone().filter(|n| !n.is_empty()),
                mount: self.mount.clone().filter(|m| !m.is_empty()),
                field: self.field.clone().filter(|f| !f.is_empty()),
                version: self.version,
            },
        })
    }

    /// Vault rows: the namespace and mount, when given, are plain path segments (they
    /// become part of the request), and a transit key is one segment. Other providers
    /// never read these fields.
    fn check_vault_fields(&self, provider: Provider) -> Result<(), String> {
        if !matches!(provider, Provider::VaultDelegate | Provider::VaultTransit) {
            return Ok(());
        }
        let given = |field: &Option<String>| field.clone().filter(|v| !v.is_empty());
        let (namespace, mount) = (given(&self.namespace), given(&self.mount));
        if let Some(namespace) = namespace {
            check_vault_segments("namespace", namespace.trim_matches('/'))?;
        }
        if let Some(mount) = mount {
            check_vault_segments("mount", mount.trim_matches('/'))?;
        }
        if provider == Provider::VaultTransit {
            check_vault_segments("key_id", &self.key_id)?;
            if self.key_id.contains('/') {
                return Err("key_id names one transit key; it has no '/'".into());
            }
        }
        Ok(())
    }

    /// The ciphertext and wrapped data key, by provider: base64 for KMS and local;
    /// `vault:vN:` text for transit (base64 payload when a data key is present); nothing
    /// for a Vault KV reference, which needs a `field` instead.
    fn decode_payload(
        &self,
        provider: Provider,
        max: usize,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
        let data_key = self.data_key_ciphertext.as_deref();
        match (provider, data_key) {
            (Provider::VaultDelegate, _) => {
                if self.field.as_deref().is_none_or(str::is_empty) {
                    return Err(
                        "field is empty (vault_delegate serves one field of the secret)".into(),
                    );
                }
                check_vault_segments("key_id", &self.key_id)?;
                Ok((Vec::new(), None))
            }
            (Provider::VaultTransit, None) => Ok((
                vault_ciphertext("ciphertext_ref", &self.ciphertext_ref, max)?,
                None,
            )),
            (Provider::VaultTransit, Some(key)) => Ok((
                decode_base64("ciphertext_ref", &self.ciphertext_ref, max)?,
                Some(vault_ciphertext("data_key_ciphertext", key, max)?),
            )),
            (_, key) => Ok((
                decode_base64("ciphertext_ref", &self.ciphertext_ref, max)?,
                key.map(|k| decode_base64("data_key_ciphertext", k, max))
                    .transpose()?,
            )),
        }
    }
}

/// A transit ciphertext: `vault:v<N>:<base64>`.
fn vault_ciphertext(field: &str, text: &str, max: usize) -> Result<Vec<u8>, String> {
    let rest = text
        .strip_prefix("vault:v")
        .ok_or_else(|| format!("{field} does not start with vault:v<N>:"))?;
    let (version, body) = rest
        .split_once(':')
        .ok_or_else(|| format!("{field} does not start with vault:v<N>:"))?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) || body.is_empty() {
        return Err(format!("{field} does not start with vault:v<N>:"));
    }
    if text.len() > max {
        return Err(format!("{field} is larger than {max} bytes"));
    }
    Ok(text.as_bytes().to_vec())
}

/// A Vault path part (`what` names the row field): one or more `/`-separated segments,
/// none empty, `.` or `..`, no whitespace or control characters anywhere. Such text
/// becomes part of a request URL or header and must never step outside what it names.
pub fn check_vault_segments(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("the Vault {what} is empty"));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "the Vault {what} has whitespace or control characters"
        ));
    }
    if text
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(format!(
            "the Vault {what} {text:?} has an empty, . or .. segment (expected a path like secret/payments/db)"
        ));
    }
    Ok(())
}

fn check_logical_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("logical_path is empty".into());
    }
    if path.len() > MAX_LOGICAL_PATH_LEN {
        return Err(format!(
            "logical_path is longer than {MAX_LOGICAL_PATH_LEN} bytes"
        ));
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("logical_path contains whitespace or control characters".into());
    }
    Ok(())
}

fn decode_base64(field: &str, text: &str, max: usize) -> Result<Vec<u8>, String> {
    if text.is_empty() {
        return Err(format!("{field} is empty"));
    }
    // Base64 is 4 chars per 3 bytes; refuse before decoding anything huge.
    if text.len() / 4 * 3 > max.saturating_add(3) {
        return Err(format!("{field} is larger than {max} bytes"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{field} is not valid base64"))?;
    if bytes.len() > max {
        return Err(format!("{field} is larger than {max} bytes"));
    }
    Ok(bytes)
}

/// Parses `k=v,k=v` into an encryption context. Empty text is the empty context; keys
/// must be non-empty, unique and free of surrounding spaces (KMS compares exactly).
pub fn parse_aad(aad: &str) -> Result<EncryptionContext, String> {
    let mut context = EncryptionContext::new();
    if aad.is_empty() {
        return Ok(context);
    }
    for (index, pair) in aad.split(',').enumerate() {
        let position = index + 1;
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("aad pair {position} has no '=' (expected k=v,k=v)"));
        };
        if key.is_empty() {
            return Err(format!("aad pair {position} has an empty key"));
        }
        if key.trim() != key || value.trim() != value {
            return Err(format!(
                "aad pair {position} has spaces around its key or value (KMS compares exactly)"
            ));
        }
        if context.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("aad key {key:?} appears twice"));
        }
    }
    Ok(context)
}

/// Formats a context back as `k=v,k=v` (sorted by key).
pub fn format_aad(context: &EncryptionContext) -> String {
    context
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
