//! Who is on the other end of a local socket: the Unix peer credentials the kernel
//! recorded at `connect()`, plus the process's executable and start time from `/proc`.
//!
//! A right is only good while the process that connected still runs. If it exits (and a
//! child or grandchild keeps the socket), or its PID is reused, every later request is
//! refused. The process is held by a pidfd taken at connect time (one `poll` per check,
//! and a reused PID can never match it); where the kernel has no pidfds, its start time
//! is re-read from `/proc` instead, as SPIRE does.
//!
//! A passing check stands for [`CHECK_STANDS_FOR`] on its connection: a fan-out that
//! pushes to a hundred streams of one connection reads `/proc` once, not a hundred times.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A local caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Effective uid at connect time.
    pub uid: u32,
    /// Effective gid at connect time.
    pub gid: u32,
    /// The connecting process, when the kernel reported one.
    pub pid: Option<i32>,
    /// `/proc/<pid>/exe` at connect time.
    pub exe: Option<PathBuf>,
    /// Its start time (clock ticks since boot) at connect time.
    started: Option<u64>,
    /// How to tell later whether that process still runs.
    liveness: Liveness,
    /// Resource names whose grant was already audited for this connection.
    audited: Arc<Mutex<HashSet<String>>>,
    /// When the process last passed [`Caller::runs_as_connected`], in nanoseconds since
    /// [`nanos_since_epoch`]'s start (0: never). Shared by the connection's clones.
    passed_at: Arc<AtomicU64>,
}

/// How long a passing check of the connecting process ([`Caller::runs_as_connected`])
/// stands for its connection before `/proc` is read again.
///
/// Why this is safe: the check guards against a process that exits (a child keeps the
/// socket) or `execve`s another program, and then goes on receiving what the process that
/// connected was granted — above all, material made *later* (rotations). The window lets
/// such a connection have at most this long of it after the last passing check, which is
/// less than a response already waits behind other streams' writes under load (a check
/// never covered the moment the bytes leave). A failed check is never remembered: it is
/// made again, and refuses, every time.
pub const CHECK_STANDS_FOR: Duration = Duration::from_millis(2);

/// Why [`Caller::runs_as_connected`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessChange {
    /// The connecting process exited, or its PID now names another process.
    Gone,
    /// It runs another executable than when it connected.
    Executed,
}

/// Most names remembered as audited per connection; past it, grants are audited again.
const MAX_AUDITED: usize = 4096;

/// How [`Caller::still_running`] checks the connecting process.
#[derive(Debug, Clone)]
enum Liveness {
    /// The kernel named no process: nothing to re-check.
    NoPid,
    /// A pidfd for the process: readable once it has exited.
    Pidfd(Arc<OwnedFd>),
    /// Its `/proc/<pid>/stat` start time (clock ticks since boot) at connect time.
    StartTime(i32, u64),
    /// Gone already when it was looked up.
    Gone,
}

