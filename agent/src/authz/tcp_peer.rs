//! Who is on the other end of a loopback TCP connection. TCP has no `SO_PEERCRED`, but
//! the kernel lists every socket of this network namespace in `/proc/net/tcp{,6}` with
//! its owner's uid and inode: the client's socket is the entry whose local address is our
//! peer's and whose remote address is ours. The process holding that inode (found under
//! `/proc/<pid>/fd`) gives the pid, gid and executable. [`trace`] and [`grant`] are what
//! the HTTP credential endpoints run per request: trace the caller, check the policy
//! (with its identity, when known), audit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use super::{Caller, Grant, SharedPolicy};

/// Why the process behind a loopback connection is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The kernel lists no such client socket (not loopback, another network namespace).
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
    let caller = tokio::task::spawn_blocking(move || loopback_caller(peer, local))
        .await
        .unwrap_or(Err(PeerError::NotFound));
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
pub fn loopback_caller(peer: SocketAddr, local: SocketAddr) -> Result<Caller, PeerError> {
    let table = match peer {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).map_err(|_| PeerError::NotFound)?;
    let (uid, inode) = find_socket(&text, peer, local).ok_or(PeerError::NotFound)?;
    let holders = holders_of_inode(Path::new("/proc"), inode);
    let pid = single_holder(&holders)?;
    let gid = pid.and_then(effective_gid).unwrap_or(u32::MAX);
    Ok(Caller::from_peer(uid, gid, pid))
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

/// The uid and inode of the socket bound to `peer` and connected to `local`, from a
/// `/proc/net/tcp{,6}` table.
fn find_socket(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<(u32, u64)> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let (ours, theirs) = (fields.get(1)?, fields.get(2)?);
        if parse_address(ours)? != peer || parse_address(theirs)? != local {
            return None;
        }
        Some((fields.get(7)?.parse().ok()?, fields.get(9)?.parse().ok()?))
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word of the
/// address in host (little-endian) byte order, the port big-endian.
fn parse_address(field: &str) -> Option<SocketAddr> {
    let (address, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..address.len() / 8)
        .map(|i| address.get(i * 8..i * 8 + 8))
        .map(|word| u32::from_str_radix(word?, 16).ok())
        .collect::<Option<_>>()?;
    let ip = match words.as_slice() {
        [a] => IpAddr::V4(Ipv4Addr::from(a.to_le_bytes())),
        [a, b, c, d] => {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.chunks_exact_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(normalize(ip), port))
}

/// An IPv4-mapped IPv6 address as plain IPv4, so both tables compare alike.
fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The pids of every process with socket `inode` open, looked for under `proc` (only the
/// processes whose `fd` directory this process may read).
fn holders_of_inode(proc: &Path, inode: u64) -> Vec<i32> {
    let wanted = format!("socket:[{inode}]");
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str())
                })
                .then_some(pid)
        })
        .collect()
}

/// The effective gid of `pid`, from `/proc/<pid>/status`.
fn effective_gid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Gid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_kernel_byte_order() {
        assert_eq!(
            parse_address("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_address("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_address("0000000000000000FFFF00000100007F:0050"),
            Some("127.0.0.1:80".parse().unwrap()),
            "IPv4-mapped"
        );
        for junk in ["", "zz:1", "0100007F", "0100007F:zz", "01000:0050"] {
            assert_eq!(parse_address(junk), None, "{junk}");
        }
    }

    #[test]
    fn the_client_socket_is_found_by_both_ends() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2222 1
   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000 65534        0 3333 1
";
        let peer = "127.0.0.1:54321".parse().unwrap();
        let local = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(find_socket(table, peer, local), Some((65534, 3333)));
        assert_eq!(
            find_socket(table, local, "127.0.0.1:1".parse().unwrap()),
            None
        );
    }

    #[tokio::test]
    async fn a_real_loopback_connection_is_traced_to_this_process() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (_server_side, peer) = listener.accept().await.unwrap();
        let caller = loopback_caller(peer, local).expect("the kernel lists the client socket");
        assert_eq!(single_holder(&[]), Ok(None));
        assert_eq!(caller.uid, rustix::process::geteuid().as_raw());
        assert_eq!(caller.pid, Some(std::process::id() as i32));
        assert_eq!(caller.gid, rustix::process::getegid().as_raw());
    }
}
