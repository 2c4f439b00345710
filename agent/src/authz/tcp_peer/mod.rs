//! Who is on the other end of a loopback TCP connection. TCP has no `SO_PEERCRED`, but
//! the kernel knows the client socket — the one bound to our peer's address and
//! connected to ours — with its owner's uid and inode: asked for by that four-tuple over
//! `NETLINK_SOCK_DIAG` ([`sock_diag`]), else found in `/proc/net/tcp{,6}` ([`proc_net`]).
//! The process holding that inode (found under `/proc/<pid>/fd`, [`holders`]) gives the
//! pid, gid and executable. [`trace`] and [`grant`] are what the HTTP credential endpoints
//! run per request: trace the caller, check the policy (with its identity, when known),
//! audit.
//!
//! Finding the holders takes a scan of every process: a socket can be held by processes
//! of any uid (inherited over `fork`, passed with `SCM_RIGHTS`, kept across a setuid
//! `exec`), and one of the socket owner's own processes can hide from a scan by uid (a
//! non-dumpable process's `/proc/<pid>` belongs to root). A scan of the owner's processes
//! alone would miss exactly the holder the ambiguity rule is there to see, so every scan
//! is whole; concurrent requests share one instead of each running its own.

mod holders;
mod proc_net;
mod sock_diag;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use super::{Caller, Grant, SharedPolicy};
use holders::HolderScans;

/// The scans of this process's `/proc`, shared by every endpoint: one at a time is all
/// the cores need, and each serves every request waiting for it.
static SCANS: LazyLock<HolderScans> = LazyLock::new(|| HolderScans::new("/proc"));

/// Why the process behind a loopback connection is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The kernel lists no such client socket (not loopback, another network namespace),
    /// or no process holds it any more (closed, its inode gone).
    #[error("connecting process not found")]
    NotFound,
    /// Several processes hold the client socket and they differ in gid or executable: a
    /// process can connect, hand the socket to a child and exec an allowed binary, so
    /// none of them can be taken for the caller.
    #[error("the client socket is held by several processes that differ in gid or executable")]
    AmbiguousHolders,
}

/// Why a TCP caller of a credential endpoint was refused (each an audit event already).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The process behind the connection could not be identified.
    #[error("the connecting process could not be identified")]
    Unidentified,
    /// The policy does not grant the resource to the caller; the text names the
    /// resource, never the policy.
    #[error("{0}")]
    NotAuthorized(String),
    /// The caller's identity maps to no role of the endpoint's side.
    #[error("{0}")]
    NoRole(String),
}

/// Traces the connection `peer` → `local` to its process, for a request for `resource`
/// on `endpoint` (the audit events' name); a caller that cannot be traced is an audit
/// event.
pub async fn trace(
    peer: SocketAddr,
    local: SocketAddr,
    resource: &str,
    endpoint: &'static str,
) -> Result<Arc<Caller>, Refusal> {
    let caller = loopback_caller(peer, local).await;
    caller.map(Arc::new).map_err(|reason| {
        tracing::warn!(target: crate::audit::TARGET, caller = %peer, resource, decision = "deny", reason = %reason, "{endpoint}");
        Refusal::Unidentified
    })
}

/// Checks `policy` grants `resource` on `endpoint` to `caller`, holding SVIDs for
/// `identity` when known. Denials are audit events, as the first grant of a resource to
/// a process is.
pub fn grant(
    caller: &Arc<Caller>,
    identity: Option<Vec<String>>,
    policy: &SharedPolicy,
    resource: &str,
    endpoint: &'static str,
) -> Result<(), Refusal> {
    Grant::with_identity(caller.clone(), &policy.current(), identity)
        .on_endpoint(endpoint)
        .authorize([resource])
        .map_err(|status| Refusal::NotAuthorized(status.message().to_owned()))
}

/// The caller behind the loopback connection `peer` → `local`. Its uid is the socket
/// owner's (the kernel's); pid, gid and executable are the holding process's, and are
/// refused when several holders disagree on them.
pub async fn loopback_caller(peer: SocketAddr, local: SocketAddr) -> Result<Caller, PeerError> {
    let (uid, inode) = blocking(move || client_socket(peer, local)).await?;
    let holders = SCANS.holders_of(inode).await.ok_or(PeerError::NotFound)?;
    blocking(move || {
        let pid = single_holder(&holders)?;
        let gid = pid.and_then(effective_gid).unwrap_or(u32::MAX);
        Ok(Caller::from_peer(uid, gid, pid))
    })
    .await
}

/// `work` on the blocking pool (it reads `/proc`); `NotFound` if it could not run.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PeerError> + Send + 'static,
) -> Result<T, PeerError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or(Err(PeerError::NotFound))
}

/// The owner uid and inode of the client socket `peer` → `local`. A closed socket
/// lingers in the kernel's tables with inode 0 (and, in TIME_WAIT, uid 0): no process
/// holds it, so there is no caller to find.
fn client_socket(peer: SocketAddr, local: SocketAddr) -> Result<(u32, u64), PeerError> {
    let (uid, inode) = sock_diag::lookup(peer, local)
        .or_else(|| proc_net::lookup(peer, local))
        .ok_or(PeerError::NotFound)?;
    match inode {
        0 => Err(PeerError::NotFound),
        inode => Ok((uid, inode)),
    }
}

/// The one process to take for the caller: none, the only holder, or the lowest pid of
/// holders that all share one gid and one executable.
fn single_holder(holders: &[i32]) -> Result<Option<i32>, PeerError> {
    let Some(first) = holders.iter().min().copied() else {
        return Ok(None);
    };
    let facts = |pid: i32| {
        (
            effective_gid(pid),
            std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
        )
    };
    let expected = facts(first);
    if holders.iter().all(|pid| facts(*pid) == expected) {
        Ok(Some(first))
    } else {
        Err(PeerError::AmbiguousHolders)
    }
}

/// The effective gid of `pid`, from `/proc/<pid>/status`.
fn effective_gid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Gid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
