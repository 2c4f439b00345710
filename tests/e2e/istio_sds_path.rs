//! Steeple where Istio's proxy looks for SPIFFE SDS: `deploy/steeple-istio.toml` (socket
//! `/run/secrets/workload-spiffe-uds/socket`) re-rooted under a temp dir, and a real Envoy
//! running `deploy/envoy/istio-spiffe-bootstrap.yaml` — Istio's `sds-grpc` cluster dialling
//! `./var/run/secrets/workload-spiffe-uds/socket` through a `var/run → run` link, as on a
//! host — completes an mTLS hop with the SVID and bundle Steeple serves as `default` and
//! `ROOTCA`. The Workload API is a `steeple dev`'s.

use std::process::Command;

use anyhow::Context as _;
use steeple_e2e::bootstrap::dev_on_free_ports;
use steeple_e2e::steeple::steeple_bin;
use steeple_e2e::suite::eventually_status;
use steeple_e2e::{Envoy, SteepleProcess, current_uid, free_port};

const CONFIG: &str = include_str!("../../deploy/steeple-istio.toml");
const BOOTSTRAP: &str = include_str!("../../deploy/envoy/istio-spiffe-bootstrap.yaml");
/// Istio's well-known SDS socket, as Steeple's config names it.
const ISTIO_SOCKET: &str = "/run/secrets/workload-spiffe-uds/socket";
/// The same socket as Istio's Envoy bootstrap names it (relative to `/`).
const ISTIO_PIPE: &str = "./var/run/secrets/workload-spiffe-uds/socket";
const WORKLOAD: &str = "spiffe://example.org/payments-api";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_shaped_envoy_gets_its_svid_from_steeple_at_istios_socket_path()
-> anyhow::Result<()> {
    let check = Command::new(steeple_bin()?)
        .args(["check-config", "--config"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/steeple-istio.toml"))
        .output()?;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(CONFIG.contains(&format!("socket = \"{ISTIO_SOCKET}\"")));
    assert!(BOOTSTRAP.contains(&format!("path: {ISTIO_PIPE} ")));

    let root = tempfile::Builder::new()
        .prefix("steeple-istio-")
        .tempdir_in("/tmp")?;
    let root_path = root.path();
    let dev = SteepleProcess::dev_with(
        &root_path.join("dev"),
        &format!("[dev]\ntrust_domain = \"example.org\"\nworkload_id = \"{WORKLOAD}\"\n"),
        &[],
    )?;
    let workload_api = dev.dir().join("workload.sock");

    // The shipped config, re-rooted: the Workload API is the dev agent's, the admin port a
    // free one, and the caller (Istio's uid 1337) this test's uid, which runs Envoy.
    let socket = root_path.join(ISTIO_SOCKET.trim_start_matches('/'));
    let config = CONFIG
        .replace(
            "/run/spire/agent-sockets/spire-agent.sock",
            &workload_api.display().to_string(),
        )
        .replace(ISTIO_SOCKET, &socket.display().to_string())
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{}", free_port()?))
        .replace("uids = [1337]", &format!("uids = [{}]", current_uid()));
    anyhow::ensure!(config != CONFIG, "the shipped config changed shape");
    let steeple = SteepleProcess::run_config(&root_path.join("agent"), &config, &socket)?;

    // As on a host, var/run is run: Envoy's relative pipe path reaches Steeple's socket.
    std::fs::create_dir_all(root_path.join("var"))?;
    std::os::unix::fs::symlink("../run", root_path.join("var/run"))
        .context("linking var/run → run")?;
    let pipe = root_path.join(ISTIO_PIPE.trim_start_matches("./"));
    let (bootstrap, client_port) =
        dev_on_free_ports(&BOOTSTRAP.replace(ISTIO_PIPE, &pipe.display().to_string()))?;
    let envoy = Envoy::start(&bootstrap, root_path)?;

    let (_, body) = eventually_status(client_port, 200).await?;
    assert_eq!(body, "hello over SPIFFE mTLS\n");
    let serials = envoy.certificate_serials(WORKLOAD).await?;
    assert!(
        !serials.is_empty(),
        "Envoy holds no certificate for {WORKLOAD}"
    );
    // Steeple made the socket's directory itself, closed to others.
    let mode = std::fs::metadata(socket.parent().context("socket dir")?)?.permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o750
    );
    drop(steeple);
    Ok(())
}
