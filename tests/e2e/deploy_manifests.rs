//! The deployment artefacts under `deploy/` hold what they promise: the Helm chart lints
//! clean and renders both modes (sidecar, DaemonSet) into hardened pods whose wiring is
//! right (the SDS socket shared by Steeple and Envoy only, the SPIRE socket mounted where
//! the config says, Envoy allowed the names it asks for) and whose steeple.toml Steeple's
//! own `check-config` accepts, with the admin listener probed (liveness `/healthz`,
//! readiness `/readyz`) and scraped (annotations, or a ServiceMonitor); the raw Kubernetes
//! manifests the same; and the systemd unit carries its sandboxing, is `Type=notify` with
//! a watchdog, and passes `systemd-analyze verify`.

mod pods;
mod probes;
mod support;

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use pods::{daemonset_problems, sidecar_problems, toml_str};
use serde_yaml_ng::Value;
use support::{
    Helm, at, deploy_file, only, run, seq_at, steeple_check_config, steeple_tomls, str_at,
    yaml_documents,
};

fn assert_none(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}:\n  - {}",
        problems.join("\n  - ")
    );
}

#[test]
fn the_chart_lints_clean_in_both_modes() -> anyhow::Result<()> {
    let helm = Helm::new()?;
    for mode in ["mode=sidecar", "mode=daemonset"] {
        let out = run(&mut helm.command(&["lint", "--strict", "{chart}", "--set", mode]))?;
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{mode}: {out}"
        );
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "{mode}: {out}"
        );
    }
    Ok(())
}

#[test]
fn the_chart_renders_a_hardened_sidecar_pod() -> anyhow::Result<()> {
    let docs = Helm::new()?.template(&[])?;
    assert_none("sidecar (chart defaults)", &sidecar_problems(&docs)?);
    assert!(
        only(&docs, "DaemonSet").is_err(),
        "sidecar mode renders no DaemonSet"
    );
    Ok(())
}

#[test]
fn the_chart_renders_a_hardened_daemonset_with_aws_and_vault() -> anyhow::Result<()> {
    let docs = Helm::new()?.template(&[
        "--set=mode=daemonset",
        "--set=spireSocket.source=hostPath",
        "--set=aws.enabled=true,aws.role_arn=arn:aws:iam::111122223333:role/payments-api",
        "--set=aws.key_arn_allowlist={arn:aws:kms:ca-central-1:111122223333:key/}",
        "--set=vault.enabled=true,vault.addr=https://vault.example.org:8200",
        "--set=vault.role=payments-api,vault.kv_version=1,vault.caSecret=vault-ca",
        r#"--set-json=vault.allow=[{"mount":"secret","paths":["payments-api"]}]"#,
    ])?;
    assert_none(
        "daemonset (hostPath, AWS, Vault)",
        &daemonset_problems(&docs)?,
    );
    assert!(
        only(&docs, "Deployment").is_err(),
        "daemonset mode renders no Deployment"
    );
    let [(_, text)] = steeple_tomls(&docs)
        .try_into()
        .map_err(|_| anyhow::anyhow!("one config"))?;
    let config: toml::Table = text.parse()?;
    assert_eq!(
        config["aws"]["key_arn_allowlist"][0].as_str(),
        Some("arn:aws:kms:ca-central-1:111122223333:key/")
    );
    assert_eq!(
        config["vault"]["kv_version"].as_integer(),
        Some(1),
        "{text}"
    );
    assert!(config["vault"].get("caSecret").is_none(), "{text}");
    assert_eq!(
        config["vault"]["allow"][0]["paths"][0].as_str(),
        Some("payments-api"),
        "{text}"
    );
    Ok(())
}

/// Daemonset mode is a node agent (`nodeAgent.enabled`, the default): the DaemonSet shares
/// the node's PID namespace, mounts SPIRE agent's admin socket directory read-only, and
/// its config (accepted by `check-config`) runs delegated mode on that socket. Turned
/// off, or in sidecar mode, the pod serves its own identity.
#[test]
fn the_chart_renders_a_node_agent_daemonset() -> anyhow::Result<()> {
    let helm = Helm::new()?;
    let docs = helm.template(&[
        "--set=mode=daemonset,spireSocket.source=hostPath",
        "--set=nodeAgent.defaultSvidHint=internal",
    ])?;
    assert_none("node agent daemonset", &daemonset_problems(&docs)?);
    let config = node_agent_pod(only(&docs, "DaemonSet")?, &docs)?;
    assert_eq!(
        toml_str(&config, "workload_api", "default_svid_hint"),
        "internal"
    );
    let off: [&[&str]; 2] = [
        &["--set=mode=daemonset", "--set=nodeAgent.enabled=false"],
        &["--set=mode=sidecar"],
    ];
    for args in off {
        let docs = helm.template(args)?;
        let [(_, text)] = steeple_tomls(&docs)
            .try_into()
            .map_err(|_| anyhow::anyhow!("one config"))?;
        assert!(!text.contains("delegated"), "{args:?}: {text}");
    }
    Ok(())
}

