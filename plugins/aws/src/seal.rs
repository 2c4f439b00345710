//! [`seal_with_kms`]: the operator's side, sealing a plaintext into a `kms_envelope` row
//! with the operator's own AWS identity (the workload's role only decrypts).

use aws_config::SdkConfig;
use aws_sdk_kms::config::Region;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use steeple_plugin_api::{
    EncryptionContext, EnvelopeRow, Provider, aead, bind_logical_path, format_aad,
};

use crate::arn::KmsArn;
use crate::kms::{kms_context, with_endpoint};
use crate::sdk::{self, Failure};

/// Largest plaintext KMS `Encrypt` takes; larger ones go through a data key.
pub const MAX_DIRECT_PLAINTEXT: usize = 4096;

/// How the operator's KMS client is built.
#[derive(Debug, Clone, Default)]
pub struct SealOptions {
    /// KMS endpoint override (a VPC endpoint, a test server), used as given. `None`: the
    /// SDK's endpoint settings (`AWS_ENDPOINT_URL_KMS`, …), else the key's region's.
    pub endpoint: Option<String>,
    /// The operator's AWS configuration. `None` loads the SDK's default chain
    /// (environment, profile, web identity, container, IMDS), in the key's region. A
    /// configuration without an HTTP client gets this crate's (rustls on ring).
    pub sdk_config: Option<SdkConfig>,
}

/// Why sealing failed. Never carries the plaintext or the data key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The key is not a full KMS key or alias ARN.
    #[error("{0}")]
    InvalidKey(String),
    /// There is nothing to seal.
    #[error("the plaintext is empty")]
    EmptyPlaintext,
    /// The logical path cannot be bound into the encryption context.
    #[error("{0}")]
    LogicalPath(String),
    /// KMS refused or could not be reached.
    #[error("KMS {operation} with key {key_arn} failed: {code}: {message}")]
    Kms {
        /// `Encrypt` or `GenerateDataKey`.
        operation: &'static str,
        /// The key as given.
        key_arn: String,
        /// The AWS error code, or a local one (`DispatchFailure`, …).
        code: String,
        /// The AWS message or the SDK's error chain.
        message: String,
    },
    /// KMS answered without a field sealing needs.
    #[error("KMS {operation} with key {key_arn} returned no {field}")]
    Incomplete {
        /// `Encrypt` or `GenerateDataKey`.
        operation: &'static str,
        /// The key as given.
        key_arn: String,
        /// The missing field.
        field: &'static str,
    },
    /// The data-key layer failed (no randomness, a data key of the wrong size).
    #[error("sealing the payload failed: {0}")]
    Aead(#[from] aead::AeadError),
}

