use std::os::unix::fs::PermissionsExt as _;
use std::time::SystemTime;

use base64::Engine as _;
use steeple_plugin_api::{BoxFuture, ExchangeError, JwtSvidSource, SecretBytes};

use super::report::Report;
use super::*;
use crate::doctor_check::{Check, Status};

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Vec::<(String, String)>::new())
}

fn sample() -> Report {
    Report {
        checks: vec![
            Check::ok("config", "steeple.toml is valid"),
            Check::fail(
                "vault.login",
                "role \"nope\" could not be found",
                "check the role",
            ),
            Check::skipped("vault.revoke", "no token to revoke"),
        ],
    }
}

#[test]
fn human_report_has_a_line_per_check_a_fix_and_a_summary() {
    let text = sample().human();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("✔ config ") && lines[0].ends_with("steeple.toml is valid"));
    assert!(lines[1].starts_with("✘ vault.login ") && lines[1].contains("could not be found"));
    assert!(
        lines[2].trim_start().starts_with("fix: check the role"),
        "{text}"
    );
    assert!(lines[3].starts_with("– vault.revoke ") && lines[3].contains("skipped: no token"));
    assert_eq!(lines[4], "NOT ready: 1 ok, 1 failed, 1 skipped");
}

#[test]
fn json_report_is_an_array_of_check_status_detail_fix() {
    let value: serde_json::Value = serde_json::from_str(&sample().json()).unwrap();
    let items = value.as_array().unwrap();
    assert_eq!(items.len(), 3);
    for item in items {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["check", "detail", "fix", "status"]);
    }
    assert_eq!(items[0]["status"], "ok");
    assert!(items[0]["fix"].is_null());
    assert_eq!(items[1]["status"], "fail");
    assert_eq!(items[1]["check"], "vault.login");
    assert_eq!(items[1]["fix"], "check the role");
    assert_eq!(items[2]["status"], "skipped");
    assert_eq!(items[2]["detail"], "no token to revoke");
}

#[test]
fn exit_code_is_one_only_when_a_check_failed() {
    let mut report = sample();
    assert!(report.failed());
    assert_eq!(report.exit_code(), ExitCode::FAILURE);
    report.checks.retain(|c| c.status != Status::Fail);
    assert!(!report.failed());
    assert_eq!(report.exit_code(), ExitCode::SUCCESS);
    assert!(
        report
            .human()
            .ends_with("ready: 1 ok, 0 failed, 1 skipped\n")
    );
}

#[tokio::test]
async fn an_invalid_config_names_every_bad_key_and_skips_the_rest() {
    let loaded = parse("[sds]\nbogus = 1\nsocket_mode = \"999\"\n[vault]\nnonsense = true\n");
    let report = diagnose(Some(Path::new("bad.toml")), loaded).await;
    let config = &report.checks[0];
    assert_eq!(
        (config.check.as_str(), config.status),
        ("config", Status::Fail)
    );
    for key in ["sds.bogus", "sds.socket_mode", "vault.nonsense"] {
        assert!(config.detail.contains(key), "{}", config.detail);
    }
    assert!(config.fix.is_some());
    assert_eq!(report.checks.len(), 2);
    assert_eq!(report.checks[1].status, Status::Skipped);
    assert_eq!(report.exit_code(), ExitCode::FAILURE);
}

#[test]
fn each_configured_section_is_explained_in_one_line() {
    let config = parse(
        "[vault]\nenabled = true\naddr = \"https://ops:pw@vault.example.org:8200/?token=x\"\n\
         role = \"payments-api\"\n[aws]\nenabled = true\n\
         role_arn = \"arn:aws:iam::123456789012:role/payments-api\"\n",
    )
    .unwrap();
    let lines = local::explain(&config);
    let names: Vec<&str> = lines.iter().map(|c| c.check.as_str()).collect();
    assert_eq!(
        names,
        [
            "config.workload_api",
            "config.sds",
            "config.aws",
            "config.vault"
        ]
    );
    let vault = &lines[3].detail;
    assert!(
        vault.starts_with("JWT login as role payments-api at https://vault.example.org:8200/"),
        "{vault}"
    );
    assert!(
        vault.contains("audience vault") && !vault.contains("pw") && !vault.contains("token=x")
    );
    assert!(
        lines[2].detail.contains("role/payments-api")
            && lines[2].detail.contains("sts.amazonaws.com")
    );
    assert!(
        lines
            .iter()
            .all(|c| c.status == Status::Ok && !c.detail.contains('\n'))
    );
}

#[test]
fn an_enabled_provider_needs_its_cargo_feature() {
    let missing = local::feature("vault", true, false);
    assert_eq!(missing.status, Status::Fail);
    assert!(missing.detail.contains("without the `vault` cargo feature"));
    assert!(
        missing
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("--features vault")
    );
    assert_eq!(local::feature("aws", true, true).status, Status::Ok);
    assert_eq!(local::feature("aws", false, false).status, Status::Skipped);
    let config =
        parse("[vault]\nenabled = true\naddr = \"https://v:8200\"\nrole = \"r\"\n").unwrap();
    let features = local::features(&config);
    let expected = if cfg!(feature = "vault") {
        Status::Ok
    } else {
        Status::Fail
    };
    assert_eq!(
        (features[1].check.as_str(), features[1].status),
        ("feature.vault", expected)
    );
    assert_eq!(features[0].status, Status::Skipped);
}