/// The raw DaemonSet manifest is a node agent too.
#[test]
fn the_raw_daemonset_is_a_node_agent() -> anyhow::Result<()> {
    let docs = yaml_documents(&deploy_file("kubernetes/daemonset.yaml")?)?;
    node_agent_pod(only(&docs, "DaemonSet")?, &docs).map(drop)
}

/// Checks that `workload` runs Steeple as a node agent — hostPID, SPIRE agent's admin
/// socket mounted read-only, the config in `docs` in delegated mode on that socket — and
/// returns that config.
fn node_agent_pod(workload: &Value, docs: &[Value]) -> anyhow::Result<toml::Table> {
    let pod = at(workload, &["spec", "template", "spec"]).context("no pod spec")?;
    assert_eq!(at(pod, &["hostPID"]).and_then(Value::as_bool), Some(true));
    let admin = seq_at(pod, &["volumes"])
        .iter()
        .find(|v| str_at(v, &["name"]) == "spire-agent-admin")
        .context("no spire-agent-admin volume")?;
    assert_eq!(
        str_at(admin, &["hostPath", "path"]),
        "/run/spire/agent-admin"
    );
    let steeple = seq_at(pod, &["containers"])
        .iter()
        .find(|c| str_at(c, &["name"]) == "steeple")
        .context("no steeple container")?;
    let mount = seq_at(steeple, &["volumeMounts"])
        .iter()
        .find(|m| str_at(m, &["name"]) == "spire-agent-admin")
        .context("the admin socket is not mounted")?;
    assert_eq!(
        at(mount, &["readOnly"]).and_then(Value::as_bool),
        Some(true)
    );
    let [(_, text)] = steeple_tomls(docs)
        .try_into()
        .map_err(|_| anyhow::anyhow!("one config"))?;
    let config: toml::Table = text.parse()?;
    assert_eq!(
        toml_str(&config, "workload_api", "mode"),
        "delegated",
        "{text}"
    );
    assert_eq!(
        toml_str(&config, "workload_api", "admin_socket"),
        format!("{}/admin.sock", str_at(mount, &["mountPath"])),
        "{text}"
    );
    Ok(config)
}

#[test]
fn the_chart_adds_a_service_monitor_or_leaves_the_admin_listener_off() -> anyhow::Result<()> {
    let helm = Helm::new()?;
    for mode in ["mode=sidecar", "mode=daemonset"] {
        let docs = helm.template(&[
            &format!("--set={mode}"),
            "--set=admin.port=9100,admin.serviceMonitor.enabled=true",
            "--set=admin.prometheusAnnotations=true",
        ])?;
        let problems = if mode == "mode=sidecar" {
            sidecar_problems(&docs)?
        } else {
            daemonset_problems(&docs)?
        };
        assert_none(mode, &problems);
        assert_none(
            &format!("{mode} ServiceMonitor"),
            &probes::service_monitor_problems(&docs, "admin"),
        );
    }
    // Without a ServiceMonitor none is rendered (the CRD may not exist in the cluster).
    let plain = helm.template(&[])?;
    assert!(only(&plain, "ServiceMonitor").is_err());

    let off = helm.template(&["--set=admin.enabled=false"])?;
    let [(_, text)] = steeple_tomls(&off)
        .try_into()
        .map_err(|_| anyhow::anyhow!("one config"))?;
    assert!(!text.contains("[admin]"), "{text}");
    let deployment = serde_yaml_ng::to_string(only(&off, "Deployment")?)?;
    for absent in ["livenessProbe", "readinessProbe", "prometheus.io/scrape"] {
        assert!(
            !deployment.contains(absent),
            "{absent} without an admin listener"
        );
    }
    Ok(())
}

#[test]
fn bad_values_fail_the_render_or_steeple_check_config() -> anyhow::Result<()> {
    let helm = Helm::new()?;
    assert!(
        helm.template(&["--set=mode=node"]).is_err(),
        "unknown mode rendered"
    );
    assert!(
        helm.template(&["--set-json=config.sds.max_resource_names=1.5"])
            .is_err()
    );
    let docs = helm.template(&["--set=config.sds.max_request_byte=1"])?;
    let [(_, text)] = steeple_tomls(&docs)
        .try_into()
        .map_err(|_| anyhow::anyhow!("one config"))?;
    let report = steeple_check_config(&text)?
        .err()
        .context("a misspelt key was accepted")?;
    assert!(
        report.contains("sds.max_request_byte: unknown key"),
        "{report}"
    );
    Ok(())
}