/// Seals `plaintext` for `logical_path` under `key_arn` and `context`.
///
/// Up to [`MAX_DIRECT_PLAINTEXT`] bytes go to KMS `Encrypt`; larger payloads get a
/// `GenerateDataKey` (AES_256) data key and the AES-256-GCM layer bound to the logical path
/// and context, with the wrapped key in `data_key_ciphertext`. `key_arn` must be a full
/// key or alias ARN (the resolver refuses anything else) and is recorded as given. The
/// logical path is bound into the context ([`bind_logical_path`]) either way.
pub async fn seal_with_kms(
    options: &SealOptions,
    key_arn: &str,
    logical_path: &str,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<EnvelopeRow, SealError> {
    let arn = KmsArn::parse(key_arn).map_err(SealError::InvalidKey)?;
    if plaintext.is_empty() {
        return Err(SealError::EmptyPlaintext);
    }
    let context = &bind_logical_path(context, logical_path).map_err(SealError::LogicalPath)?;
    let client = client(options, arn.region()).await;
    let mut row = EnvelopeRow {
        logical_path: logical_path.to_owned(),
        provider: Provider::KmsEnvelope.as_str().to_owned(),
        key_id: key_arn.to_owned(),
        aad: format_aad(context),
        ..EnvelopeRow::default()
    };
    if plaintext.len() <= MAX_DIRECT_PLAINTEXT {
        row.ciphertext_ref = BASE64.encode(encrypt(&client, key_arn, context, plaintext).await?);
    } else {
        let (wrapped, payload) =
            seal_with_data_key(&client, key_arn, logical_path, context, plaintext).await?;
        row.ciphertext_ref = BASE64.encode(payload);
        row.data_key_ciphertext = Some(BASE64.encode(wrapped));
    }
    Ok(row)
}

/// KMS `Encrypt`: the ciphertext blob.
async fn encrypt(
    client: &aws_sdk_kms::Client,
    key_arn: &str,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let output = client
        .encrypt()
        .key_id(key_arn)
        .plaintext(Blob::new(plaintext))
        .set_encryption_context(kms_context(context))
        .send()
        .await
        .map_err(|err| kms_error("Encrypt", key_arn, &Failure::from_sdk(&err)))?;
    let blob = output
        .ciphertext_blob
        .ok_or_else(|| incomplete("Encrypt", key_arn, "CiphertextBlob"))?;
    Ok(blob.into_inner())
}

/// `GenerateDataKey` (AES_256), then the AES-256-GCM layer: the wrapped key and the
/// payload. The plaintext data key is zeroized when dropped.
async fn seal_with_data_key(
    client: &aws_sdk_kms::Client,
    key_arn: &str,
    logical_path: &str,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), SealError> {
    let output = client
        .generate_data_key()
        .key_id(key_arn)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(kms_context(context))
        .send()
        .await
        .map_err(|err| kms_error("GenerateDataKey", key_arn, &Failure::from_sdk(&err)))?;
    let wrapped = output
        .ciphertext_blob
        .ok_or_else(|| incomplete("GenerateDataKey", key_arn, "CiphertextBlob"))?;
    let data_key = output
        .plaintext
        .map(|blob| sdk::into_secret(blob.into_inner()))
        .ok_or_else(|| incomplete("GenerateDataKey", key_arn, "Plaintext"))?;
    let aad = aead::associated_data(logical_path, context);
    let payload = aead::seal(data_key.expose(), &aad, plaintext)?;
    Ok((wrapped.into_inner(), payload))
}

/// The operator's KMS client for `region`; SDK retries stay on (an interactive tool).
async fn client(options: &SealOptions, region: &str) -> aws_sdk_kms::Client {
    let region = Region::new(region.to_owned());
    let sdk_config = match &options.sdk_config {
        Some(config) => config.clone(),
        None => {
            // The credential chain's own calls (SSO, STS, IMDS) use this client too.
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(region.clone())
                .http_client(sdk::https_client())
                .load()
                .await
        }
    };
    let builder = aws_sdk_kms::config::Builder::from(&sdk_config)
        .region(region)
        .timeout_config(sdk::timeouts(3 * sdk::DEFAULT_OPERATION_TIMEOUT));
    let builder = match sdk_config.http_client() {
        Some(_) => builder,
        None => builder.http_client(sdk::https_client()),
    };
    let builder = with_endpoint(builder, &sdk_config, options.endpoint.as_deref());
    aws_sdk_kms::Client::from_conf(builder.build())
}

fn kms_error(operation: &'static str, key_arn: &str, failure: &Failure) -> SealError {
    SealError::Kms {
        operation,
        key_arn: key_arn.to_owned(),
        code: failure.code().to_owned(),
        message: failure.message(),
    }
}

fn incomplete(operation: &'static str, key_arn: &str, field: &'static str) -> SealError {
    SealError::Incomplete {
        operation,
        key_arn: key_arn.to_owned(),
        field,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_bare_keys_and_empty_plaintext_before_any_call() {
        let options = SealOptions {
            endpoint: Some("http://127.0.0.1:1".into()),
            sdk_config: None,
        };
        let context = EncryptionContext::new();
        let err = seal_with_kms(&options, "alias/app", "a", &context, b"x")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SealError::InvalidKey(m) if m.contains("full KMS ARN")),
            "{err}"
        );
        let key = "arn:aws:kms:us-east-1:111122223333:key/k";
        let err = seal_with_kms(&options, key, "a", &context, b"")
            .await
            .unwrap_err();
        assert_eq!(err, SealError::EmptyPlaintext);
    }
}
