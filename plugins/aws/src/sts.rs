//! [`StsExchanger`]: trades a JWT-SVID for AWS credentials with STS
//! `AssumeRoleWithWebIdentity`, an unsigned call (the token is the proof).

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::{ProvideRegion, RegionProviderChain};
use aws_config::profile::ProfileFileRegionProvider;
use aws_sdk_sts::config::Region;
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityOutput;
use steeple_plugin_api::{
    AwsCredentials, BoxFuture, CredentialExchanger, ExchangeError, ExchangeErrorKind, SecretBytes,
};
use tokio::sync::OnceCell;

use crate::sdk::{self, Failure};
use crate::{ConfigError, session_name};

/// The JWT-SVID audience AWS expects unless the IAM OIDC provider says otherwise.
pub const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";

/// The STS region used when neither the configuration nor the environment names one.
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
    /// STS region (it picks the regional endpoint). `None` (the default): the SDK's
    /// `AWS_REGION`, `AWS_DEFAULT_REGION` or the profile's `region`, else
    /// [`DEFAULT_REGION`]; never the instance metadata service.
    pub region: Option<String>,
    /// Endpoint override: a VPC endpoint, or a test server. `None` (the default): the
    /// SDK's endpoint settings (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, the profile),
    /// else the regional STS endpoint (FIPS or dual-stack as the SDK's settings ask).
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
            region: None,
            endpoint: None,
            operation_timeout: sdk::DEFAULT_OPERATION_TIMEOUT,
        }
    }
}

/// Exchanges JWT-SVIDs for AWS credentials with `AssumeRoleWithWebIdentity`.
///
/// The STS client starts from the SDK's defaults (see [`StsConfig`] for what the
/// environment may set), has no credentials provider (the call is unsigned) and no
/// retries: each [`exchange`](CredentialExchanger::exchange) is one request, and its error
/// kind tells the caller how to back off. It is built on the first exchange, since loading
/// the SDK's defaults is async; construction does no I/O.
#[derive(Debug, Clone)]
pub struct StsExchanger {
    config: StsConfig,
    duration_seconds: i32,
    client: OnceCell<aws_sdk_sts::Client>,
}

impl StsExchanger {
    /// Checks `config`. Fails naming the first bad key.
    pub fn new(config: StsConfig) -> Result<Self, ConfigError> {
        let duration_seconds = check(&config)?;
        Ok(Self {
            config,
            duration_seconds,
            client: OnceCell::new(),
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
            .client()
            .await
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

    /// The STS client, built on first use.
    async fn client(&self) -> &aws_sdk_sts::Client {
        self.client
            .get_or_init(|| async {
                let shared = shared_config(&self.config).load().await;
                client_from(&shared, self.config.endpoint.as_deref())
            })
            .await
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
    if config
        .region
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        return Err(ConfigError::new("region", "is empty"));
    }
    Ok(seconds)
}

/// The SDK's defaults for STS, unsigned, in the region [`region_chain`] picks.
fn shared_config(config: &StsConfig) -> aws_config::ConfigLoader {
    let environment = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::new());
    let region = region_chain(config.region.as_deref(), environment);
    sdk::defaults(region, config.operation_timeout).no_credentials()
}

/// The configured region, else what `environment` says, else [`DEFAULT_REGION`]: always
/// a region, so the SDK never falls back to asking IMDS.
fn region_chain(
    configured: Option<&str>,
    environment: impl ProvideRegion + 'static,
) -> RegionProviderChain {
    RegionProviderChain::first_try(configured.map(|r| Region::new(r.to_owned())))
        .or_else(environment)
        .or_else(Region::from_static(DEFAULT_REGION))
}

/// The STS client for `shared`, sending to `endpoint` (used as given) when configured.
fn client_from(shared: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_sts::Client {
    let mut builder = aws_sdk_sts::config::Builder::from(shared);
    if let Some(endpoint) = endpoint {
        sdk::note_endpoint_flags_unused(shared, "sts_endpoint");
        builder = builder
            .endpoint_url(endpoint)
            .use_fips(false)
            .use_dual_stack(false);
    }
    aws_sdk_sts::Client::from_conf(builder.build())
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
    let account_id = output
        .assumed_role_user
        .as_ref()
        .and_then(|user| assumed_role_account(user.arn()))
        .map(str::to_owned);
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
        account_id,
    })
}

/// The 12-digit account of an assumed-role ARN
/// (`arn:<partition>:sts::<account>:assumed-role/<role>/<session>`); `None` for anything
/// else, so a malformed ARN only leaves `AccountId` out.
fn assumed_role_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let fields: [Option<&str>; 6] = std::array::from_fn(|_| parts.next());
    let [
        Some("arn"),
        Some(_),
        Some("sts"),
        Some(""),
        Some(account),
        Some(resource),
    ] = fields
    else {
        return None;
    };
    let is_account = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    (is_account && resource.starts_with("assumed-role/")).then_some(account)
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
