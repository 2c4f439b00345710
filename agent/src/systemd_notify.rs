//! systemd's service notifications (`sd_notify(3)`, for `Type=notify` units), hand-written
//! over std's `UnixDatagram`: `READY=1` once [`Readiness`] says every configured output is
//! held, `STATUS=` lines naming what is missing, `WATCHDOG=1` at half of `WATCHDOG_USEC`,
//! `RELOADING=1` around a SIGHUP reload and `STOPPING=1` at shutdown. Everything is a
//! no-op unless `NOTIFY_SOCKET` is set. Messages carry no secret, only names.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;

/// How often readiness is looked at until, and after, `READY=1`.
const READINESS_POLL: Duration = Duration::from_millis(250);

/// The service manager's notification socket, when there is one; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SystemdNotifier {
    target: Option<Arc<Target>>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `READY=1` was sent (a reload sends it again only then).
    ready: AtomicBool,
    /// How often to send `WATCHDOG=1`, when the manager asked for it.
    watchdog: Option<Duration>,
}

impl SystemdNotifier {
    /// From the environment systemd sets: `NOTIFY_SOCKET` (a path, or `@name` for an
    /// abstract socket), `WATCHDOG_USEC` and `WATCHDOG_PID`. Without `NOTIFY_SOCKET`, or
    /// when the socket cannot be used (a WARN), every method does nothing.
    pub fn from_env() -> Self {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::default();
        };
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match Target::new(&socket.to_string_lossy(), watchdog) {
            Ok(target) => Self {
                target: Some(Arc::new(target)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable; no systemd notifications");
                Self::default()
            }
        }
    }

    /// Sends `RELOADING=1` with the monotonic time, before a reload is applied.
    pub fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec.saturating_mul(1_000_000) + now.tv_nsec / 1_000;
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration"
        ));
    }

    /// Sends `READY=1` after a reload (applied or refused), if the agent was ready before.
    pub fn reloaded(&self) {
        if self
            .target
            .as_ref()
            .is_some_and(|t| t.ready.load(Ordering::Relaxed))
        {
            self.send("READY=1\nSTATUS=ready");
        }
    }

    /// Sends `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// Follows `readiness` until `shutdown`: `STATUS=` whenever what is missing changes,
    /// `READY=1` the first time nothing is, and `WATCHDOG=1` on its interval.
    pub async fn follow(self, readiness: Readiness, shutdown: CancellationToken) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let mut watchdog = target.watchdog.map(tokio::time::interval);
        let mut poll = tokio::time::interval(READINESS_POLL);
        let mut status = String::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = poll.tick() => self.announce(&readiness, &mut status),
                Some(_) = tick(&mut watchdog) => self.send("WATCHDOG=1"),
            }
        }
    }

    /// Sends the readiness state if it changed since `last` (then updated).
    fn announce(&self, readiness: &Readiness, last: &mut String) {
        let Some(target) = &self.target else { return };
        let missing = readiness.missing();
        let ready = missing.is_empty();
        let status = if ready {
            "ready".to_owned()
        } else if target.ready.load(Ordering::Relaxed) {
            format!("degraded, not ready: {}", missing.join("; "))
        } else {
            format!("starting, not ready: {}", missing.join("; "))
        };
        if ready && !target.ready.swap(true, Ordering::Relaxed) {
            tracing::info!("ready: notifying systemd");
            self.send(&format!("READY=1\nSTATUS={status}"));
        } else if status != *last {
            self.send(&format!("STATUS={status}"));
        }
        *last = status;
    }

    fn send(&self, message: &str) {
        if let Some(target) = &self.target
            && let Err(e) = target.socket.send_to_addr(message.as_bytes(), &target.addr)
        {
            tracing::debug!(error = %e, "systemd notification not sent");
        }
    }
}

impl Target {
    fn new(notify_socket: &str, watchdog: Option<Duration>) -> io::Result<Self> {
        let addr = socket_addr(notify_socket)?;
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            addr,
            ready: AtomicBool::new(false),
            watchdog,
        })
    }
}

/// `NOTIFY_SOCKET` as an address: `@name` is Linux's abstract namespace, anything else
/// a filesystem path.
fn socket_addr(notify_socket: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    match notify_socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name),
        None if notify_socket.starts_with('/') => SocketAddr::from_pathname(notify_socket),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET {notify_socket:?} is neither an absolute path nor @name"),
        )),
    }
}

/// Half of `WATCHDOG_USEC`, when it is a positive number and `WATCHDOG_PID` is unset or
/// `own_pid` (the watchdog is meant for that process only).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    let usec = usec?.trim().parse::<u64>().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// The next tick of `interval`, or never without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) -> Option<tokio::time::Instant> {
    match interval {
        Some(interval) => Some(interval.tick().await),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "systemd_notify_tests.rs"]
mod tests;
