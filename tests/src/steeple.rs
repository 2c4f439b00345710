//! The Steeple binary under test, as a child process: `steeple run` against a Workload API
//! socket, or `steeple dev` with its embedded trust domain (also in a PID namespace of its
//! own, as in a pod).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;

use crate::process::ChildProcess;

/// The launcher that gives the agent a PID namespace of its own. `--kill-child`: when
/// unshare is killed (the harness's SIGKILL after the stop timeout), so is the agent, and
/// with it everything in its namespace.
const OWN_PID_NAMESPACE: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

/// A running Steeple; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct SteepleProcess {
    process: ChildProcess,
    /// The agent's pid when `process` is the launcher that started it (unshare).
    agent: Option<u32>,
    dir: PathBuf,
    sds_socket: PathBuf,
}

/// The `steeple` binary: `STEEPLE_BIN`, or the workspace's debug build, built once per
/// test process so a suite never runs a stale binary.
pub fn steeple_bin() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(bin) = std::env::var_os("STEEPLE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // What cargo sets for a running test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...) must not
    // reach this build: ring's build script reruns when CARGO_MANIFEST_DIR changes, and
    // then ring and everything above it would be rebuilt for every suite.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_BIN_NAME"
            )
        {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .args(["build", "-p", "steeple", "--bin", "steeple"])
        .current_dir(root)
        .status()
        .context("running cargo build -p steeple")?;
    anyhow::ensure!(status.success(), "cargo build -p steeple failed: {status}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug").join("steeple"))
}

impl SteepleProcess {
    /// `steeple run` against the Workload API at `workload_socket`, its SDS socket in
    /// `dir`, debug logging (so the canary checks see as much as possible), plus
    /// `extra_toml` appended to the generated config (the keys of its `[workload_api]` and
    /// `[sds]` sections join the generated ones).
    pub fn run(dir: &Path, workload_socket: &Path, extra_toml: &str) -> anyhow::Result<Self> {
        Self::run_with(dir, workload_socket, extra_toml, &[])
    }

    /// Like [`SteepleProcess::run`], with `env` set.
    pub fn run_with(
        dir: &Path,
        workload_socket: &Path,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let sds_socket = dir.join("sds.sock");
        let (api_keys, rest) = split_section(extra_toml, "[workload_api]");
        let (sds_keys, rest) = split_section(&rest, "[sds]");
        let config = format!(
            "[workload_api]\nsocket = \"{}\"\n{api_keys}[sds]\nsocket = \"{}\"\n{sds_keys}[log]\nlevel = \"debug\"\n{rest}",
            workload_socket.display(),
            sds_socket.display()
        );
        let config_path = dir.join("steeple.toml");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new(steeple_bin()?);
        command.envs(env.iter().copied());
        command.arg("run").arg("--config").arg(&config_path);
        Self::spawn(command, dir, sds_socket)
    }

    /// `steeple run` with `config` (a whole steeple.toml, written to `dir`) whose
    /// `sds.socket` is `sds_socket`, wherever that is (e.g. a path another tool expects).
    pub fn run_config(dir: &Path, config: &str, sds_socket: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("steeple.toml");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new(steeple_bin()?);
        command.arg("run").arg("--config").arg(&config_path);
        Self::spawn(command, dir, sds_socket.to_owned())
    }

    /// `steeple dev` with trust domain `trust_domain`, workload `workload_id` and
    /// X.509-SVIDs living `x509_ttl` (e.g. `"6s"`), sockets in `dir`.
    pub fn dev(
        dir: &Path,
        trust_domain: &str,
        workload_id: &str,
        x509_ttl: &str,
    ) -> anyhow::Result<Self> {
        let dev = format!(
            "[dev]\ntrust_domain = \"{trust_domain}\"\nworkload_id = \"{workload_id}\"\nx509_svid_ttl = \"{x509_ttl}\"\n"
        );
        Self::dev_with(dir, &dev, &[])
    }

