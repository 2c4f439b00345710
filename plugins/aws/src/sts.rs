//! [`StsExchanger`]: trades a JWT-SVID for AWS credentials with STS
//! `AssumeRoleWithWebIdentity`, an unsigned call (the token is the proof).

use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::{BehaviorVersion, Region};
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityOutput;
use steeple_plugin_api::{
    AwsCredentials, BoxFuture, CredentialExchanger, ExchangeError, ExchangeErrorKind, SecretBytes,
};

use crate::sdk::{self, Failure};
use crate::{ConfigError, session_name};

/// The JWT-SVID audience AWS expects unless the IAM OIDC provider says otherwise.
pub const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";

/// The STS region used unless configured.
pub const DEFAULT_REGION: &str = "us-east-1";

/// STS limits on `RoleArn`.
const ROLE_ARN_LEN: std::ops::RangeInclusive<usize> = 20..=2048;

/// How [`StsExchanger`] calls STS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsConfig {
    /// The role to assume (`arn:aws:iam::<account>:role/<name>`). Required.
    pub role_arn: String,
    /// The JWT-SVID audience to request. Default [`DEFAULT_AUDIENCE`].
    pub audience: String,
    /// `RoleSessionName`. `None` (the default): derived from each JWT-SVID's subject, the
    /// workload's SPIFFE ID (see [`role_session_name`](crate::role_session_name)), so
    /// CloudTrail names the workload.
    pub session_name: Option<String>,
    /// Requested session duration (`DurationSeconds`, whole seconds). Default 1 h. STS
    /// accepts 900 s to 12 h, capped by the role; this crate only requires 1 s or more, so
    /// test servers can hand out short sessions.
    pub duration: Duration,
    /// STS region (it picks the regional endpoint). Default [`DEFAULT_REGION`].
    pub region: String,
    /// Endpoint override: a VPC endpoint, or a test server.
    pub endpoint: Option<String>,
    /// Bound on one call. Default [`DEFAULT_OPERATION_TIMEOUT`](crate::DEFAULT_OPERATION_TIMEOUT).
    pub operation_timeout: Duration,
}

