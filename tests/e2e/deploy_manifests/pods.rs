//! The wiring of a rendered pod, per mode: where Steeple's config, the SPIRE socket and
//! the SDS socket come from, who else mounts the socket, and what Envoy may fetch.

use anyhow::Context as _;
use serde_yaml_ng::Value;

use super::probes::probe_problems;
use super::support::{
    at, config_map_entry, envoy_validate, only, pod_hardening_problems, seq_at,
    steeple_check_config, str_at,
};

/// Steeple's config from `path` inside `container`: the ConfigMap entry behind the
/// configMap volume mounted at the path's directory.
fn mounted_file<'a>(
    docs: &'a [Value],
    pod: &Value,
    container: &Value,
    path: &str,
) -> anyhow::Result<&'a str> {
    let (dir, file) = split(path)?;
    let volume = volume_at(pod, container, dir)?;
    let map = str_at(volume, &["configMap", "name"]);
    anyhow::ensure!(!map.is_empty(), "{dir} is not a configMap volume");
    config_map_entry(docs, map, file)
}

fn split(path: &str) -> anyhow::Result<(&str, &str)> {
    path.rsplit_once('/')
        .filter(|(dir, file)| !dir.is_empty() && !file.is_empty())
        .with_context(|| format!("{path:?} is not an absolute file path"))
}

fn container<'a>(pod: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    seq_at(pod, &["containers"])
        .iter()
        .find(|c| str_at(c, &["name"]) == name)
        .with_context(|| format!("no container {name}"))
}

/// The pod volume `container` mounts at exactly `dir`.
/// The pod volume `container` mounts at `dir` or at a directory above it.
fn volume_at<'a>(pod: &'a Value, container: &Value, dir: &str) -> anyhow::Result<&'a Value> {
    let (mount, _) = mount_holding(container, dir)
        .with_context(|| format!("{} mounts nothing at {dir}", str_at(container, &["name"])))?;
    let name = str_at(mount, &["name"]);
    seq_at(pod, &["volumes"])
        .iter()
        .find(|v| str_at(v, &["name"]) == name)
        .with_context(|| format!("no pod volume {name}"))
}

/// The mount of `container` that holds `path` (its mount path, or a directory above
/// it), and `path` relative to it ("" for the mount path itself).
fn mount_holding<'a, 'p>(container: &'a Value, path: &'p str) -> Option<(&'a Value, &'p str)> {
    seq_at(container, &["volumeMounts"]).iter().find_map(|m| {
        let rest = path.strip_prefix(str_at(m, &["mountPath"]).trim_end_matches('/'))?;
        match rest.strip_prefix('/') {
            Some(relative) => Some((m, relative)),
            None => rest.is_empty().then_some((m, rest)),
        }
    })
}

fn mount_path<'a>(container: &'a Value, volume: &str) -> Option<&'a str> {
    seq_at(container, &["volumeMounts"])
        .iter()
        .find(|m| str_at(m, &["name"]) == volume)
        .map(|m| str_at(m, &["mountPath"]))
}

fn command_line(container: &Value) -> Vec<&str> {
    let command = seq_at(container, &["command"]).iter();
    command
        .chain(seq_at(container, &["args"]))
        .filter_map(Value::as_str)
        .collect()
}

/// `[section] key` of a config as a string, or "" when absent or not a string.
pub fn toml_str<'a>(config: &'a toml::Table, section: &str, key: &str) -> &'a str {
    config
        .get(section)
        .and_then(|s| s.get(key))
        .and_then(toml::Value::as_str)
        .unwrap_or_default()
}

