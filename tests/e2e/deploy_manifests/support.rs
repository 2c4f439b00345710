//! Tools for the deploy checks: Helm (a real one, from `tests/peers/install-helm.sh`),
//! YAML documents, Steeple's own `check-config`, Envoy's `--mode validate`, and the
//! hardening rules every pod must follow.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context as _;
use serde_yaml_ng::Value;
use steeple_e2e::peers;
use tempfile::TempDir;

/// The Helm version `tests/peers/install-helm.sh` builds by default.
pub const HELM_VERSION: &str = "3.22.0";

/// The repository root (`deploy/` lives there).
pub fn repo_root() -> anyhow::Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("the tests crate has no parent directory")
}

/// A file under `deploy/`, read whole.
pub fn deploy_file(relative: &str) -> anyhow::Result<String> {
    let path = repo_root()?.join("deploy").join(relative);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Runs `command` and returns its stdout, or fails with its exit status and stderr.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure_success(command, &output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ensure_success(command: &Command, output: &Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The Helm CLI with its cache, config and data dirs in a temp dir (nothing in `$HOME`).
pub struct Helm {
    bin: PathBuf,
    home: TempDir,
    chart: PathBuf,
}

impl Helm {
    /// `$STEEPLE_HELM_BIN`, else `<peer cache>/helm-3.22.0/bin/helm`; the chart is
    /// `deploy/helm/steeple`.
    pub fn new() -> anyhow::Result<Self> {
        let bin = match std::env::var_os("STEEPLE_HELM_BIN") {
            Some(path) => PathBuf::from(path),
            None => peers::cache_dir()?.join(format!("helm-{HELM_VERSION}/bin/helm")),
        };
        anyhow::ensure!(
            bin.is_file(),
            "helm not found at {}: run `bash tests/peers/install-helm.sh` or `source tests/peers/env.sh`",
            bin.display()
        );
        Ok(Self {
            bin,
            home: tempfile::Builder::new().prefix("steeple-helm-").tempdir()?,
            chart: repo_root()?.join("deploy/helm/steeple"),
        })
    }

    /// `helm <args…>` with the chart path appended where `{chart}` appears.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        for arg in args {
            match *arg {
                "{chart}" => command.arg(&self.chart),
                other => command.arg(other),
            };
        }
        let home = self.home.path();
        command
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        command
    }

    /// `helm template steeple-test <chart> <args…>`, parsed into its YAML documents.
    pub fn template(&self, args: &[&str]) -> anyhow::Result<Vec<Value>> {
        let mut all = vec!["template", "steeple-test", "{chart}"];
        all.extend_from_slice(args);
        yaml_documents(&run(&mut self.command(&all))?)
    }
}

/// Every non-empty document of a multi-document YAML stream (documents are separated by
/// a line `---`; inside a block scalar such a line would be indented).
pub fn yaml_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" || line.starts_with("--- ") {
            let doc: Value = serde_yaml_ng::from_str(&current)
                .with_context(|| format!("not valid YAML:\n{current}"))?;
            if !doc.is_null() {
                docs.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    Ok(docs)
}

/// `value` at `path` (mapping keys), if every step exists.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

/// The string at `path`, or "".
pub fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path).and_then(Value::as_str).unwrap_or_default()
}

/// The sequence at `path`, or an empty one.
pub fn seq_at<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path)
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

/// The one document of `kind`.
pub fn only<'a>(docs: &'a [Value], kind: &str) -> anyhow::Result<&'a Value> {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| str_at(d, &["kind"]) == kind)
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        other => anyhow::bail!("expected one {kind}, found {}", other.len()),
    }
}

/// `data.<key>` of the ConfigMap named `name`.
pub fn config_map_entry<'a>(docs: &'a [Value], name: &str, key: &str) -> anyhow::Result<&'a str> {
    docs.iter()
        .find(|d| str_at(d, &["kind"]) == "ConfigMap" && str_at(d, &["metadata", "name"]) == name)
        .and_then(|d| at(d, &["data", key]))
        .and_then(Value::as_str)
        .with_context(|| format!("no ConfigMap {name} with data.{key}"))
}

