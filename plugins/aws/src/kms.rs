//! [`KmsEnvelopeResolver`]: resolves `kms_envelope` envelopes with KMS `Decrypt`, signed
//! with the credentials the STS exchange produced. Keys outside the allowlist are refused
//! before any call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_config::{ConfigLoader, SdkConfig};
use aws_sdk_kms::config::{IdentityCache, Region};
use aws_sdk_kms::primitives::Blob;
use steeple_plugin_api::{
    BoxFuture, EncryptionContext, EnvelopeResolver, Provider, ResolveError, Resolved,
    SealedEnvelope, SecretBytes, aead,
};

use crate::ConfigError;
use crate::arn::{KeyArnAllowlist, KmsArn};
use crate::credentials::{CredentialsSource, SourceCredentialsProvider};
use crate::kms_errors::{self, Call};
use crate::sdk::{self, Failure};

/// How long an alias → key ARN mapping from `DescribeKey` is trusted.
pub const DEFAULT_ALIAS_CACHE_TTL: Duration = Duration::from_secs(300);

/// How many alias mappings are kept.
pub const DEFAULT_ALIAS_CACHE_ENTRIES: usize = 256;

/// How [`KmsEnvelopeResolver`] calls KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsConfig {
    /// Key or alias ARN prefixes envelopes may name, e.g.
    /// `arn:aws:kms:eu-west-1:111122223333:key/`. Empty (the default) refuses every key.
    pub key_arn_allowlist: Vec<String>,
    /// Endpoint override for every region (a VPC endpoint, a test server). `None` (the
    /// default): the SDK's endpoint settings (`AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`,
    /// the profile), else the key's regional KMS endpoint (FIPS or dual-stack as the SDK's
    /// settings ask).
    pub endpoint: Option<String>,
    /// How long an alias → key ARN mapping is trusted. Default
    /// [`DEFAULT_ALIAS_CACHE_TTL`].
    pub alias_cache_ttl: Duration,
    /// Most alias mappings kept; 0 disables the cache. Default
    /// [`DEFAULT_ALIAS_CACHE_ENTRIES`].
    pub alias_cache_entries: usize,
    /// Bound on one call. Default [`DEFAULT_OPERATION_TIMEOUT`](crate::DEFAULT_OPERATION_TIMEOUT).
    pub operation_timeout: Duration,
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self {
            key_arn_allowlist: Vec::new(),
            endpoint: None,
            alias_cache_ttl: DEFAULT_ALIAS_CACHE_TTL,
            alias_cache_entries: DEFAULT_ALIAS_CACHE_ENTRIES,
            operation_timeout: sdk::DEFAULT_OPERATION_TIMEOUT,
        }
    }
}

/// Resolves [`Provider::KmsEnvelope`] envelopes.
///
/// In order: the envelope's `key_id` must be a full KMS key or alias ARN inside the
/// allowlist (else [`ResolveError::Refused`], with no call made); `Decrypt` runs in the
/// ARN's region with the envelope's encryption context, on the ciphertext or, with the
/// data-key layer, on the wrapped data key; the key KMS reports must be the envelope's
/// key (an alias ARN is resolved with `DescribeKey`); a data key then opens the AES-256-GCM
/// payload bound to the logical path and context. One KMS client per region, built on its
/// first call from the SDK's defaults (the ARN's region and the endpoint settings win over
/// the environment), with no SDK retries and no credentials cache: every call signs with
/// the current credentials.
#[derive(Debug)]
pub struct KmsEnvelopeResolver {
    allowlist: KeyArnAllowlist,
    endpoint: Option<String>,
    operation_timeout: Duration,
    credentials: SourceCredentialsProvider,
    clients: Mutex<HashMap<String, aws_sdk_kms::Client>>,
    aliases: AliasCache,
}

