//! Steeple's AWS provider: trades JWT-SVIDs for STS credentials
//! ([`StsExchanger`]), resolves `kms_envelope` envelopes with those credentials
//! ([`KmsEnvelopeResolver`]), and seals envelopes with the operator's own identity
//! ([`seal_with_kms`]).
//!
//! Every SDK client here has its own retries turned off: the caller (the agent's exchange
//! loop and envelope registry) is the one backoff source.

mod arn;
mod credentials;
mod kms;
mod kms_errors;
mod sdk;
mod seal;
mod session_name;
mod sts;
#[cfg(test)]
mod test_support;

pub use arn::{KeyArnAllowlist, KmsArn, KmsResource};
pub use credentials::{CredentialsSource, SourceCredentialsProvider};
pub use kms::{
    DEFAULT_ALIAS_CACHE_ENTRIES, DEFAULT_ALIAS_CACHE_TTL, KmsConfig, KmsEnvelopeResolver,
};
pub use sdk::DEFAULT_OPERATION_TIMEOUT;
pub use seal::{MAX_DIRECT_PLAINTEXT, SealError, SealOptions, seal_with_kms};
pub use session_name::role_session_name;
pub use sts::{DEFAULT_AUDIENCE, DEFAULT_REGION, StsConfig, StsExchanger};

/// A configuration value this crate refuses, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The offending field (`role_arn`, `session_name`, …).
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn new(key: &'static str, problem: impl Into<String>) -> Self {
        Self {
            key,
            problem: problem.into(),
        }
    }
}