    /// `steeple dev` with `toml` appended to a debug-logging config and `env` set, sockets
    /// in `dir`.
    pub fn dev_with(dir: &Path, toml: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::dev_under(&[], dir, toml, env)
    }

    /// Like [`SteepleProcess::dev_with`], with the agent as pid 1 of a PID namespace of its
    /// own (`unshare --pid --fork --mount-proc`), as in a pod of its own: a caller outside
    /// it has no pid in the peer credentials the agent reads. Needs root. [`Self::pid`],
    /// [`Self::signal`] and [`Self::kill`] reach the agent, not unshare.
    pub fn dev_in_pid_namespace(
        dir: &Path,
        toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut steeple = Self::dev_under(OWN_PID_NAMESPACE, dir, toml, env)?;
        // The socket is there, so unshare has long forked the agent.
        steeple.agent = Some(only_child(steeple.process.id())?);
        Ok(steeple)
    }

    /// `steeple dev` as [`SteepleProcess::dev_with`] starts it, run by `launcher` (a
    /// program and its arguments, Steeple's command line appended) unless that is empty.
    fn dev_under(
        launcher: &[&str],
        dir: &Path,
        toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = format!("[log]\nlevel = \"debug\"\n{toml}");
        let config_path = dir.join("steeple.toml");
        std::fs::write(&config_path, config)?;
        let mut command = match launcher.split_first() {
            None => Command::new(steeple_bin()?),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(steeple_bin()?);
                command
            }
        };
        command.envs(env.iter().copied());
        command
            .arg("dev")
            .arg("--config")
            .arg(&config_path)
            .arg("--dir")
            .arg(dir);
        let sds_socket = dir.join("sds.sock");
        Self::spawn(command, dir, sds_socket)
    }

    fn spawn(command: Command, dir: &Path, sds_socket: PathBuf) -> anyhow::Result<Self> {
        let process = ChildProcess::spawn("steeple", command, &dir.join("logs"))?;
        let mut steeple = Self {
            process,
            agent: None,
            dir: dir.to_owned(),
            sds_socket,
        };
        steeple.wait_for_socket(Duration::from_secs(30))?;
        Ok(steeple)
    }

    fn wait_for_socket(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.sds_socket.exists() {
            if !self.process.is_running() {
                anyhow::bail!("steeple exited at start:\n{}", self.logs());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no SDS socket after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills the agent with SIGKILL — no shutdown, its socket left behind — and waits
    /// until it is gone (at most 10 s).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.signal(rustix::process::Signal::KILL)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.process.is_running() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "steeple survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Sends `signal` to the agent.
    pub fn signal(&mut self, signal: rustix::process::Signal) -> anyhow::Result<()> {
        let Some(agent) = self.agent else {
            return self.process.signal(signal);
        };
        // While unshare runs it has not reaped the agent, so the pid is still the agent's.
        if !self.process.is_running() {
            return Ok(());
        }
        let pid = i32::try_from(agent)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .with_context(|| format!("invalid agent pid {agent}"))?;
        match rustix::process::kill_process(pid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e).context("signalling the agent"),
        }
    }

    /// Waits at most `timeout` for the agent to exit; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "steeple still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The SDS socket.
    pub fn sds_socket(&self) -> &Path {
        &self.sds_socket
    }

    /// Everything Steeple printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The agent's process id (as this test process sees it).
    pub fn pid(&self) -> u32 {
        self.agent.unwrap_or_else(|| self.process.id())
    }

    /// Resident set size, KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    /// The Envoy bootstrap `steeple dev` printed on stdout (its `#` lines left out).
    pub fn printed_bootstrap(&self) -> anyhow::Result<String> {
        let (stdout, _) = self.process.log_paths();
        let text = std::fs::read_to_string(stdout)?;
        let yaml: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        anyhow::ensure!(!yaml.is_empty(), "steeple dev printed no bootstrap");
        Ok(yaml.join("\n"))
    }

    /// The directory holding its config, sockets and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SteepleProcess {
    /// unshare blocks SIGTERM while it waits for the agent, so the agent itself is asked to
    /// stop; dropping `process` then waits for unshare to exit with it.
    fn drop(&mut self) {
        if self.agent.is_some()
            && let Err(e) = self.signal(rustix::process::Signal::TERM)
        {
            eprintln!("harness: could not stop steeple: {e:#}");
        }
    }
}

/// The one child of process `parent`.
fn only_child(parent: u32) -> anyhow::Result<u32> {
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))?;
    match children.split_whitespace().collect::<Vec<_>>().as_slice() {
        [child] => Ok(child.parse()?),
        other => anyhow::bail!("process {parent} has children {other:?}, not one"),
    }
}