impl Caller {
    /// The caller described by peer credentials, with its `/proc` facts read now.
    pub fn from_peer(uid: u32, gid: u32, pid: Option<i32>) -> Self {
        let pid = pid.filter(|p| *p > 0);
        let liveness = match pid {
            None => Liveness::NoPid,
            Some(pid) => Liveness::of(pid),
        };
        Self {
            uid,
            gid,
            pid,
            exe: pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok()),
            started: pid.and_then(start_time),
            liveness,
            audited: Arc::default(),
            passed_at: Arc::default(),
        }
    }

    /// Whether the process that connected still runs, as the same program: checked in
    /// `/proc` unless it passed within [`CHECK_STANDS_FOR`] on this connection.
    pub fn runs_as_connected(&self) -> Result<(), ProcessChange> {
        self.runs_as_connected_at(nanos_since_epoch())
    }

    /// [`Caller::runs_as_connected`] at `now` ([`nanos_since_epoch`]).
    fn runs_as_connected_at(&self, now: u64) -> Result<(), ProcessChange> {
        let passed_at = self.passed_at.load(Ordering::Relaxed);
        if passed_at != 0 && now.saturating_sub(passed_at) < stands_for_nanos() {
            return Ok(());
        }
        if !self.still_running() {
            return Err(ProcessChange::Gone);
        }
        if self.exe_changed() {
            return Err(ProcessChange::Executed);
        }
        // The time the check began: the window never outlasts the facts it read.
        self.passed_at.fetch_max(now, Ordering::Relaxed);
        Ok(())
    }

    /// The connecting process's pid and start time, which name it alone (a reused pid
    /// comes with another start time); `None` without a pid, or if it was gone already.
    pub fn process_key(&self) -> Option<(i32, u64)> {
        Some((self.pid?, self.started?))
    }

    /// Whether a grant of `name` to this connection is news for the audit trail: true the
    /// first time, so a client re-fetching the same resource on one connection is
    /// audited once, not per request.
    pub fn first_grant_of(&self, name: &str) -> bool {
        let mut audited = self
            .audited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if audited.contains(name) {
            return false;
        }
        if audited.len() < MAX_AUDITED {
            audited.insert(name.to_owned());
        }
        true
    }

    /// Whether the process that connected is still the one running under its PID.
    /// Without a PID (the kernel did not say) there is nothing to re-check.
    pub fn still_running(&self) -> bool {
        match &self.liveness {
            Liveness::NoPid => true,
            Liveness::Pidfd(fd) => !has_exited(fd),
            Liveness::StartTime(pid, started) => start_time(*pid) == Some(*started),
            Liveness::Gone => false,
        }
    }

    /// Whether the connecting process runs another executable than at connect time (it
    /// called `execve` since): its rights were judged for the old one. Nothing to compare
    /// when the executable was not readable then.
    pub fn exe_changed(&self) -> bool {
        match (self.pid, &self.exe) {
            (Some(pid), Some(then)) => {
                std::fs::read_link(format!("/proc/{pid}/exe")).ok().as_ref() != Some(then)
            }
            _ => false,
        }
    }

    /// A short description for logs and audit events (no secrets in it).
    pub fn describe(&self) -> String {
        let pid = self
            .pid
            .map_or_else(|| "none(liveness-unchecked)".to_owned(), |p| p.to_string());
        let exe = self
            .exe
            .as_ref()
            .map_or_else(|| "?".to_owned(), |e| e.display().to_string());
        format!("uid={} gid={} pid={pid} exe={exe}", self.uid, self.gid)
    }
}

/// Nanoseconds since this clock's first reading, plus one (so never 0).
fn nanos_since_epoch() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = EPOCH.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(elapsed).unwrap_or(u64::MAX).saturating_add(1)
}

/// [`CHECK_STANDS_FOR`] in nanoseconds.
fn stands_for_nanos() -> u64 {
    u64::try_from(CHECK_STANDS_FOR.as_nanos()).unwrap_or(u64::MAX)
}

impl Liveness {
    fn of(pid: i32) -> Self {
        let Some(raw) = rustix::process::Pid::from_raw(pid) else {
            return Self::Gone;
        };
        match rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => Self::Pidfd(Arc::new(fd)),
            Err(rustix::io::Errno::SRCH) => Self::Gone,
            // No pidfds here (old kernel, seccomp): fall back to the start time.
            Err(_) => start_time(pid).map_or(Self::Gone, |t| Self::StartTime(pid, t)),
        }
    }
}

/// Whether the process behind `pidfd` has exited (its pidfd polls readable).
fn has_exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    match poll(&mut fds, Some(&rustix::time::Timespec::default())) {
        Ok(0) => false,
        Ok(_) => true,
        // A check that cannot be made refuses: rights need a live, known caller.
        Err(_) => true,
    }
}