impl KmsEnvelopeResolver {
    /// A resolver signing with whatever `credentials` currently holds. Fails on an
    /// allowlist entry that is not an ARN prefix.
    pub fn new(
        config: KmsConfig,
        credentials: Arc<dyn CredentialsSource>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            allowlist: KeyArnAllowlist::new(config.key_arn_allowlist)?,
            endpoint: config.endpoint,
            operation_timeout: config.operation_timeout,
            credentials: SourceCredentialsProvider::new(credentials),
            clients: Mutex::new(HashMap::new()),
            aliases: AliasCache {
                ttl: config.alias_cache_ttl,
                max_entries: config.alias_cache_entries,
                entries: Mutex::new(HashMap::new()),
            },
        })
    }

    /// The allowlist (for checks without I/O, e.g. at config load).
    pub fn allowlist(&self) -> &KeyArnAllowlist {
        &self.allowlist
    }

    /// `DescribeKey` for a startup probe: the key ARN `key_arn` names (an alias ARN is
    /// resolved). The allowlist applies first, with no call made for a refused key.
    pub async fn describe_key(&self, key_arn: &str) -> Result<String, ResolveError> {
        let arn = self.allowlist.check(key_arn)?;
        let client = self.client(arn.region()).await;
        self.describe(&client, &arn, None).await
    }

    async fn resolve_envelope(&self, envelope: &SealedEnvelope) -> Result<Resolved, ResolveError> {
        let path = envelope.logical_path.as_str();
        if envelope.provider != Provider::KmsEnvelope {
            return Err(ResolveError::Refused(format!(
                "envelope {path:?} is for provider {}, not {}",
                envelope.provider,
                Provider::KmsEnvelope
            )));
        }
        let arn = self.allowlist.check(&envelope.key_id)?;
        let client = self.client(arn.region()).await;
        let context_keys: Vec<&str> = envelope.context.keys().map(String::as_str).collect();
        let call = Call {
            operation: "Decrypt",
            logical_path: Some(path),
            key_arn: arn.as_str(),
            context_keys: &context_keys,
        };
        let blob = envelope.data_key.as_deref().unwrap_or(&envelope.ciphertext);
        let (decrypted, key_arn) = decrypt(&client, &call, blob, &envelope.context).await?;
        self.verify_key(&client, &arn, &key_arn, path).await?;
        let plaintext = match envelope.data_key {
            None => decrypted,
            Some(_) => open_payload(envelope, &decrypted)?,
        };
        tracing::debug!(logical_path = path, key_arn, "KMS envelope resolved");
        Ok(Resolved {
            plaintext,
            key_id: key_arn,
        })
    }

    /// Checks that KMS decrypted with the key the envelope names. An alias is resolved
    /// from the cache, and again with `DescribeKey` if the cached target differs (the alias
    /// may have been moved to a new key).
    async fn verify_key(
        &self,
        client: &aws_sdk_kms::Client,
        arn: &KmsArn,
        reported: &str,
        path: &str,
    ) -> Result<(), ResolveError> {
        let expected = if arn.is_alias() {
            match self.aliases.get(arn.as_str()) {
                Some(cached) if cached == reported => return Ok(()),
                _ => self.describe(client, arn, Some(path)).await?,
            }
        } else {
            arn.as_str().to_owned()
        };
        if expected == reported {
            return Ok(());
        }
        Err(ResolveError::Refused(format!(
            "envelope {path:?}: KMS decrypted with key {reported}, but the envelope names {arn} \
             (key {expected})"
        )))
    }

    /// `DescribeKey`: the key ARN behind `arn`; caches alias mappings.
    async fn describe(
        &self,
        client: &aws_sdk_kms::Client,
        arn: &KmsArn,
        path: Option<&str>,
    ) -> Result<String, ResolveError> {
        let call = Call {
            operation: "DescribeKey",
            logical_path: path,
            key_arn: arn.as_str(),
            context_keys: &[],
        };
        let output = client
            .describe_key()
            .key_id(arn.as_str())
            .send()
            .await
            .map_err(|err| kms_errors::resolve_error(&call, &Failure::from_sdk(&err)))?;
        let key_arn = output
            .key_metadata
            .and_then(|metadata| metadata.arn)
            .ok_or_else(|| {
                ResolveError::Upstream(format!("KMS DescribeKey of {arn} returned no key ARN"))
            })?;
        if arn.is_alias() {
            self.aliases.insert(arn.as_str(), &key_arn);
        }
        Ok(key_arn)
    }

    /// The client for `region`, built on first use (two first calls at once may both
    /// build one; the first stored is kept).
    async fn client(&self, region: &str) -> aws_sdk_kms::Client {
        let clients = || self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients().get(region) {
            return client.clone();
        }
        let shared = shared_config(region, self.operation_timeout, &self.credentials)
            .load()
            .await;
        let client = client_from(&shared, self.endpoint.as_deref());
        clients().entry(region.to_owned()).or_insert(client).clone()
    }
}