#[test]
fn the_raw_kubernetes_manifests_parse_and_hold_the_same_invariants() -> anyhow::Result<()> {
    let sidecar = yaml_documents(&deploy_file("kubernetes/sidecar.yaml")?)?;
    assert_none("kubernetes/sidecar.yaml", &sidecar_problems(&sidecar)?);
    let daemonset = yaml_documents(&deploy_file("kubernetes/daemonset.yaml")?)?;
    assert_none(
        "kubernetes/daemonset.yaml",
        &daemonset_problems(&daemonset)?,
    );
    for (name, text) in steeple_tomls(&sidecar)
        .into_iter()
        .chain(steeple_tomls(&daemonset))
    {
        assert_eq!(steeple_check_config(&text)?, Ok(()), "ConfigMap {name}");
    }
    Ok(())
}

/// `[Section]` → `Key=Value` lines of a unit file, in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

const HARDENING: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("RestrictNamespaces", "yes"),
    ("SystemCallArchitectures", "native"),
    ("CapabilityBoundingSet", ""),
    ("LimitCORE", "0"),
    ("LimitMEMLOCK", "infinity"),
    ("RuntimeDirectory", "steeple"),
    ("RuntimeDirectoryMode", "0750"),
    ("ConfigurationDirectory", "steeple"),
    ("User", "steeple"),
    ("Restart", "on-failure"),
    ("KillSignal", "SIGTERM"),
    // READY=1 (with /readyz's condition), STATUS=, RELOADING=1, STOPPING=1, WATCHDOG=1.
    ("Type", "notify"),
    ("NotifyAccess", "main"),
    (
        "ExecStart",
        "/usr/local/bin/steeple run --config /etc/steeple/steeple.toml",
    ),
];

#[test]
fn the_systemd_unit_is_hardened_and_verifies() -> anyhow::Result<()> {
    let unit = deploy_file("systemd/steeple.service")?;
    let settings = unit_settings(&unit);
    let last = |key: &str| {
        settings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let mut problems: Vec<String> = HARDENING
        .iter()
        .filter(|(key, want)| last(key) != Some(want))
        .map(|(key, want)| format!("{key}={want} (found {:?})", last(key)))
        .collect();
    for key in ["TimeoutStopSec", "TimeoutStartSec", "WatchdogSec"] {
        if last(key).is_none_or(str::is_empty) {
            problems.push(format!("{key} missing"));
        }
    }
    // Both would hide the SDS caller's real uid or /proc entry from Steeple's checks.
    for (key, bad) in [("ProtectProc", "invisible"), ("PrivateUsers", "yes")] {
        if last(key) == Some(bad) {
            problems.push(format!("{key}={bad} breaks [[callers]] checks"));
        }
    }
    assert_none("deploy/systemd/steeple.service", &problems);

    // The ExecStart is the real CLI, and the default socket is in the RuntimeDirectory.
    let steeple = steeple_e2e::steeple::steeple_bin()?;
    let help = run(Command::new(&steeple).args(["run", "--help"]))?;
    assert!(help.contains("--config"), "{help}");
    let defaults: toml::Table = deploy_file("steeple.toml")?.parse()?;
    assert!(toml_str(&defaults, "sds", "socket").starts_with("/run/steeple/"));

    let Some(analyze) = which("systemd-analyze") else {
        println!("note: systemd-analyze not installed; skipped `systemd-analyze verify` only");
        return Ok(());
    };
    let dir = tempfile::Builder::new().prefix("steeple-unit-").tempdir()?;
    let path = dir.path().join("steeple.service");
    let steeple = std::fs::canonicalize(steeple)?;
    // verify insists the ExecStart binary exists: point it at the one just built.
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/steeple", &steeple.display().to_string()),
    )?;
    let output = Command::new(&analyze).arg("verify").arg(&path).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("steeple.service"),
        "verify: {stderr}"
    );
    // The exposure score (0 = locked down, 10 = unprotected) stays at 2.0 or below;
    // scoring a unit file offline needs systemd 252.
    let version = run(Command::new(&analyze).arg("--version"))?;
    let major: u32 = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if major < 252 {
        println!("note: systemd {major} < 252 cannot score a unit offline; verify passed");
        return Ok(());
    }
    let security = Command::new(&analyze)
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&path)
        .output()?;
    let report = String::from_utf8_lossy(&security.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure"))
        .unwrap_or_default();
    assert!(
        security.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&security.stderr)
    );
    println!(
        "systemd-analyze verify: OK; {}",
        overall.trim_start_matches('→').trim()
    );
    Ok(())
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| Path::is_file(p))
}