impl Default for StsConfig {
    fn default() -> Self {
        Self {
            role_arn: String::new(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            session_name: None,
            duration: Duration::from_secs(3600),
            region: DEFAULT_REGION.to_owned(),
            endpoint: None,
            operation_timeout: sdk::DEFAULT_OPERATION_TIMEOUT,
        }
    }
}

/// Exchanges JWT-SVIDs for AWS credentials with `AssumeRoleWithWebIdentity`.
///
/// The STS client has no credentials provider (the call is unsigned) and no retries: each
/// [`exchange`](CredentialExchanger::exchange) is one request, and its error kind tells the
/// caller how to back off.
#[derive(Debug, Clone)]
pub struct StsExchanger {
    config: StsConfig,
    duration_seconds: i32,
    client: aws_sdk_sts::Client,
}

impl StsExchanger {
    /// Checks `config` and builds the STS client. Fails naming the first bad key.
    pub fn new(config: StsConfig) -> Result<Self, ConfigError> {
        let duration_seconds = check(&config)?;
        let mut builder = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .http_client(sdk::https_client())
            .retry_config(sdk::no_retries())
            .timeout_config(sdk::timeouts(config.operation_timeout));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = aws_sdk_sts::Client::from_conf(builder.build());
        Ok(Self {
            config,
            duration_seconds,
            client,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &StsConfig {
        &self.config
    }

    async fn assume_role(&self, jwt_svid: &SecretBytes) -> Result<AwsCredentials, ExchangeError> {
        let token = std::str::from_utf8(jwt_svid.expose()).map_err(|_| {
            ExchangeError::new(
                ExchangeErrorKind::TokenRejected,
                "InvalidJwtSvid",
                "the JWT-SVID is not UTF-8 text",
            )
        })?;
        let session_name = match &self.config.session_name {
            Some(name) => name.clone(),
            None => session_name::from_jwt_subject(token).ok_or_else(|| {
                ExchangeError::new(
                    ExchangeErrorKind::TokenRejected,
                    "InvalidJwtSvid",
                    "the JWT-SVID has no readable `sub` claim to name the STS session",
                )
            })?,
        };
        let output = self
            .client
            .assume_role_with_web_identity()
            .role_arn(&self.config.role_arn)
            .role_session_name(session_name)
            .web_identity_token(token)
            .duration_seconds(self.duration_seconds)
            .send()
            .await
            .map_err(|err| exchange_error(&Failure::from_sdk(&err)))?;
        let credentials = credentials_from(output, SystemTime::now())?;
        tracing::debug!(
            role_arn = %self.config.role_arn,
            access_key_id = %credentials.access_key_id,
            expiration = ?credentials.expiration,
            "STS AssumeRoleWithWebIdentity succeeded"
        );
        Ok(credentials)
    }
}

impl CredentialExchanger for StsExchanger {
    type Credentials = AwsCredentials;

    fn audience(&self) -> &str {
        &self.config.audience
    }

    fn exchange<'a>(
        &'a self,
        jwt_svid: &'a SecretBytes,
    ) -> BoxFuture<'a, Result<AwsCredentials, ExchangeError>> {
        Box::pin(self.assume_role(jwt_svid))
    }
}

/// Validates `config`; returns `DurationSeconds`.
fn check(config: &StsConfig) -> Result<i32, ConfigError> {
    let arn = &config.role_arn;
    if !ROLE_ARN_LEN.contains(&arn.len()) || !arn.starts_with("arn:") || !arn.contains(":role/") {
        return Err(ConfigError::new(
            "role_arn",
            format!("{arn:?} is not an IAM role ARN (arn:<partition>:iam::<account>:role/<name>)"),
        ));
    }
    if config.audience.trim().is_empty() {
        return Err(ConfigError::new("audience", "is empty"));
    }
    if let Some(name) = config
        .session_name
        .as_deref()
        .filter(|n| !session_name::is_valid(n))
    {
        return Err(ConfigError::new(
            "session_name",
            format!("{name:?} is not 2 to 64 characters of [A-Za-z0-9_+=,.@-]"),
        ));
    }
    let seconds = i32::try_from(config.duration.as_secs())
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| {
            ConfigError::new(
                "duration",
                "must be between 1 s and 2^31 s (STS: 900 s to 12 h)",
            )
        })?;
    if config.region.trim().is_empty() {
        return Err(ConfigError::new("region", "is empty"));
    }
    Ok(seconds)
}

/// The credentials in `output`; refuses a response without them or already expired at
/// `now` (never hand out credentials that are not valid).
fn credentials_from(
    output: AssumeRoleWithWebIdentityOutput,
    now: SystemTime,
) -> Result<AwsCredentials, ExchangeError> {
    let missing = || {
        ExchangeError::new(
            ExchangeErrorKind::Fatal,
            "MissingCredentials",
            "STS response carried no credentials",
        )
    };
    let credentials = output.credentials.ok_or_else(missing)?;
    if credentials.access_key_id.is_empty()
        || credentials.secret_access_key.is_empty()
        || credentials.session_token.is_empty()
    {
        return Err(missing());
    }
    let expiration = SystemTime::try_from(credentials.expiration).map_err(|_| missing())?;
    if expiration <= now {
        return Err(ExchangeError::new(
            ExchangeErrorKind::Fatal,
            "ExpiredCredentials",
            format!(
                "STS returned credentials that expired at {} (check the requested duration and \
                 this host's clock)",
                credentials.expiration
            ),
        ));
    }
    Ok(AwsCredentials {
        access_key_id: credentials.access_key_id,
        secret_access_key: sdk::into_secret(credentials.secret_access_key.into_bytes()),
        session_token: sdk::into_secret(credentials.session_token.into_bytes()),
        expiration,
    })
}

/// Maps a failed call to an [`ExchangeError`] carrying the AWS code and message.
fn exchange_error(failure: &Failure) -> ExchangeError {
    ExchangeError::new(kind_of(failure), failure.code(), failure.message())
}

/// How the caller should retry after `failure`.
fn kind_of(failure: &Failure) -> ExchangeErrorKind {
    match failure {
        Failure::Service { code, status, .. } => sts_error_kind(code.as_deref(), *status),
        Failure::Timeout(_) | Failure::Dispatch(_) | Failure::Response(_) => {
            ExchangeErrorKind::Transient
        }
        Failure::Construction(_) => ExchangeErrorKind::Fatal,
    }
}

/// The retry class of an STS error `code` answered with HTTP `status`.
fn sts_error_kind(code: Option<&str>, status: u16) -> ExchangeErrorKind {
    match code {
        Some("IDPCommunicationError") => ExchangeErrorKind::Transient,
        Some(code) if sdk::is_throttling_or_timeout(code) => ExchangeErrorKind::Transient,
        Some("InvalidIdentityToken" | "ExpiredTokenException") => ExchangeErrorKind::TokenRejected,
        _ if status >= 500 => ExchangeErrorKind::Transient,
        _ => ExchangeErrorKind::Fatal,
    }
}

#[cfg(test)]
#[path = "sts_tests.rs"]
mod tests;
