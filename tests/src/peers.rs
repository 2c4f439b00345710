//! Where the real peer binaries are: the variables `tests/peers/env.sh` exports, else the
//! default cache paths its installers write to.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The SPIRE version `tests/peers/install-spire.sh` builds by default.
pub const SPIRE_VERSION: &str = "1.15.3";

/// The Envoy version `tests/peers/install-envoy.sh` installs by default.
pub const ENVOY_VERSION: &str = "1.40.0";

const INSTALL_HINT: &str = "run `bash tests/run.sh` (it sources tests/peers/env.sh, which installs the peers), \
     or `source tests/peers/env.sh` before `cargo test -p steeple-e2e`";

/// The peer cache root: `$STEEPLE_PEERS_CACHE`, else `$HOME/.cache/steeple-peers`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STEEPLE_PEERS_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .context("neither STEEPLE_PEERS_CACHE nor HOME is set; cannot find the peer cache")?;
    Ok(PathBuf::from(home).join(".cache/steeple-peers"))
}

/// The directory holding `spire-server` and `spire-agent`: `$STEEPLE_SPIRE_BIN_DIR`, else
/// `<cache>/spire-1.15.3/bin`.
pub fn spire_bin_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os("STEEPLE_SPIRE_BIN_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(cache_dir()?.join(format!("spire-{SPIRE_VERSION}/bin"))),
    }
}

/// The `spire-server` binary.
pub fn spire_server_bin() -> anyhow::Result<PathBuf> {
    existing(spire_bin_dir()?.join("spire-server"), "spire-server")
}

/// The `spire-agent` binary.
pub fn spire_agent_bin() -> anyhow::Result<PathBuf> {
    existing(spire_bin_dir()?.join("spire-agent"), "spire-agent")
}

/// The `envoy` binary: `$STEEPLE_ENVOY_BIN`, else `<cache>/venv/bin/envoy`.
pub fn envoy_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("STEEPLE_ENVOY_BIN") {
        Some(path) => PathBuf::from(path),
        None => cache_dir()?.join("venv/bin/envoy"),
    };
    existing(path, "envoy")
}

/// The `moto_server` binary: `$STEEPLE_MOTO_SERVER_BIN`, else
/// `<cache>/venv/bin/moto_server`.
pub fn moto_server_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("STEEPLE_MOTO_SERVER_BIN") {
        Some(path) => PathBuf::from(path),
        None => cache_dir()?.join("venv/bin/moto_server"),
    };
    existing(path, "moto_server")
}

/// The aws-sdk-go-v2 probe (tests/e2e/sdk/go_imds_probe): `$STEEPLE_GO_IMDS_PROBE_BIN`,
/// else `<cache>/go-imds-probe-<SDK version of its go.mod>/bin/go_imds_probe`.
pub fn go_imds_probe_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("STEEPLE_GO_IMDS_PROBE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let go_mod = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/sdk/go_imds_probe/go.mod");
            let text = std::fs::read_to_string(&go_mod)
                .with_context(|| format!("reading {}", go_mod.display()))?;
            let version = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("github.com/aws/aws-sdk-go-v2 v"))
                .with_context(|| format!("no aws-sdk-go-v2 version in {}", go_mod.display()))?;
            cache_dir()?.join(format!(
                "go-imds-probe-{}/bin/go_imds_probe",
                version.trim()
            ))
        }
    };
    existing(path, "go_imds_probe")
}

fn existing(path: PathBuf, what: &str) -> anyhow::Result<PathBuf> {
    if is_executable(&path) {
        Ok(path)
    } else {
        anyhow::bail!("{what} not found at {}: {INSTALL_HINT}", path.display())
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
