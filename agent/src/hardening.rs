//! Process-wide memory hygiene, applied once at start before any secret exists: no core
//! dumps (`RLIMIT_CORE` = 0), not dumpable (no core, no `ptrace` attach or `/proc/PID/mem`
//! read by other processes of the same uid), and — where the OS allows it — every page
//! locked in memory so no secret is ever written to swap.
//!
//! Locking uses `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`, and only when
//! `RLIMIT_MEMLOCK` is unlimited: under a finite limit, future mappings (thread stacks,
//! allocator arenas) that would cross it fail, and an allocation failure aborts the
//! process. A finite limit therefore gets one WARN naming it and how to lift it.

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior};

/// Why the process could not be hardened; the agent refuses to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HardeningError {
    /// `setrlimit(RLIMIT_CORE, 0)` failed.
    #[error("cannot turn core dumps off (RLIMIT_CORE): {0}")]
    CoreLimit(rustix::io::Errno),
    /// `prctl(PR_SET_DUMPABLE, 0)` failed.
    #[error("cannot mark the process not dumpable (PR_SET_DUMPABLE): {0}")]
    Dumpable(rustix::io::Errno),
}

/// What happened to memory locking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryLock {
    /// Every current and future page is locked.
    Locked,
    /// `agent.lock_memory = false`.
    Disabled,
    /// Not locked; why, and what would fix it.
    NotLocked(String),
}

/// Turns core dumps off, marks the process not dumpable, and locks memory when
/// `lock_memory` and the limit allow. Logs the outcome (a WARN when memory stays
/// unlocked although asked for).
pub fn harden_process(lock_memory: bool) -> Result<MemoryLock, HardeningError> {
    rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(HardeningError::CoreLimit)?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(HardeningError::Dumpable)?;
    let lock = if lock_memory {
        lock_all_memory(getrlimit(Resource::Memlock))
    } else {
        MemoryLock::Disabled
    };
    match &lock {
        MemoryLock::Locked => {
            tracing::info!("core dumps off, process not dumpable, memory locked");
        }
        MemoryLock::Disabled => tracing::info!(
            "core dumps off, process not dumpable; memory locking disabled (agent.lock_memory)"
        ),
        MemoryLock::NotLocked(reason) => tracing::warn!(
            reason = %reason,
            "core dumps off, process not dumpable; secret pages NOT locked in memory (they could be swapped out)"
        ),
    }
    Ok(lock)
}

/// Locks all memory if `limit` is unlimited; otherwise says why not.
fn lock_all_memory(limit: Rlimit) -> MemoryLock {
    if let Some(bytes) = limit.current {
        return MemoryLock::NotLocked(format!(
            "RLIMIT_MEMLOCK is {bytes} bytes; lift it (systemd LimitMEMLOCK=infinity, \
             `ulimit -l unlimited`) or set agent.lock_memory = false"
        ));
    }
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT;
    match mlockall(flags) {
        Ok(()) => MemoryLock::Locked,
        Err(e) => MemoryLock::NotLocked(format!("mlockall failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finite_limit_is_not_risked_and_says_how_to_lift_it() {
        let limited = Rlimit {
            current: Some(65536),
            maximum: Some(65536),
        };
        let MemoryLock::NotLocked(reason) = lock_all_memory(limited) else {
            panic!("a finite limit must not lock");
        };
        assert!(reason.contains("65536 bytes"), "{reason}");
        assert!(reason.contains("LimitMEMLOCK=infinity"), "{reason}");
    }

    #[test]
    fn hardening_turns_core_dumps_off_in_a_child() {
        // Run in a forked child (this very test binary, filtered to the helper below) so
        // the test process itself stays dumpable for debuggers.
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                "hardening::tests::child_process_entry",
                "--nocapture",
            ])
            .env("STEEPLE_HARDENING_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains("core=0 dumpable=false"), "{stdout}");
    }

    #[test]
    /// Not a test on its own: the body of the child the test above starts.
    fn child_process_entry() {
        if std::env::var_os("STEEPLE_HARDENING_CHILD").is_none() {
            return;
        }
        harden_process(false).unwrap();
        let core = getrlimit(Resource::Core);
        let dumpable = rustix::process::dumpable_behavior().unwrap();
        println!(
            "core={} dumpable={}",
            core.current.unwrap_or(u64::MAX),
            dumpable != DumpableBehavior::NotDumpable
        );
    }
}