/// The key lines of `toml`'s `header` section (e.g. `[sds]`), and everything else.
fn split_section(toml: &str, header: &str) -> (String, String) {
    let (mut section, mut rest) = (String::new(), String::new());
    let mut inside = false;
    for line in toml.lines() {
        if line.trim_start().starts_with('[') {
            inside = line.trim() == header;
            if inside {
                continue;
            }
        }
        let out = if inside { &mut section } else { &mut rest };
        out.push_str(line);
        out.push('\n');
    }
    (section, rest)
}

/// `steeple envelope seal` with the arguments and environment `configure` adds (the
/// provider's), `plaintext` on stdin; the envelope row it prints.
pub fn seal(
    configure: impl FnOnce(&mut Command),
    plaintext: &[u8],
) -> anyhow::Result<serde_json::Value> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut command = Command::new(steeple_bin()?);
    command.args(["envelope", "seal"]);
    configure(&mut command);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(plaintext)?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "seal failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// `steeple envelope seal --provider local` under the base64 master key `master`.
pub fn seal_local(
    master: &str,
    path: &str,
    aad: &str,
    plaintext: &str,
) -> anyhow::Result<serde_json::Value> {
    let configure = |command: &mut Command| {
        command
            .args(["--provider", "local", "--logical-path", path, "--aad", aad])
            .env("STEEPLE_LOCAL_MASTER_KEY", master);
    };
    seal(configure, plaintext.as_bytes())
}

/// Writes envelope `rows` to `file` as JSON atomically (write, then rename), as a config
/// management tool would.
pub fn write_rows(file: &Path, rows: &[serde_json::Value]) -> anyhow::Result<()> {
    let temp = file.with_extension("tmp");
    std::fs::write(&temp, serde_json::to_vec(rows)?)?;
    std::fs::rename(&temp, file)?;
    Ok(())
}

/// Variants of the well-formed envelope row `good` that the agent must each refuse with
/// the reason given beside it, under a logical path of their own (`bad/…`): bad and empty
/// base64 ciphertext, the misspelled provider `wrong_provider`, an AAD entry without `=`,
/// and a ciphertext over the `max_ciphertext` bytes the provider accepts.
pub fn malformed_rows(
    good: &serde_json::Value,
    wrong_provider: &str,
    max_ciphertext: usize,
) -> Vec<(serde_json::Value, String)> {
    use base64::Engine as _;
    let oversized = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 2 * max_ciphertext]);
    [
        (
            "bad/base64",
            "ciphertext_ref",
            "%%% not base64 %%%",
            "not valid base64".to_owned(),
        ),
        (
            "bad/empty",
            "ciphertext_ref",
            "",
            "ciphertext_ref is empty".to_owned(),
        ),
        (
            "bad/provider",
            "provider",
            wrong_provider,
            "unknown provider".to_owned(),
        ),
        ("bad/aad", "aad", "service", "has no '='".to_owned()),
        (
            "bad/oversized",
            "ciphertext_ref",
            oversized.as_str(),
            format!("larger than {max_ciphertext} bytes"),
        ),
    ]
    .into_iter()
    .map(|(path, field, value, reason)| {
        let mut row = good.clone();
        row["logical_path"] = path.into();
        row[field] = value.into();
        (row, reason)
    })
    .collect()
}