/// Field 22 of `/proc/<pid>/stat`, read after the command name (which may hold spaces
/// and parentheses, so parsing starts after its last `)`).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the comm come: state (field 3) … starttime (field 22) → index 19.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_current_process_and_it_is_running() {
        let me = Caller::from_peer(1, 2, Some(std::process::id() as i32));
        assert!(me.still_running());
        assert!(me.exe.is_some());
        assert!(me.describe().starts_with("uid=1 gid=2 pid="));
    }

    #[test]
    fn an_exec_after_connecting_is_noticed() {
        let me = Caller::from_peer(0, 0, Some(std::process::id() as i32));
        assert!(!me.exe_changed());
        let before_exec = Caller {
            exe: Some(PathBuf::from("/usr/bin/allowed-binary")),
            ..me.clone()
        };
        assert!(before_exec.exe_changed());
        assert!(!Caller::from_peer(0, 0, None).exe_changed());
    }

    /// The adversarial review's SDS spoof (issue 12.4), on a real process: a caller
    /// judged as one program that then `execve`s another loses its grant on its next
    /// request.
    #[test]
    fn a_real_exec_after_connecting_loses_the_grant() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3; exec sleep 5"])
            .spawn()
            .unwrap();
        let caller = Arc::new(Caller::from_peer(0, 0, Some(child.id() as i32)));
        let shell = caller.exe.clone().unwrap();
        let policy = super::super::Policy::new(Vec::new(), 0);
        let grant = super::super::Grant::new(caller.clone(), &policy);
        assert!(
            grant.authorize(["default"]).is_ok(),
            "still {}",
            shell.display()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !caller.exe_changed() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let refused = grant.authorize(["default"]).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("another program"), "{refused:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_passing_check_stands_for_its_window_on_the_connection_only() {
        let me = Caller::from_peer(0, 0, Some(std::process::id() as i32));
        let t0 = 1_000;
        assert_eq!(me.runs_as_connected_at(t0), Ok(()));
        // The same connection, its process now running another program: the pass made
        // at t0 stands until the window ends, and not a nanosecond longer.
        let executed = Caller {
            exe: Some(PathBuf::from("/usr/bin/allowed-binary")),
            ..me.clone()
        };
        let window = stands_for_nanos();
        assert_eq!(executed.runs_as_connected_at(t0 + window - 1), Ok(()));
        assert_eq!(
            executed.runs_as_connected_at(t0 + window),
            Err(ProcessChange::Executed)
        );
        // A refusal is not remembered: it refuses again, however soon.
        assert_eq!(
            executed.runs_as_connected_at(t0 + window + 1),
            Err(ProcessChange::Executed)
        );
        // Another connection of the same process has no pass of its own yet.
        let other = Caller {
            exe: Some(PathBuf::from("/usr/bin/allowed-binary")),
            ..Caller::from_peer(0, 0, Some(std::process::id() as i32))
        };
        assert_eq!(other.runs_as_connected_at(t0), Err(ProcessChange::Executed));
        let gone = Caller {
            liveness: Liveness::Gone,
            ..Caller::from_peer(0, 0, Some(std::process::id() as i32))
        };
        assert_eq!(gone.runs_as_connected_at(t0), Err(ProcessChange::Gone));
    }

    #[test]
    fn a_grant_is_news_once_per_connection() {
        let caller = Caller::from_peer(1, 2, None);
        assert!(caller.first_grant_of("default"));
        assert!(!caller.first_grant_of("default"));
        assert!(caller.clone().first_grant_of("ROOTCA"));
        assert!(
            !caller.first_grant_of("ROOTCA"),
            "clones share the connection's memory"
        );
        // Another connection of the same process is audited afresh.
        assert!(Caller::from_peer(1, 2, None).first_grant_of("default"));
    }

    #[test]
    fn an_exited_process_loses_its_rights() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let caller = Caller::from_peer(0, 0, Some(pid));
        child.wait().unwrap();
        assert!(
            !caller.still_running(),
            "reaped child must not count as running"
        );
    }

    #[test]
    fn an_exited_but_unreaped_process_loses_its_rights() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let caller = Caller::from_peer(0, 0, Some(child.id() as i32));
        assert!(matches!(caller.liveness, Liveness::Pidfd(_)));
        // A zombie keeps its /proc entry; its pidfd already says it exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while caller.still_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!caller.still_running());
        child.wait().unwrap();
    }

    #[test]
    fn the_start_time_fallback_tells_a_different_process() {
        let pid = std::process::id() as i32;
        let started = start_time(pid).unwrap();
        let same = Liveness::StartTime(pid, started);
        let reused = Liveness::StartTime(pid, started + 1);
        let with = |liveness| Caller {
            liveness,
            ..Caller::from_peer(0, 0, Some(pid))
        };
        assert!(with(same).still_running());
        assert!(!with(reused).still_running());
        assert!(!with(Liveness::Gone).still_running());
    }
}