#[tokio::test]
async fn the_workload_api_socket_must_exist_and_be_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let missing = local::workload_socket(&socket);
    assert_eq!(missing.status, Status::Fail);
    assert!(
        missing
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("SPIRE agent")
    );
    let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
    assert_eq!(local::workload_socket(&socket).status, Status::Ok);
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(local::workload_socket(&file).status, Status::Fail);
}

#[tokio::test]
async fn the_sds_socket_directory_must_be_safe() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("run");
    std::fs::create_dir(&good).unwrap();
    assert_eq!(local::sds_socket(&good.join("sds.sock")).status, Status::Ok);
    let _listener = tokio::net::UnixListener::bind(good.join("live.sock")).unwrap();
    assert_eq!(
        local::sds_socket(&good.join("live.sock")).status,
        Status::Ok
    );

    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let check = local::sds_socket(&open.join("sds.sock"));
    assert!(
        check.status == Status::Fail && check.detail.contains("writable by every user"),
        "{check:?}"
    );

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let check = local::sds_socket(&link.join("sds.sock"));
    assert!(
        check.status == Status::Fail && check.detail.contains("symbolic link"),
        "{check:?}"
    );

    let absent = local::sds_socket(&dir.path().join("absent/sds.sock"));
    assert_eq!(absent.status, Status::Fail);
    assert!(
        absent
            .fix
            .unwrap_or_default()
            .contains("install -d -m 0750")
    );

    std::os::unix::fs::symlink("/etc/passwd", good.join("sds.sock")).unwrap();
    let check = local::sds_socket(&good.join("sds.sock"));
    assert!(
        check.status == Status::Fail && check.detail.contains("symbolic link"),
        "{check:?}"
    );

    std::fs::write(good.join("other.sock"), b"x").unwrap();
    let check = local::sds_socket(&good.join("other.sock"));
    assert!(
        check.status == Status::Fail && check.detail.contains("not a socket"),
        "{check:?}"
    );
}

/// Hands out one fixed token, as a Workload API would.
#[derive(Debug)]
struct FixedJwt(String);

impl JwtSvidSource for FixedJwt {
    fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<SecretBytes, ExchangeError>> {
        Box::pin(async { Ok(SecretBytes::copy_from(self.0.as_bytes())) })
    }
}

fn token(alg: &str) -> String {
    let part = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        part(&format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}")),
        part(&format!(
            "{{\"sub\":\"spiffe://example.org/w\",\"exp\":{exp}}}"
        ))
    )
}

#[tokio::test]
async fn sts_needs_an_rsa_signed_jwt_svid_and_the_token_is_never_shown() {
    for (alg, sts, status) in [
        ("RS256", true, Status::Ok),
        ("PS384", true, Status::Ok),
        ("ES256", true, Status::Fail),
        ("ES256", false, Status::Ok),
    ] {
        let jwt = FixedJwt(token(alg));
        let (check, usable) =
            identity::jwt_svid("jwt_svid.aws", &jwt, "sts.amazonaws.com", sts).await;
        assert_eq!(
            (check.status, usable),
            (status, status == Status::Ok),
            "{alg}: {check:?}"
        );
        assert!(check.detail.contains(alg), "{check:?}");
        let shown = Report {
            checks: vec![check],
        };
        for part in jwt.0.split('.') {
            assert!(!shown.json().contains(part) && !shown.human().contains(part));
        }
    }
    let jwt = FixedJwt(token("ES256"));
    let (check, _) = identity::jwt_svid("jwt_svid.aws", &jwt, "sts.amazonaws.com", true).await;
    assert!(check.fix.unwrap_or_default().contains("jwt_key_type"));
    assert_eq!(identity::header_alg("not a jwt"), None);
}

#[tokio::test]
async fn without_a_workload_api_its_checks_fail_with_a_fix_and_the_rest_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[workload_api]\nsocket = \"{}\"\n[sds]\nsocket = \"{}\"\n\
         [vault]\nenabled = true\naddr = \"http://127.0.0.1:1\"\nrole = \"r\"\n",
        dir.path().join("absent.sock").display(),
        dir.path().join("sds.sock").display()
    );
    let report = diagnose(None, parse(&text)).await;
    let status = |name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.check == name)
            .map(|c| c.status)
    };
    assert_eq!(status("socket.workload_api"), Some(Status::Fail));
    assert_eq!(status("socket.sds"), Some(Status::Ok));
    assert_eq!(status("workload_api.x509_svid"), Some(Status::Fail));
    assert_eq!(status("jwt_svid.vault"), Some(Status::Skipped));
    assert_eq!(status("vault.login"), Some(Status::Skipped));
    assert_eq!(status("aws.sts"), Some(Status::Skipped));
    let x509 = report
        .checks
        .iter()
        .find(|c| c.check == "workload_api.x509_svid");
    assert!(
        x509.and_then(|c| c.fix.as_deref())
            .unwrap_or_default()
            .contains("SPIRE agent")
    );
    assert_eq!(report.exit_code(), ExitCode::FAILURE);
}