/// Every ConfigMap's `data."steeple.toml"`, by ConfigMap name.
pub fn steeple_tomls(docs: &[Value]) -> Vec<(String, String)> {
    docs.iter()
        .filter(|d| str_at(d, &["kind"]) == "ConfigMap")
        .filter_map(|d| {
            let text = at(d, &["data", "steeple.toml"])?.as_str()?;
            Some((str_at(d, &["metadata", "name"]).to_owned(), text.to_owned()))
        })
        .collect()
}

/// `steeple check-config` on `text` (no `STEEPLE_*` overrides from this environment):
/// `Ok(Ok(()))` when accepted, `Ok(Err(report))` when refused.
pub fn steeple_check_config(text: &str) -> anyhow::Result<Result<(), String>> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-deploy-")
        .tempdir()?;
    let path = dir.path().join("steeple.toml");
    std::fs::write(&path, text)?;
    let bin = steeple_e2e::steeple::steeple_bin()?;
    let output = Command::new(&bin)
        .env_clear()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .with_context(|| format!("running {} check-config", bin.display()))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(if output.status.success() {
        Ok(())
    } else {
        Err(report)
    })
}

/// `envoy --mode validate` on a bootstrap (checks every field against Envoy's protos).
pub fn envoy_validate(bootstrap: &str) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-deploy-")
        .tempdir()?;
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, bootstrap)?;
    let mut command = Command::new(peers::envoy_bin()?);
    command
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "--log-level",
            "error",
            "-c",
        ])
        .arg(&path);
    run(&mut command).map(drop)
}

/// Every way `pod` (a PodSpec) falls short of the hardening rules: pod-level non-root and
/// RuntimeDefault seccomp; each container without privilege escalation, on a read-only
/// root, all capabilities dropped and none added, not as root. The one exception is an
/// init container named `sds-socket-dir`, which may run as root with CHOWN and FOWNER.
pub fn pod_hardening_problems(pod: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if at(pod, &["securityContext", "runAsNonRoot"]).and_then(Value::as_bool) != Some(true) {
        problems.push("pod: securityContext.runAsNonRoot is not true".to_owned());
    }
    if str_at(pod, &["securityContext", "seccompProfile", "type"]) != "RuntimeDefault" {
        problems.push("pod: seccompProfile is not RuntimeDefault".to_owned());
    }
    let containers = seq_at(pod, &["containers"]).iter().map(|c| (c, false));
    let inits = seq_at(pod, &["initContainers"]).iter().map(|c| (c, true));
    for (container, init) in containers.chain(inits) {
        let name = str_at(container, &["name"]);
        let sc = |key: &str| at(container, &["securityContext", key]);
        let mut problem = |what: &str| problems.push(format!("container {name}: {what}"));
        if sc("allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false) {
            problem("allowPrivilegeEscalation is not false");
        }
        if sc("readOnlyRootFilesystem").and_then(Value::as_bool) != Some(true) {
            problem("readOnlyRootFilesystem is not true");
        }
        if sc("privileged").and_then(Value::as_bool) == Some(true) {
            problem("privileged");
        }
        let drop = seq_at(container, &["securityContext", "capabilities", "drop"]);
        if !drop.iter().any(|c| c.as_str() == Some("ALL")) {
            problem("capabilities.drop lacks ALL");
        }
        let added: Vec<&str> = seq_at(container, &["securityContext", "capabilities", "add"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let as_root = sc("runAsUser").and_then(Value::as_u64) == Some(0)
            || sc("runAsNonRoot").and_then(Value::as_bool) == Some(false);
        let socket_dir_init = init && name == "sds-socket-dir";
        if socket_dir_init {
            if added.iter().any(|c| !["CHOWN", "FOWNER"].contains(c)) {
                problem("adds capabilities beyond CHOWN and FOWNER");
            }
        } else {
            if !added.is_empty() {
                problem("adds capabilities");
            }
            if as_root || sc("runAsUser").and_then(Value::as_u64).is_none() {
                problem("does not run as a fixed non-root uid");
            }
        }
    }
    problems
}
