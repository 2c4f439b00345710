//! `steeple doctor` against real peers: a real SPIRE issues the SVIDs, OpenBao (configured
//! as `deploy/vault/` says) takes the JWT login, moto plays STS and KMS. Vault and STS are
//! reached through a recording pass-through, so the suite knows the exact JWT-SVID,
//! Vault token and AWS credentials the run handled. Phases, one world:
//! (a) everything right: exit 0, every check ok, the Vault token revoked afterwards;
//! (d) none of those secrets in the JSON or human output;
//! (c) a role Vault does not know: exit 1, `vault.login` fails with a fix;
//! (b) the SPIRE agent gone: exit 1, the Workload API checks fail with a fix.

mod tee;
use crate::vault_envelopes::support as vault_support;

use std::path::{Path, PathBuf};

use steeple_e2e::moto::Moto;
use steeple_e2e::openbao::OpenBao;
use steeple_e2e::steeple::steeple_bin;
use steeple_e2e::suite::uid_selector;
use steeple_e2e::{Spire, SpireOptions};
use tee::{Tee, between};
use vault_support::{ROLE, WORKLOAD};

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/payments-api";

/// What one `steeple doctor` run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn checks(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let value: serde_json::Value = serde_json::from_str(&self.stdout)
            .map_err(|e| anyhow::anyhow!("{e}: {}\n{}", self.stdout, self.stderr))?;
        value
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("not an array: {}", self.stdout))
    }

    /// The names of the checks with `status`.
    fn named(&self, status: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .checks()?
            .iter()
            .filter(|c| c["status"] == status)
            .map(|c| c["check"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    fn check(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        self.checks()?
            .into_iter()
            .find(|c| c["check"] == name)
            .ok_or_else(|| anyhow::anyhow!("no check {name} in {}", self.stdout))
    }
}

async fn doctor(config: &Path, json: bool) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new(steeple_bin()?);
    command.arg("doctor").arg("--config").arg(config);
    if json {
        command.arg("--json");
    }
    let output = command
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .output()
        .await?;
    Ok(Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    })
}

struct World {
    spire: Spire,
    bao: OpenBao,
    vault_tee: Tee,
    sts_tee: Tee,
    sts: Moto,
    _kms: Moto,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> anyhow::Result<Self> {
        let bao = OpenBao::start()?;
        let spire = Spire::start(SpireOptions::default())?;
        spire.create_entry(WORKLOAD, &uid_selector(), None)?;
        vault_support::configure(&bao.admin(), vault_support::spire_jwt_keys(&spire)?, "1h")?;
        let sts = Moto::start().await?;
        let kms = Moto::start().await?;
        let key = kms.create_key("us-east-1").await?;
        let vault_tee = Tee::start(bao.port()).await?;
        let sts_tee = Tee::start(sts.port()).await?;
        let dir = tempfile::Builder::new()
            .prefix("steeple-doctor-")
            .tempdir_in("/tmp")?;
        std::fs::create_dir(dir.path().join("run"))?;
        let envelopes = dir.path().join("envelopes");
        std::fs::create_dir(&envelopes)?;
        let row = serde_json::json!([{
            "logical_path": "payments/api-token", "provider": "kms_envelope",
            "key_id": key, "ciphertext_ref": "AAAA", "aad": "service=api",
        }]);
        std::fs::write(envelopes.join("rows.json"), serde_json::to_vec(&row)?)?;
        let (allow, _) = key
            .split_once("key/")
            .ok_or_else(|| anyhow::anyhow!("{key} is not a key ARN"))?;
        let config = format!(
            "[workload_api]\nsocket = \"{socket}\"\n[sds]\nsocket = \"{sds}\"\n\
             [envelopes]\nenabled = true\npaths = [\"{envelopes}\"]\n\
             [aws]\nenabled = true\nrole_arn = \"{ROLE_ARN}\"\nsts_endpoint = \"{sts}\"\n\
             kms_endpoint = \"{kms}\"\nkey_arn_allowlist = [\"{allow}\"]\n\
             [vault]\nenabled = true\naddr = \"{vault}\"\nrole = \"ROLE\"\naudience = \"vault\"\n",
            socket = spire.agent_socket().display(),
            sds = dir.path().join("run/sds.sock").display(),
            envelopes = envelopes.display(),
            sts = sts_tee.url(),
            kms = kms.endpoint(),
            vault = vault_tee.url(),
        );
        std::fs::write(
            dir.path().join("good.toml"),
            config.replace("\"ROLE\"", &format!("\"{ROLE}\"")),
        )?;
        std::fs::write(
            dir.path().join("wrong-role.toml"),
            config.replace("\"ROLE\"", "\"nope\""),
        )?;
        Ok(Self {
            spire,
            bao,
            vault_tee,
            sts_tee,
            sts,
            _kms: kms,
            dir,
        })
    }

