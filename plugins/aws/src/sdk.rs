//! What every SDK client here shares: the SDK's default configuration with ours on top
//! (the HTTPS client, rustls on ring; SDK retries off, as the caller is the one backoff
//! source; a bounded operation time; a region that never comes from IMDS), and one
//! reading of an `SdkError` into the facts the STS and KMS error mappings need.

use std::error::Error;
use std::time::Duration;

use aws_config::meta::region::ProvideRegion;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
// Throttling and service-side timeout codes: the SDK's own lists (aws-runtime
// `src/retries/classifiers.rs`, what every SDK client's `AwsErrorCodeClassifier` retries),
// so our retry classes cannot drift from what AWS SDK users see retried.
use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use steeple_plugin_api::SecretBytes;
use zeroize::Zeroize as _;

/// How long one STS or KMS call may take, connection included, unless configured.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The SDK's default configuration, as every AWS SDK user has it (`AWS_ENDPOINT_URL` and
/// `AWS_ENDPOINT_URL_<SERVICE>`, `AWS_USE_FIPS_ENDPOINT`, `AWS_USE_DUALSTACK_ENDPOINT`,
/// `AWS_PROFILE` and the shared config file's settings), with ours on top: the region
/// from `region`, no SDK retries and our timeouts, whatever the environment says.
///
/// `region` must always yield a region: without one the loader would ask IMDS. With it,
/// loading reads the environment and the shared config files, never the network (the
/// caller still picks the credentials: none, or its own).
pub(crate) fn defaults(
    region: impl ProvideRegion + 'static,
    operation_timeout: Duration,
) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .region(region)
        .retry_config(no_retries())
        .timeout_config(timeouts(operation_timeout))
}

/// The HTTP client every SDK client here is given: the SDK's default stack (hyper 1,
/// native roots, proxies from `HTTPS_PROXY`/`NO_PROXY`), with rustls on ring instead of
/// aws-lc-rs. The SDK's `default-https-client` feature would compile aws-lc-rs beside the
/// ring the rest of Steeple uses; with two rustls providers built in, rustls can no longer
/// choose a process default. Without this client an SDK call fails before sending.
pub(crate) fn https_client() -> SharedHttpClient {
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// Logs, once per client, that `AWS_USE_FIPS_ENDPOINT` / `AWS_USE_DUALSTACK_ENDPOINT` (or
/// their profile settings) do not apply to the endpoint configured as `key`: those pick
/// among AWS's own endpoints, and the configured URL is used as given.
pub(crate) fn note_endpoint_flags_unused(shared: &SdkConfig, key: &'static str) {
    if shared.use_fips() == Some(true) || shared.use_dual_stack() == Some(true) {
        tracing::warn!(
            key,
            "the FIPS / dual-stack endpoint setting does not apply to the configured endpoint, \
             which is used as given"
        );
    }
}

/// One attempt only: retries belong to the caller.
pub(crate) fn no_retries() -> RetryConfig {
    RetryConfig::disabled()
}

/// `operation` bounds the whole call (connecting included) and its one attempt.
pub(crate) fn timeouts(operation: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(operation)
        .operation_attempt_timeout(operation)
        .build()
}

/// Moves SDK-owned bytes into a [`SecretBytes`], zeroizing the SDK's buffer.
pub(crate) fn into_secret(mut bytes: Vec<u8>) -> SecretBytes {
    let secret = SecretBytes::copy_from(&bytes);
    bytes.zeroize();
    secret
}

/// Whether the SDK would retry `code` as throttling or transient (retry later).
pub(crate) fn is_throttling_or_timeout(code: &str) -> bool {
    THROTTLING_ERRORS.contains(&code) || TRANSIENT_ERRORS.contains(&code)
}

/// Why an SDK call failed, as far as the mappings care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The service answered with an error.
    Service {
        /// The AWS error code, if the body carried one.
        code: Option<String>,
        /// The AWS error message, if any.
        message: Option<String>,
        /// The HTTP status.
        status: u16,
    },
    /// No complete answer in time.
    Timeout(String),
    /// Not sent, or no answer: connection refused, DNS, TLS, missing credentials.
    Dispatch(String),
    /// An answer that could not be read.
    Response(String),
    /// The request could not be built.
    Construction(String),
}

impl Failure {
    /// Reads `err`. Messages are the SDK's own error chain, which holds no request body.
    pub(crate) fn from_sdk<E>(err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + Error + Send + Sync + 'static,
    {
        let chain = || error_chain(err);
        match err {
            SdkError::ServiceError(context) => Self::Service {
                code: context.err().code().map(str::to_owned),
                message: context.err().message().map(str::to_owned),
                status: context.raw().status().as_u16(),
            },
            SdkError::TimeoutError(_) => Self::Timeout(chain()),
            SdkError::DispatchFailure(_) => Self::Dispatch(chain()),
            SdkError::ResponseError(_) => Self::Response(chain()),
            _ => Self::Construction(chain()),
        }
    }

    /// The AWS error code, or a local name for failures without one.
    pub(crate) fn code(&self) -> &str {
        match self {
            Self::Service {
                code: Some(code), ..
            } => code,
            Self::Service { code: None, .. } => "UnknownError",
            Self::Timeout(_) => "Timeout",
            Self::Dispatch(_) => "DispatchFailure",
            Self::Response(_) => "UnreadableResponse",
            Self::Construction(_) => "RequestConstruction",
        }
    }

    /// A message for humans: the AWS message (with the HTTP status), or the SDK's error
    /// chain.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Service {
                message, status, ..
            } => match message.as_deref() {
                Some(message) if !message.is_empty() => format!("{message} (HTTP {status})"),
                _ => format!("HTTP {status} without an error message"),
            },
            Self::Timeout(chain)
            | Self::Dispatch(chain)
            | Self::Response(chain)
            | Self::Construction(chain) => chain.clone(),
        }
    }
}

/// `err: its source: its source…`, each level's own text once.
pub(crate) fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        // Some wrappers repeat their source's text; keep each text once.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let service = Failure::Service {
            code: Some("ThrottlingException".into()),
            message: Some("Rate exceeded".into()),
            status: 400,
        };
        assert_eq!(service.code(), "ThrottlingException");
        assert_eq!(service.message(), "Rate exceeded (HTTP 400)");
        let bare = Failure::Service {
            code: None,
            message: None,
            status: 502,
        };
        assert_eq!(bare.code(), "UnknownError");
        assert_eq!(bare.message(), "HTTP 502 without an error message");
        assert_eq!(
            Failure::Dispatch("refused".into()).code(),
            "DispatchFailure"
        );
        assert_eq!(Failure::Timeout("slow".into()).message(), "slow");
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&err), "dispatch failure: connection refused");
    }

    #[test]
    fn throttling_and_timeout_codes() {
        for code in [
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "RequestTimeout",
            // Missing from the trimmed copy this crate used to keep.
            "LimitExceededException",
            "ProvisionedThroughputExceededException",
            "TransactionInProgressException",
            "BandwidthLimitExceeded",
            "EC2ThrottledException",
        ] {
            assert!(is_throttling_or_timeout(code), "{code}");
        }
        for code in ["AccessDenied", "ValidationError", "throttling"] {
            assert!(!is_throttling_or_timeout(code), "{code}");
        }
    }
}
