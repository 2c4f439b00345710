//! Which connections the SDS socket takes at all. Any local process that can reach the
//! socket can connect, so everything a connection makes Steeple hold is bounded before
//! HTTP/2 starts: at most `max_connections` at once and `max_connections_per_uid` per
//! uid (checked on the kernel's peer credentials, before any `/proc` read or pidfd), and
//! a caller the policy grants nothing is closed at once — it costs one accept and one
//! policy lookup, never a task or a stream. A connection that sends nothing within
//! `handshake_timeout`, or uses nothing for `idle_timeout`, is closed (see
//! [`super::peer::PeerStream`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use crate::authz::{Caller, SharedPolicy};
use crate::metrics::metrics;

/// How often a refusal for one uid and reason is logged (the rest are counted).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The connection limits of the SDS socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, all callers together.
    pub max_connections: usize,
    /// Connections open at once per uid.
    pub max_connections_per_uid: usize,
    /// How long a new connection may stay silent before it is closed.
    pub handshake_timeout: Duration,
    /// How long a connection may carry no stream and no request before it is closed.
    pub idle_timeout: Duration,
    /// Refuse callers whose peer credentials carry no pid (another PID namespace): for
    /// them the exited/reused-process check cannot run.
    pub require_pid: bool,
}

/// How long a connection may go without its first byte, and without a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From accept to the first byte (the HTTP/2 preface).
    pub handshake: Duration,
    /// With no stream open, from the last request to closing.
    pub idle: Duration,
}

/// Admits or refuses accepted connections, and counts the open ones.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    policy: SharedPolicy,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    per_uid: HashMap<u32, usize>,
    /// When a refusal was last logged, by (uid, reason).
    logged: HashMap<(u32, &'static str), Instant>,
}

/// One admitted connection's place in the counts, given back when it drops.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.admission.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_uid.get_mut(&self.uid) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_uid.remove(&self.uid);
            }
        }
        metrics().set_sds_connections(open.total);
    }
}

impl Admission {
    /// Admission under `limits` for callers `policy` grants something.
    pub fn new(limits: ConnectionLimits, policy: SharedPolicy) -> Arc<Self> {
        Arc::new(Self {
            limits,
            policy,
            open: Mutex::new(OpenConnections::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The caller of the accepted `stream` and its place in the counts, or `None` — the
    /// stream is then to be dropped, which closes it: over a limit, no peer credentials,
    /// or a caller granted nothing.
    pub fn admit(self: &Arc<Self>, stream: &UnixStream) -> Option<(Arc<Caller>, Slot)> {
        let Ok(cred) = stream.peer_cred() else {
            self.refused(u32::MAX, "no peer credentials");
            return None;
        };
        let uid = cred.uid();
        let pid = cred.pid().filter(|p| *p > 0);
        if pid.is_none() {
            metrics().sds_caller_without_pid();
            if self.limits.require_pid {
                self.refused(uid, "no pid in its peer credentials (another PID namespace) and sds.require_caller_pid is set");
                return None;
            }
            self.noted(uid, "no pid in its peer credentials (another PID namespace): its liveness is not checked");
        }
        let slot = self.take_slot(uid)?;
        let caller = Arc::new(Caller::from_peer(uid, cred.gid(), pid));
        if !self.policy.current().may_grant(&caller) {
            self.refused(uid, "the policy grants this caller nothing");
            return None;
        }
        Some((caller, slot))
    }

    /// How long an admitted connection may stay silent, and unused, before it is closed.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            handshake: self.limits.handshake_timeout,
            idle: self.limits.idle_timeout,
        }
    }

    /// A place for one more connection of `uid`, or `None` over a limit.
    fn take_slot(self: &Arc<Self>, uid: u32) -> Option<Slot> {
        let reason = {
            let mut open = self.lock();
            let of_uid = open.per_uid.get(&uid).copied().unwrap_or(0);
            if open.total >= self.limits.max_connections {
                Some("sds.max_connections reached")
            } else if of_uid >= self.limits.max_connections_per_uid {
                Some("sds.max_connections_per_uid reached")
            } else {
                open.total += 1;
                open.per_uid.insert(uid, of_uid + 1);
                metrics().set_sds_connections(open.total);
                None
            }
        };
        match reason {
            Some(reason) => {
                self.refused(uid, reason);
                None
            }
            None => Some(Slot {
                admission: self.clone(),
                uid,
            }),
        }
    }

    /// Counts a refusal; logs it (as an audit event) at most every [`LOG_EVERY`] per uid
    /// and reason, so a flood cannot flood the log.
    fn refused(&self, uid: u32, reason: &'static str) {
        metrics().sds_connection_refused();
        if self.log_due(uid, reason) {
            tracing::warn!(target: crate::audit::TARGET, caller_uid = uid, decision = "deny", reason, "sds connection refused");
        }
    }

    /// An admitted connection worth an audit note, rate-limited like refusals.
    fn noted(&self, uid: u32, note: &'static str) {
        if self.log_due(uid, note) {
            tracing::warn!(target: crate::audit::TARGET, caller_uid = uid, decision = "admit", note, "sds connection");
        }
    }

    /// Whether (uid, reason) was not logged within [`LOG_EVERY`]; if so, records it now.
    fn log_due(&self, uid: u32, reason: &'static str) -> bool {
        let now = Instant::now();
        let mut open = self.lock();
        let due = open
            .logged
            .get(&(uid, reason))
            .is_none_or(|at| now.duration_since(*at) >= LOG_EVERY);
        if due {
            if open.logged.len() > 4096 {
                open.logged
                    .retain(|_, at| now.duration_since(*at) < LOG_EVERY);
            }
            open.logged.insert((uid, reason), now);
        }
        due
    }

    /// Connections open now (for tests and metrics).
    pub fn open_connections(&self) -> usize {
        self.lock().total
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