impl EnvelopeResolver for KmsEnvelopeResolver {
    fn provider(&self) -> Provider {
        Provider::KmsEnvelope
    }

    fn resolve<'a>(
        &'a self,
        envelope: &'a SealedEnvelope,
    ) -> BoxFuture<'a, Result<Resolved, ResolveError>> {
        Box::pin(self.resolve_envelope(envelope))
    }
}

/// `Decrypt` of `blob` under `call.key_arn` and `context`: the plaintext and the key ARN
/// KMS reports.
async fn decrypt(
    client: &aws_sdk_kms::Client,
    call: &Call<'_>,
    blob: &[u8],
    context: &EncryptionContext,
) -> Result<(SecretBytes, String), ResolveError> {
    let output = client
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .key_id(call.key_arn)
        .set_encryption_context(kms_context(context))
        .send()
        .await
        .map_err(|err| kms_errors::resolve_error(call, &Failure::from_sdk(&err)))?;
    let incomplete = |what: &str| {
        ResolveError::Upstream(format!(
            "KMS Decrypt with key {} returned no {what}",
            call.key_arn
        ))
    };
    let key_arn = output.key_id.ok_or_else(|| incomplete("KeyId"))?;
    let plaintext = output.plaintext.ok_or_else(|| incomplete("plaintext"))?;
    Ok((sdk::into_secret(plaintext.into_inner()), key_arn))
}

/// The SDK's defaults for KMS in `region`, signing with `credentials`.
fn shared_config(
    region: &str,
    operation_timeout: Duration,
    credentials: &SourceCredentialsProvider,
) -> ConfigLoader {
    sdk::defaults(Region::new(region.to_owned()), operation_timeout)
        .credentials_provider(credentials.clone())
        // Read the source on every call: fresh credentials apply at once.
        .identity_cache(IdentityCache::no_cache())
}

/// The KMS client for `shared`, sending to `endpoint` (used as given) when configured.
fn client_from(shared: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_kms::Client {
    let builder = with_endpoint(aws_sdk_kms::config::Builder::from(shared), shared, endpoint);
    aws_sdk_kms::Client::from_conf(builder.build())
}

/// `builder` sending to `endpoint` when one is configured: the URL is used as given, so
/// the SDK's FIPS and dual-stack settings (which pick among AWS's endpoints) do not apply.
pub(crate) fn with_endpoint(
    builder: aws_sdk_kms::config::Builder,
    shared: &SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_kms::config::Builder {
    let Some(endpoint) = endpoint else {
        return builder;
    };
    sdk::note_endpoint_flags_unused(shared, "kms_endpoint");
    builder
        .endpoint_url(endpoint)
        .use_fips(false)
        .use_dual_stack(false)
}

/// The context as the SDK wants it; `None` when empty (KMS treats both alike).
pub(crate) fn kms_context(context: &EncryptionContext) -> Option<HashMap<String, String>> {
    (!context.is_empty()).then(|| context.clone().into_iter().collect())
}

/// Opens the data-key payload with the decrypted `data_key` (zeroized when dropped).
fn open_payload(
    envelope: &SealedEnvelope,
    data_key: &SecretBytes,
) -> Result<SecretBytes, ResolveError> {
    let aad = aead::associated_data(&envelope.logical_path, &envelope.context);
    aead::open(data_key.expose(), &aad, &envelope.ciphertext).map_err(|err| {
        ResolveError::Undecryptable(format!(
            "envelope {:?}: the data-key payload did not open: {err}",
            envelope.logical_path
        ))
    })
}

/// Alias ARN → key ARN, trusted for a while.
#[derive(Debug)]
struct AliasCache {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl AliasCache {
    fn get(&self, alias_arn: &str) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(alias_arn)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(key_arn, _)| key_arn.clone())
    }

    fn insert(&self, alias_arn: &str, key_arn: &str) {
        if self.max_entries == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
        if entries.len() >= self.max_entries && !entries.contains_key(alias_arn) {
            entries.clear();
        }
        entries.insert(alias_arn.to_owned(), (key_arn.to_owned(), Instant::now()));
    }
}

#[cfg(test)]
#[path = "kms_tests.rs"]
mod tests;