    fn config(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_every_peer_and_never_prints_a_secret() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    let good = world.config("good.toml");

    // (a) Everything right: exit 0, every check ok, nothing skipped.
    let json = doctor(&good, true).await?;
    assert_eq!(json.code, Some(0), "{}\n{}", json.stdout, json.stderr);
    let names: Vec<String> = json.named("ok")?;
    assert_eq!(names.len(), json.checks()?.len(), "{}", json.stdout);
    for expected in [
        "config",
        "config.vault",
        "config.aws",
        "feature.aws",
        "feature.vault",
        "socket.workload_api",
        "socket.sds",
        "workload_api.x509_svid",
        "jwt_svid.aws",
        "jwt_svid.vault",
        "aws.sts",
        "aws.kms_key",
        "vault.login",
        "vault.revoke",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    assert!(
        json.check("workload_api.x509_svid")?["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(WORKLOAD)
    );
    assert!(
        json.check("jwt_svid.aws")?["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("RS256")
    );
    let human = doctor(&good, false).await?;
    assert_eq!(human.code, Some(0), "{}\n{}", human.stdout, human.stderr);
    let last = human.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ready: ") && last.contains(" 0 failed, 0 skipped"),
        "{}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("✔ vault.login ")),
        "{}",
        human.stdout
    );

    // Both runs logged in and revoked their tokens: Vault no longer knows them.
    let tokens = between(&world.vault_tee.received(), "\"client_token\":\"", "\"");
    assert_eq!(tokens.len(), 2, "one login per run");
    assert_eq!(
        world
            .vault_tee
            .sent()
            .matches("auth/token/revoke-self")
            .count(),
        2
    );
    for token in &tokens {
        let lookup = world.bao.admin().cli(&["token", "lookup", token.as_str()]);
        assert!(lookup.is_err(), "the token doctor got is still valid");
    }

    // (d) The canary: no JWT-SVID, Vault token or AWS credential in any output.
    let mut secrets = tokens;
    secrets.extend(between(&world.vault_tee.sent(), "\"jwt\":\"", "\""));
    let sts_answers = world.sts_tee.received();
    secrets.extend(between(
        &sts_answers,
        "<SecretAccessKey>",
        "</SecretAccessKey>",
    ));
    secrets.extend(between(&sts_answers, "<SessionToken>", "</SessionToken>"));
    let assumed = world.sts.requests()?;
    secrets.extend(
        assumed
            .iter()
            .filter_map(|r| r.param("WebIdentityToken").map(str::to_owned)),
    );
    assert!(
        secrets.len() >= 2 + 2 + 4 + 2,
        "canaries: {}",
        secrets.len()
    );
    for run in [&json, &human] {
        for secret in &secrets {
            assert!(
                !run.stdout.contains(secret.as_str()) && !run.stderr.contains(secret.as_str()),
                "a secret reached doctor's output"
            );
        }
        assert!(
            !run.stdout.contains("eyJ"),
            "something JWT-shaped in the output"
        );
    }

    // (c) A role Vault does not know: exit 1, vault.login named, with its fix.
    let wrong = doctor(&world.config("wrong-role.toml"), true).await?;
    assert_eq!(wrong.code, Some(1), "{}", wrong.stdout);
    assert_eq!(wrong.named("fail")?, ["vault.login"]);
    let login = wrong.check("vault.login")?;
    assert!(
        login["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("nope"),
        "{login}"
    );
    assert!(
        login["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("auth/jwt/role/nope"),
        "{login}"
    );
    assert_eq!(wrong.check("vault.revoke")?["status"], "skipped");

    // (b) The SPIRE agent gone, its socket with it: exit 1, the Workload API checks fail.
    world.spire.stop_agent()?;
    let _ = std::fs::remove_file(world.spire.agent_socket());
    let human = doctor(&good, false).await?;
    assert_eq!(human.code, Some(1), "{}", human.stdout);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("✘ workload_api.x509_svid ")),
        "{}",
        human.stdout
    );
    let gone = doctor(&good, true).await?;
    assert_eq!(gone.code, Some(1));
    assert_eq!(
        gone.named("fail")?,
        ["socket.workload_api", "workload_api.x509_svid"]
    );
    let x509 = gone.check("workload_api.x509_svid")?;
    assert!(
        x509["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("SPIRE agent"),
        "{x509}"
    );
    for skipped in ["jwt_svid.aws", "jwt_svid.vault", "aws.sts", "vault.login"] {
        assert_eq!(gone.check(skipped)?["status"], "skipped", "{skipped}");
    }
    Ok(())
}
