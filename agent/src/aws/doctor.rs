//! `steeple doctor`'s `aws.sts` and `aws.kms_key`: one `AssumeRoleWithWebIdentity` with a
//! fresh JWT-SVID, through the exchanger the agent builds, then `DescribeKey` on every key
//! the configured envelope files name, signed with the credentials just obtained (as the
//! agent's `probe_keys` does). Credentials are never shown, only their expiry.

use std::sync::Arc;

use steeple_plugin_api::{
    AwsCredentials, CredentialExchanger as _, ExchangeErrorKind, JwtSvidSource, ResolveError,
};
use steeple_plugin_aws::{KmsEnvelopeResolver, StsExchanger};
use tokio::sync::watch;

use super::key_probe::kms_keys;
use super::{kms_config, sts_config};
use crate::config::Config;
use crate::doctor_check::{CALL_TIMEOUT, Check, expiry};
use crate::envelopes::RowSets;
use crate::envelopes::file_source::{self, FileSet};

const STS: &str = "aws.sts";
const KMS: &str = "aws.kms_key";

/// The STS exchange, then every envelope key.
pub async fn checks(config: &Config, jwt: &dyn JwtSvidSource, spiffe_id: &str) -> Vec<Check> {
    let aws = &config.aws;
    let exchanger = match StsExchanger::new(sts_config(aws)) {
        Ok(exchanger) => exchanger,
        Err(e) => return sts_failed(format!("aws.{e}"), "correct the [aws] key named".to_owned()),
    };
    let outcome = tokio::time::timeout(CALL_TIMEOUT, async {
        let token = jwt.fetch(exchanger.audience()).await?;
        exchanger.exchange(&token).await
    })
    .await;
    let credentials = match outcome {
        Ok(Ok(credentials)) => credentials,
        Ok(Err(e)) => {
            let fix = sts_fix(config, e.kind, &e.code, spiffe_id);
            return sts_failed(format!("{}: {}", e.code, e.message), fix);
        }
        Err(_) => {
            return sts_failed(
                format!("no answer from STS within {CALL_TIMEOUT:?}"),
                "check aws.sts_endpoint / aws.region (unset: AWS_ENDPOINT_URL_STS / AWS_REGION) \
                 and the network path to STS"
                    .to_owned(),
            );
        }
    };
    let mut out = vec![Check::ok(
        STS,
        format!(
            "assumed {} for {spiffe_id}; credentials expire {}",
            aws.role_arn,
            expiry(credentials.expiration)
        ),
    )];
    out.extend(describe_keys(config, credentials).await);
    out
}

/// `DescribeKey` on every key of the `kms_envelope` rows in `envelopes.paths`.
async fn describe_keys(config: &Config, credentials: AwsCredentials) -> Vec<Check> {
    if !config.envelopes.enabled {
        return vec![Check::skipped(KMS, "[envelopes] is not enabled")];
    }
    let mut files = FileSet::default();
    files.reload(&config.envelopes.paths);
    let sets = RowSets::from([(file_source::SOURCE.to_owned(), Arc::new(files.rows()))]);
    let keys = kms_keys(&sets);
    if keys.is_empty() {
        return vec![Check::skipped(
            KMS,
            "no kms_envelope row in envelopes.paths",
        )];
    }
    let (_keep, current) = watch::channel(Some(credentials));
    let kms = match KmsEnvelopeResolver::new(kms_config(&config.aws), Arc::new(current)) {
        Ok(kms) => kms,
        Err(e) => {
            return vec![Check::fail(
                KMS,
                format!("aws.{e}"),
                "correct the [aws] key named",
            )];
        }
    };
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let check = match tokio::time::timeout(CALL_TIMEOUT, kms.describe_key(&key)).await {
            Ok(Ok(arn)) if arn == key => Check::ok(KMS, format!("{key}: DescribeKey passed")),
            Ok(Ok(arn)) => Check::ok(KMS, format!("{key} → {arn}: DescribeKey passed")),
            Ok(Err(e)) => Check::fail(KMS, format!("{key}: {e}"), kms_fix(config, &key, &e)),
            Err(_) => Check::fail(
                KMS,
                format!("{key}: no answer from KMS within {CALL_TIMEOUT:?}"),
                "check aws.kms_endpoint (unset: AWS_ENDPOINT_URL_KMS) and the network path to KMS",
            ),
        };
        out.push(check);
    }
    out
}

fn sts_failed(detail: String, fix: String) -> Vec<Check> {
    vec![
        Check::fail(STS, detail, fix),
        Check::skipped(KMS, "no STS credentials (aws.sts did not pass)"),
    ]
}

fn sts_fix(config: &Config, kind: ExchangeErrorKind, code: &str, spiffe_id: &str) -> String {
    let aws = &config.aws;
    match (kind, code) {
        (_, "WorkloadApiUnavailable") => {
            "the JWT-SVID could not be fetched: see workload_api.x509_svid".to_owned()
        }
        (ExchangeErrorKind::Transient, _) => {
            "STS is unreachable or throttling: check aws.sts_endpoint / aws.region (unset: \
             AWS_ENDPOINT_URL_STS / AWS_REGION) and retry"
                .to_owned()
        }
        (_, "InvalidIdentityToken") => format!(
            "register SPIRE's OIDC discovery provider as an IAM OIDC identity provider with audience {} (deploy/aws/)",
            aws.audience
        ),
        (_, "AccessDenied") => format!(
            "let {}'s trust policy allow sts:AssumeRoleWithWebIdentity for aud {} and sub {spiffe_id} (deploy/aws/)",
            aws.role_arn, aws.audience
        ),
        _ => format!(
            "check aws.role_arn ({}) and its trust policy (deploy/aws/)",
            aws.role_arn
        ),
    }
}

fn kms_fix(config: &Config, key: &str, error: &ResolveError) -> String {
    match error {
        ResolveError::Refused(_) => format!(
            "add the key's arn:<partition>:kms:<region>:<account>: prefix to aws.key_arn_allowlist, or re-seal the envelopes of {key} under an allowed key"
        ),
        ResolveError::Unavailable(_) => {
            "KMS is unreachable: check aws.kms_endpoint (unset: AWS_ENDPOINT_URL_KMS) and the \
             network path to KMS"
                .to_owned()
        }
        _ => format!(
            "grant {} kms:DescribeKey and kms:Decrypt on {key} and check the key exists and is enabled (deploy/aws/)",
            config.aws.role_arn
        ),
    }
}
