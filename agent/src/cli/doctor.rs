//! `steeple doctor [--config FILE] [--json]`: what an operator runs before deploying. It
//! checks the configuration, the cargo features it needs, the socket paths, the Workload
//! API (an X.509-SVID, and JWT-SVIDs STS and Vault will accept), and the upstreams with
//! the workload's own identity (STS, KMS `DescribeKey`, a Vault login revoked at once).
//! One line per check, each failure with its fix; exit 0 only when nothing failed.
//! Nothing secret is printed: SPIFFE IDs, key ARNs, expiry times, a token accessor.

mod identity;
mod local;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use steeple_plugin_api::JwtSvidSource;

use crate::config::{Config, ConfigErrors};
use crate::doctor_check::{Check, Issued};
use crate::exchange::jwt_source::WorkloadApiJwtFetcher;
use crate::sides::doctor::{aws_checks, vault_checks};
use report::Report;

/// Arguments of `steeple doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// TOML configuration file; `STEEPLE_<SECTION>_<KEY>` variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print a JSON array of `{check, status, detail, fix}` instead of lines.
    #[arg(long)]
    json: bool,
}

/// Runs every check, prints the report, and exits 0 when nothing failed, 1 otherwise.
pub fn run(args: &DoctorArgs) -> ExitCode {
    let loaded = Config::load(args.config.as_deref(), std::env::vars());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("steeple doctor: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(diagnose(args.config.as_deref(), loaded));
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    report.exit_code()
}

/// Every check, in order; peers are only asked when the configuration is valid.
async fn diagnose(file: Option<&Path>, loaded: Result<Config, ConfigErrors>) -> Report {
    let mut report = Report::default();
    report.push(local::config_check(&loaded, file));
    let Ok(config) = loaded else {
        report.push(Check::skipped(
            "other checks",
            "the configuration is invalid",
        ));
        return report;
    };
    report.checks.extend(local::explain(&config));
    report.checks.extend(local::features(&config));
    report.push(local::workload_socket(&config.workload_api.socket));
    report.push(local::sds_socket(&config.sds.socket));
    report.checks.extend(peers(&config).await);
    report
}

/// The Workload API, then the JWT-SVIDs and upstreams that depend on it.
async fn peers(config: &Config) -> Vec<Check> {
    let client = crate::identity::client(&config.workload_api.socket);
    let (x509, issued) = identity::x509(&client, &config.workload_api.socket).await;
    let mut out = vec![x509];
    out.extend(crate::delegated::doctor::check(&config.workload_api.mode).await);
    let jwt = WorkloadApiJwtFetcher::new(client, None);
    let aws = &config.aws;
    let vault = &config.vault;
    let (check, aws_ready) = jwt_check(
        "jwt_svid.aws",
        aws.enabled,
        "aws",
        &jwt,
        &aws.audience,
        true,
        issued.as_ref(),
    )
    .await;
    out.push(check);
    let (check, vault_ready) = jwt_check(
        "jwt_svid.vault",
        vault.enabled,
        "vault",
        &jwt,
        &vault.audience,
        false,
        issued.as_ref(),
    )
    .await;
    out.push(check);
    match (aws.enabled, &issued) {
        (false, _) => out.push(Check::skipped("aws.sts", "[aws] is not enabled")),
        (true, Some(issued)) if aws_ready => out.extend(aws_checks(config, &jwt, issued).await),
        (true, _) => out.push(Check::skipped(
            "aws.sts",
            "no usable JWT-SVID (see jwt_svid.aws)",
        )),
    }
    match (vault.enabled, &issued) {
        (false, _) => out.push(Check::skipped("vault.login", "[vault] is not enabled")),
        (true, Some(issued)) if vault_ready => out.extend(vault_checks(config, &jwt, issued).await),
        (true, _) => out.push(Check::skipped(
            "vault.login",
            "no usable JWT-SVID (see jwt_svid.vault)",
        )),
    }
    out
}

/// `name` for a section's audience: skipped when the section is off or no SVID came.
async fn jwt_check(
    name: &str,
    enabled: bool,
    section: &str,
    jwt: &dyn JwtSvidSource,
    audience: &str,
    sts: bool,
    issued: Option<&Issued>,
) -> (Check, bool) {
    match (enabled, issued) {
        (false, _) => (
            Check::skipped(name, format!("[{section}] is not enabled")),
            false,
        ),
        (true, None) => (
            Check::skipped(name, "no X.509-SVID (see workload_api.x509_svid)"),
            false,
        ),
        (true, Some(_)) => identity::jwt_svid(name, jwt, audience, sts).await,
    }
}

#[cfg(test)]
mod tests;
