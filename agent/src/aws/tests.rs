use super::*;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::test_support::side_context;

fn aws_config(extra: &str) -> AwsConfig {
    let text = format!(
        "[aws]\nenabled = true\nrole_arn = \"arn:aws:iam::123456789012:role/app\"\n{extra}"
    );
    Config::parse(&text, std::iter::empty())
        .expect("valid config")
        .aws
}

fn start_with(config: &AwsConfig) -> Result<Option<AwsRuntime>, AwsStartError> {
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let started = start(config, &side_context(&shutdown), &mut tasks);
    shutdown.cancel();
    started
}

#[tokio::test]
async fn disabled_starts_nothing() {
    let config = AwsConfig {
        enabled: false,
        ..aws_config("")
    };
    assert!(start_with(&config).unwrap().is_none());
}

#[tokio::test]
async fn a_bad_allowlist_entry_is_named_before_anything_starts() {
    let config = aws_config("key_arn_allowlist = [\"arn:aws:s3:::bucket\"]");
    let err = start_with(&config).unwrap_err().to_string();
    assert!(err.starts_with("aws.key_arn_allowlist:"), "{err}");
}

#[tokio::test]
async fn a_busy_container_endpoint_address_is_named() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let config = aws_config(&format!(
        "container_credentials_listen = \"{addr}\"\ncontainer_credentials_token_file = \"/t\""
    ));
    let err = start_with(&config).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "aws.container_credentials_listen: cannot listen on {addr}"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn enabled_serves_kms_and_starts_without_credentials() {
    let runtime = start_with(&aws_config("")).unwrap().expect("enabled");
    assert_eq!(
        runtime.kms.provider(),
        steeple_plugin_api::Provider::KmsEnvelope
    );
    assert!(runtime.credentials.borrow().is_none());
}

#[tokio::test]
async fn a_busy_imds_address_is_named() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let config = aws_config(&format!("imds_listen = \"{addr}\""));
    let err = start_with(&config).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("aws.imds_listen: cannot listen on {addr}")),
        "{err}"
    );
}
