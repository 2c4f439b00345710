//! The admin listener's wiring in a rendered workload: the config enables `[admin]
//! listen` on an address the kubelet can reach, the Steeple container exposes that port,
//! its liveness probe asks `/healthz` and its readiness probe `/readyz` on it, and
//! Prometheus finds `/metrics` there (pod annotations, or a ServiceMonitor).

use serde_yaml_ng::Value;

use super::support::{at, seq_at, str_at};

/// The port `[admin] listen` of `config` binds, if it parses.
fn admin_port(config: &toml::Table, problems: &mut Vec<String>) -> Option<u16> {
    let listen = config
        .get("admin")
        .and_then(|a| a.get("listen"))
        .and_then(toml::Value::as_str);
    let Some(listen) = listen else {
        problems.push("the config sets no [admin] listen: nothing to probe".to_owned());
        return None;
    };
    let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
        problems.push(format!("[admin] listen {listen:?} is not ip:port"));
        return None;
    };
    if !addr.ip().is_unspecified() {
        problems.push(format!(
            "[admin] listen {listen}: the kubelet probes the pod IP, listen on all addresses"
        ));
    }
    Some(addr.port())
}

/// Whether a probe's or endpoint's `port` (a number or a container port name) is `port`.
fn is_port(value: Option<&Value>, port: u16, name: &str) -> bool {
    match value {
        Some(Value::Number(n)) => n.as_u64() == Some(u64::from(port)),
        Some(Value::String(s)) => !name.is_empty() && s == name,
        _ => false,
    }
}

/// Problems with the admin wiring of `workload` (a Deployment or DaemonSet), whose
/// Steeple container's config is `config`.
pub fn probe_problems(workload: &Value, config: &toml::Table) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(port) = admin_port(config, &mut problems) else {
        return problems;
    };
    let pod = at(workload, &["spec", "template", "spec"]);
    let steeple = pod
        .map(|p| seq_at(p, &["containers"]))
        .unwrap_or_default()
        .iter()
        .find(|c| str_at(c, &["name"]) == "steeple");
    let Some(steeple) = steeple else {
        return vec!["no steeple container".to_owned()];
    };
    let exposed = seq_at(steeple, &["ports"])
        .iter()
        .find(|p| at(p, &["containerPort"]).and_then(Value::as_u64) == Some(u64::from(port)));
    let Some(exposed) = exposed else {
        problems.push(format!("the steeple container does not expose port {port}"));
        return problems;
    };
    let name = str_at(exposed, &["name"]);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = at(steeple, &[probe, "httpGet"]);
        let found = get.map(|g| (str_at(g, &["path"]), is_port(at(g, &["port"]), port, name)));
        if found != Some((path, true)) {
            problems.push(format!(
                "{probe} must GET {path} on the admin port {port}: {get:?}"
            ));
        }
    }
    let annotations = at(workload, &["spec", "template", "metadata", "annotations"]);
    let annotation = |key: &str| annotations.map(|a| str_at(a, &[key])).unwrap_or_default();
    let expected = [
        ("prometheus.io/scrape", "true".to_owned()),
        ("prometheus.io/port", port.to_string()),
        ("prometheus.io/path", "/metrics".to_owned()),
    ];
    for (key, want) in expected {
        if annotation(key) != want {
            problems.push(format!(
                "pod annotation {key} = {want:?} missing (found {:?})",
                annotation(key)
            ));
        }
    }
    problems
}

/// Problems with a rendered ServiceMonitor: it must scrape `/metrics` on a port of a
/// Service whose target is the admin port, selecting that Service by its labels.
pub fn service_monitor_problems(docs: &[Value], admin_port_name: &str) -> Vec<String> {
    let Some(monitor) = of_kind(docs, "ServiceMonitor").next() else {
        return vec!["no ServiceMonitor rendered".to_owned()];
    };
    let mut problems = Vec::new();
    let endpoint = seq_at(monitor, &["spec", "endpoints"]).first();
    let port = endpoint.map(|e| str_at(e, &["port"])).unwrap_or_default();
    if endpoint.map(|e| str_at(e, &["path"])) != Some("/metrics") {
        problems.push(format!(
            "the ServiceMonitor does not scrape /metrics: {endpoint:?}"
        ));
    }
    let selector = at(monitor, &["spec", "selector", "matchLabels"]);
    let selects = |service: &&Value| {
        let labels = at(service, &["metadata", "labels"]);
        selector.and_then(Value::as_mapping).is_some_and(|m| {
            m.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
    };
    let services: Vec<&Value> = of_kind(docs, "Service").filter(selects).collect();
    let targets_admin = services.iter().any(|s| {
        seq_at(s, &["spec", "ports"])
            .iter()
            .any(|p| str_at(p, &["name"]) == port && str_at(p, &["targetPort"]) == admin_port_name)
    });
    if !targets_admin {
        problems.push(format!(
            "no Service selected by the ServiceMonitor has port {port:?} → {admin_port_name:?}"
        ));
    }
    problems
}

fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    docs.iter().filter(move |d| str_at(d, &["kind"]) == kind)
}
