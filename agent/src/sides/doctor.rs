//! `steeple doctor`'s checks of each side's upstream, with the workload's own identity; a
//! side that is not compiled in is one skipped check naming its feature.

use steeple_plugin_api::JwtSvidSource;

use crate::config::Config;
use crate::doctor_check::{Check, Issued};

/// `aws.sts` and `aws.kms_key`.
#[cfg(feature = "aws")]
pub async fn aws_checks(config: &Config, jwt: &dyn JwtSvidSource, issued: &Issued) -> Vec<Check> {
    let spiffe_id = issued.spiffe_ids.first().map_or("", String::as_str);
    crate::aws::doctor::checks(config, jwt, spiffe_id).await
}

/// `aws.sts`, skipped: this build has no AWS side.
#[cfg(not(feature = "aws"))]
pub async fn aws_checks(_: &Config, _: &dyn JwtSvidSource, _: &Issued) -> Vec<Check> {
    vec![Check::skipped(
        "aws.sts",
        "not compiled in (see feature.aws)",
    )]
}

/// `vault.login` and `vault.revoke`.
#[cfg(feature = "vault")]
pub async fn vault_checks(config: &Config, jwt: &dyn JwtSvidSource, issued: &Issued) -> Vec<Check> {
    crate::vault::doctor::checks(&config.vault, jwt, issued).await
}

/// `vault.login`, skipped: this build has no Vault side.
#[cfg(not(feature = "vault"))]
pub async fn vault_checks(_: &Config, _: &dyn JwtSvidSource, _: &Issued) -> Vec<Check> {
    vec![Check::skipped(
        "vault.login",
        "not compiled in (see feature.vault)",
    )]
}
