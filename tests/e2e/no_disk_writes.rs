//! Steeple writes nothing to disk but its sockets: `steeple dev` with envelopes runs under
//! `strace -f`, resolves and serves a secret, takes an envelope change, and shuts down on
//! SIGTERM; every file-creating or file-changing system call it made is then checked. No
//! file is opened for writing, none created, renamed, linked or truncated, no directory
//! made; the only things unlinked are its own socket paths (a stale one at start, its own
//! at shutdown). Its log goes to the inherited stderr, which is the harness's, not Steeple's.
//! strace writes one file per thread (`-ff`), so no call is split across
//! `<unfinished ...>` / `<... resumed>` lines by another thread's call.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use steeple_e2e::ChildProcess;
use steeple_e2e::sds_client;
use steeple_e2e::steeple::{seal_local, steeple_bin, write_rows};

const PATH: &str = "payments/api-token";
const CANARY_1: &str = "canary-no-disk-writes-0001";
const CANARY_2: &str = "canary-no-disk-writes-0002";
/// Every system call that can create, change or remove a file or directory.
const TRACED: &str = "trace=open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,\
                      link,linkat,symlink,symlinkat,unlink,unlinkat,rmdir,truncate,ftruncate,\
                      mknod,mknodat,chmod,fchmodat";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_writes_nothing_but_its_sockets() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-nodisk-")
        .tempdir_in("/tmp")?;
    let envelopes = dir.path().join("envelopes");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&envelopes)?;
    std::fs::create_dir_all(&run)?;
    let master = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let rows = envelopes.join("rows.json");
    write_rows(&rows, &[seal_local(&master, PATH, "", CANARY_1)?])?;
    let config = dir.path().join("steeple.toml");
    std::fs::write(
        &config,
        format!(
            "[envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
             local_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n",
            envelopes.display()
        ),
    )?;
    let traces = dir.path().join("strace");
    std::fs::create_dir_all(&traces)?;
    let mut command = Command::new("strace");
    command
        .args(["-ff", "-qq", "-e", TRACED, "-o"])
        .arg(traces.join("trace"))
        .arg(steeple_bin()?)
        .args(["dev", "--config"])
        .arg(&config)
        .arg("--dir")
        .arg(&run)
        .env("STEEPLE_LOCAL_MASTER_KEY", &master);
    let mut strace = ChildProcess::spawn("strace", command, &dir.path().join("logs"))?;

    let sds = run.join("sds.sock");
    let served = sds_client::wait_for(&sds, &[PATH], Duration::from_secs(60)).await?;
    assert_eq!(
        sds_client::secret_bytes(&served[0]).unwrap_or_default(),
        CANARY_1.as_bytes()
    );
    write_rows(&rows, &[seal_local(&master, PATH, "", CANARY_2)?])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served = sds_client::wait_for(&sds, &[PATH], Duration::from_secs(5)).await?;
        if sds_client::secret_bytes(&served[0]).as_deref() == Some(CANARY_2.as_bytes()) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the changed envelope never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGTERM to Steeple itself (strace's child); strace ends with it.
    let agent = traced_child(strace.id())?;
    rustix::process::kill_process(agent, rustix::process::Signal::TERM)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while strace.is_running() {
        anyhow::ensure!(Instant::now() < deadline, "steeple did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!sds.exists(), "the SDS socket was not removed at shutdown");

    let text = read_traces(&traces)?;
    let sockets = [sds, run.join("workload.sock")];
    let violations: Vec<&str> = text
        .lines()
        .filter(|line| is_write(line, &sockets))
        .collect();
    assert!(
        violations.is_empty(),
        "Steeple changed the filesystem:\n{}",
        violations.join("\n")
    );
    let opens = text.lines().filter(|l| l.contains("open")).count();
    assert!(opens > 10, "strace saw only {opens} opens: was it tracing?");
    Ok(())
}

/// Whether one strace line is a successful call that wrote to the filesystem, other than
/// creating or removing one of `sockets`.
fn is_write(line: &str, sockets: &[std::path::PathBuf]) -> bool {
    let Some((_, call)) = line.split_once(' ') else {
        return false;
    };
    let call = call.trim_start();
    if call.ends_with("= -1")
        || call.contains(") = -1 ")
        || call.starts_with("+++")
        || call.starts_with("---")
    {
        return false;
    }
    let name = call.split('(').next().unwrap_or("");
    let on_socket = sockets
        .iter()
        .any(|s| call.contains(&format!("\"{}\"", s.display())));
    match name {
        "open" | "openat" | "openat2" => {
            ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                .iter()
                .any(|flag| call.contains(flag))
                && !call.contains("\"/dev/null\"")
        }
        "unlink" | "unlinkat" | "chmod" | "fchmodat" => !on_socket,
        "" => false,
        _ => true,
    }
}

/// Every per-thread strace file in `dir`, joined, each line prefixed with its thread id.
fn read_traces(dir: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let tid = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("?")
            .to_owned();
        let body = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in body.lines() {
            text.push_str(&tid);
            text.push(' ');
            text.push_str(line);
            text.push('\n');
        }
    }
    Ok(text)
}

/// The process `strace` (pid `tracer`) started.
fn traced_child(tracer: u32) -> anyhow::Result<rustix::process::Pid> {
    let children = std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))?;
    let pid: i32 = children
        .split_whitespace()
        .next()
        .context("strace has no child")?
        .parse()?;
    rustix::process::Pid::from_raw(pid).context("invalid pid")
}

#[test]
fn the_trace_filter_tells_writes_from_reads() {
    let socket = [Path::new("/run/x/sds.sock").to_owned()];
    for (line, write) in [
        (
            r#"12 openat(AT_FDCWD, "/etc/steeple.toml", O_RDONLY|O_CLOEXEC) = 3"#,
            false,
        ),
        (
            r#"12 openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3"#,
            true,
        ),
        (
            r#"12 openat(AT_FDCWD, "/nope", O_RDWR) = -1 ENOENT (No such file or directory)"#,
            false,
        ),
        (r#"12 unlink("/run/x/sds.sock") = 0"#, false),
        (r#"12 unlink("/run/x/other") = 0"#, true),
        (r#"12 chmod("/run/x/sds.sock", 0600) = 0"#, false),
        (r#"12 mkdir("/var/lib/steeple", 0700) = 0"#, true),
        (r#"12 rename("/a", "/b") = 0"#, true),
        ("12 +++ exited with 0 +++", false),
        (
            "12 --- SIGTERM {si_signo=SIGTERM, si_code=SI_USER} ---",
            false,
        ),
    ] {
        assert_eq!(is_write(line, &socket), write, "{line}");
    }
}
