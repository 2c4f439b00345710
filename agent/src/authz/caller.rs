//! Who is on the other end of a local socket: the Unix peer credentials the kernel
//! recorded at `connect()`, plus the process's executable and start time from `/proc`.
//!
//! The start time guards against PID reuse and inherited sockets: a right is only good
//! while the process that connected still runs. If it exits (and a child or grandchild
//! keeps the socket), or its PID is reused, every later request is refused.

use std::path::PathBuf;

/// A local caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Effective uid at connect time.
    pub uid: u32,
    /// Effective gid at connect time.
    pub gid: u32,
    /// The connecting process, when the kernel reported one.
    pub pid: Option<i32>,
    /// `/proc/<pid>/exe` at connect time.
    pub exe: Option<PathBuf>,
    /// `/proc/<pid>/stat` start time (clock ticks since boot) at connect time.
    start_time: Option<u64>,
}

impl Caller {
    /// The caller described by peer credentials, with its `/proc` facts read now.
    pub fn from_peer(uid: u32, gid: u32, pid: Option<i32>) -> Self {
        let pid = pid.filter(|p| *p > 0);
        Self {
            uid,
            gid,
            pid,
            exe: pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok()),
            start_time: pid.and_then(start_time),
        }
    }

    /// Whether the process that connected is still the one running under its PID.
    /// Without a PID (the kernel did not say) there is nothing to re-check.
    pub fn still_running(&self) -> bool {
        match (self.pid, self.start_time) {
            (Some(pid), Some(started)) => start_time(pid) == Some(started),
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// A short description for logs and audit events (no secrets in it).
    pub fn describe(&self) -> String {
        let pid = self.pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
        let exe = self
            .exe
            .as_ref()
            .map_or_else(|| "?".to_owned(), |e| e.display().to_string());
        format!("uid={} gid={} pid={pid} exe={exe}", self.uid, self.gid)
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
    fn a_different_start_time_is_a_different_process() {
        let mut me = Caller::from_peer(0, 0, Some(std::process::id() as i32));
        me.start_time = me.start_time.map(|t| t + 1);
        assert!(!me.still_running());
    }
}