/// What both modes share, for the pod's `steeple` container: it runs `steeple run
/// --config` on a mounted ConfigMap that `check-config` accepts, the SPIRE socket's
/// directory comes from the CSI driver or the node, and files the config names are
/// mounted. Returns the config and the SDS socket's volume.
fn check_steeple<'a>(
    docs: &[Value],
    pod: &'a Value,
    problems: &mut Vec<String>,
) -> anyhow::Result<(toml::Table, &'a Value)> {
    let steeple = container(pod, "steeple")?;
    let command = command_line(steeple);
    let config_path = match command.as_slice() {
        [_, "run", "--config", path] => *path,
        other => anyhow::bail!("steeple's command is not `steeple run --config F`: {other:?}"),
    };
    let text = mounted_file(docs, pod, steeple, config_path)?;
    if let Err(report) = steeple_check_config(text)? {
        problems.push(format!(
            "steeple check-config refuses the config:\n{report}"
        ));
    }
    let config: toml::Table = text.parse().context("steeple.toml")?;
    let workload = toml_str(&config, "workload_api", "socket");
    let spire = volume_at(pod, steeple, split(workload)?.0)?;
    let from_csi = str_at(spire, &["csi", "driver"]) == "csi.spiffe.io";
    if !from_csi && at(spire, &["hostPath", "path"]).is_none() {
        problems.push(format!(
            "the SPIRE socket {workload} is neither CSI nor hostPath"
        ));
    }
    if let Some(ca) = Some(toml_str(&config, "vault", "ca_file")).filter(|f| !f.is_empty()) {
        volume_at(pod, steeple, split(ca)?.0).context("vault.ca_file")?;
    }
    let sds = volume_at(pod, steeple, split(toml_str(&config, "sds", "socket"))?.0)?;
    Ok((config, sds))
}

/// `sds.socket_mode` (an octal string or an integer), Steeple's 0600 when absent.
fn socket_mode(config: &toml::Table) -> u32 {
    match config.get("sds").and_then(|s| s.get("socket_mode")) {
        Some(toml::Value::Integer(mode)) => u32::try_from(*mode).unwrap_or(0),
        Some(toml::Value::String(mode)) => {
            u32::from_str_radix(mode.trim_start_matches("0o"), 8).unwrap_or(0)
        }
        _ => 0o600,
    }
}

/// The resources the first `[[callers]]` rule matching uid/gid grants (rules with `exe`
/// cannot match across containers and are skipped).
fn granted(config: &toml::Table, uid: i64, gid: i64) -> Vec<String> {
    let has = |rule: &toml::Value, key: &str, id: i64| {
        rule.get(key)
            .and_then(toml::Value::as_array)
            .is_none_or(|ids| ids.is_empty() || ids.iter().any(|v| v.as_integer() == Some(id)))
    };
    let rules = config.get("callers").and_then(toml::Value::as_array);
    rules
        .into_iter()
        .flatten()
        .find(|r| r.get("exe").is_none() && has(r, "uids", uid) && has(r, "gids", gid))
        .and_then(|r| r.get("resources")?.as_array().cloned())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Every value under `key` anywhere in `value`.
fn find_all<'a>(value: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                if k.as_str() == Some(key) {
                    out.push(v);
                }
                find_all(v, key, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| find_all(v, key, out)),
        _ => {}
    }
}

/// Sidecar: the admin listener is probed and scraped (see [`probe_problems`]); the SDS
/// socket's volume is an emptyDir mounted by Steeple and Envoy only;
/// Envoy dials the socket's path, may fetch every SDS name its bootstrap asks for, can
/// open the socket (group bits + fsGroup), and its bootstrap passes Envoy's validation.
pub fn sidecar_problems(docs: &[Value]) -> anyhow::Result<Vec<String>> {
    let workload = only(docs, "Deployment")?;
    let pod = at(workload, &["spec", "template", "spec"]).context("pod")?;
    let mut problems = pod_hardening_problems(pod);
    let (config, sds) = check_steeple(docs, pod, &mut problems)?;
    problems.extend(probe_problems(workload, &config));
    let sds_name = str_at(sds, &["name"]);
    if at(sds, &["emptyDir"]).is_none() {
        problems.push(format!("SDS volume {sds_name} is not an emptyDir"));
    }
    let (steeple, envoy) = (container(pod, "steeple")?, container(pod, "envoy")?);
    for c in seq_at(pod, &["containers"]) {
        let name = str_at(c, &["name"]);
        if !["steeple", "envoy"].contains(&name) && mount_path(c, sds_name).is_some() {
            problems.push(format!("container {name} mounts the SDS socket"));
        }
    }
    let socket_path = toml_str(&config, "sds", "socket");
    let (_, in_volume) =
        mount_holding(steeple, socket_path).context("steeple does not mount the SDS volume")?;
    // The kubelet creates an emptyDir 0777, and Steeple refuses a socket directory others
    // may write: the socket must sit in a subdirectory Steeple creates.
    if !in_volume.contains('/') {
        problems.push(format!(
            "the SDS socket {socket_path} sits in the emptyDir itself (0777 from the kubelet, refused by Steeple); put it in a subdirectory"
        ));
    }
    let envoy_dir = mount_path(envoy, sds_name).context("envoy does not mount the SDS volume")?;
    let expected_pipe = format!("{envoy_dir}/{in_volume}");
    let envoy_command = command_line(envoy);
    let bootstrap_path = envoy_command
        .iter()
        .skip_while(|a| **a != "-c")
        .nth(1)
        .context("envoy has no -c bootstrap")?;
    let bootstrap_text = mounted_file(docs, pod, envoy, bootstrap_path)?;
    let bootstrap: Value = serde_yaml_ng::from_str(bootstrap_text)?;
    let mut pipes = Vec::new();
    find_all(&bootstrap, "pipe", &mut pipes);
    let pipes: Vec<&str> = pipes.iter().map(|p| str_at(p, &["path"])).collect();
    if pipes != [expected_pipe.as_str()] {
        problems.push(format!(
            "Envoy dials {pipes:?}, Steeple listens on {expected_pipe}"
        ));
    }
    let mut names = Vec::new();
    find_all(&bootstrap, "tls_certificate_sds_secret_configs", &mut names);
    find_all(
        &bootstrap,
        "validation_context_sds_secret_config",
        &mut names,
    );
    let uid_of = |c: &Value, key: &str| at(c, &["securityContext", key]).and_then(Value::as_i64);
    let (envoy_uid, envoy_gid) = (uid_of(envoy, "runAsUser"), uid_of(envoy, "runAsGroup"));
    let grant = granted(&config, envoy_uid.unwrap_or(-1), envoy_gid.unwrap_or(-1));
    for name in names.iter().flat_map(|n| match n {
        Value::Sequence(items) => items.iter().map(|i| str_at(i, &["name"])).collect(),
        one => vec![str_at(one, &["name"])],
    }) {
        if !grant.iter().any(|g| g == name || g == "*") {
            problems.push(format!(
                "Envoy (uid {envoy_uid:?}) may not fetch {name:?}: {grant:?}"
            ));
        }
    }
    if envoy_uid != uid_of(steeple, "runAsUser") {
        let fs_group = at(pod, &["securityContext", "fsGroup"]).and_then(Value::as_i64);
        if socket_mode(&config) & 0o060 != 0o060 || fs_group != uid_of(steeple, "runAsGroup") {
            problems.push("Envoy runs as another uid but cannot open the socket (socket_mode group bits, fsGroup = Steeple's gid)".to_owned());
        }
    }
    envoy_validate(bootstrap_text).context("envoy --mode validate")?;
    Ok(problems)
}

/// DaemonSet: probed and scraped as the sidecar; the SDS socket's directory is a node directory handed to Steeple's uid and
/// gid by the init container, group-accessible for the node's Envoys, with a caller rule.
pub fn daemonset_problems(docs: &[Value]) -> anyhow::Result<Vec<String>> {
    let workload = only(docs, "DaemonSet")?;
    let pod = at(workload, &["spec", "template", "spec"]).context("pod")?;
    let mut problems = pod_hardening_problems(pod);
    let (config, sds) = check_steeple(docs, pod, &mut problems)?;
    problems.extend(probe_problems(workload, &config));
    let sds_name = str_at(sds, &["name"]);
    if str_at(sds, &["hostPath", "type"]) != "DirectoryOrCreate" {
        problems.push(format!(
            "SDS volume {sds_name} is not a hostPath DirectoryOrCreate"
        ));
    }
    let steeple = container(pod, "steeple")?;
    let ids: Vec<i64> = ["runAsUser", "runAsGroup"]
        .iter()
        .filter_map(|k| at(steeple, &["securityContext", k]).and_then(Value::as_i64))
        .collect();
    let chown = format!(
        "chown {}:{}",
        ids.first().unwrap_or(&-1),
        ids.get(1).unwrap_or(&-1)
    );
    let prepared = seq_at(pod, &["initContainers"]).iter().any(|c| {
        mount_path(c, sds_name).is_some() && command_line(c).iter().any(|a| a.contains(&chown))
    });
    if !prepared {
        problems.push(format!("no init container runs `{chown}` on {sds_name}"));
    }
    if socket_mode(&config) & 0o060 != 0o060 {
        problems.push("sds.socket_mode gives the node's Envoys (the group) no access".to_owned());
    }
    // A node agent without rules serves every caller its own identity; otherwise only
    // Steeple's own uid would be served.
    let node_agent = toml_str(&config, "workload_api", "mode") == "delegated";
    if config.get("callers").is_none() && !node_agent {
        problems.push("no [[callers]] rule: only Steeple's own uid would be served".to_owned());
    }
    Ok(problems)
}
