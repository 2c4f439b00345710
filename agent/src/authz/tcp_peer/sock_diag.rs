//! The owner uid and inode of one TCP socket, asked of the kernel by its four-tuple over
//! `NETLINK_SOCK_DIAG` (what `ss` uses): one exact lookup in the kernel's socket hash,
//! where `/proc/net/tcp{,6}` prints every socket of the namespace (TIME_WAIT ones
//! included, thousands when each request comes on a fresh connection) to be parsed.
//!
//! Only a definite answer counts: a reply from the kernel (netlink port 0) for exactly
//! the socket asked about. Anything else — no netlink here, an error, a reply for another
//! socket (the kernel's lookup falls back to a listener on the same port) — is `None`, and
//! the caller reads `/proc/net/tcp{,6}` instead, so the result is never less exact.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::proc_net::normalize;

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h): the request and its reply's type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLM_F_REQUEST` (linux/netlink.h); no `NLM_F_DUMP`: one exact lookup.
const NLM_F_REQUEST: u16 = 1;
/// `IPPROTO_TCP`.
const IPPROTO_TCP: u8 = 6;
/// `AF_INET`, `AF_INET6` as the kernel numbers them.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Bytes of `struct nlmsghdr`.
const HEADER: usize = 16;
/// Bytes of `struct inet_diag_sockid`: ports, two 16-byte addresses, interface, cookie.
const SOCKID: usize = 48;
/// Bytes of `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid.
const REQUEST: usize = 8 + SOCKID;
/// Bytes of `struct inet_diag_msg` up to and including its inode.
const REPLY: usize = 4 + SOCKID + 20;
/// Sequence number of the one request a socket carries.
const SEQ: u32 = 1;
/// Room for the reply: one `inet_diag_msg` and the few attributes sent unasked.
const RECV_BUFFER: usize = 8192;

/// The uid and inode of the TCP socket bound to `peer` and connected to `local`, when the
/// kernel answers for exactly that socket; `None` when it does not (see the module docs).
pub fn lookup(peer: SocketAddr, local: SocketAddr) -> Option<(u32, u64)> {
    let socket = open().ok()?;
    let request = request(peer, local)?;
    rustix::net::send(&socket, &request, SendFlags::empty()).ok()?;
    // The kernel answers while handling the send, so the reply is queued by now; never
    // wait for one that is not.
    let mut buffer = vec![0u8; RECV_BUFFER];
    let (len, _, from) =
        rustix::net::recvfrom(&socket, &mut buffer[..], RecvFlags::DONTWAIT).ok()?;
    let from = SocketAddrNetlink::try_from(from?).ok()?;
    if from.pid() != 0 {
        return None;
    }
    parse_reply(buffer.get(..len)?, peer, local)
}

/// A `NETLINK_SOCK_DIAG` socket connected to the kernel: a connected netlink socket
/// accepts messages from its peer only, so no other process can answer in its place.
fn open() -> rustix::io::Result<OwnedFd> {
    let socket = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    rustix::net::connect(&socket, &SocketAddrNetlink::new(0, 0))?;
    Ok(socket)
}

/// The request for the one socket whose source is `peer` and destination `local`, as
/// `nlmsghdr` + `inet_diag_req_v2` in the kernel's layout (host byte order, ports and
/// addresses in network order). `None` when the two are not of one family.
fn request(peer: SocketAddr, local: SocketAddr) -> Option<Vec<u8>> {
    let family = match (normalize(peer.ip()), normalize(local.ip())) {
        (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => AF_INET6,
        _ => return None,
    };
    let mut message = Vec::with_capacity(HEADER + REQUEST);
    message.extend_from_slice(&((HEADER + REQUEST) as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message.extend_from_slice(&SEQ.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    // Every state: the lookup is by address; the reply's tuple is checked instead.
    message.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    message.extend_from_slice(&u32::MAX.to_ne_bytes());
    message.extend_from_slice(&sockid(peer, local));
    Some(message)
}

/// `struct inet_diag_sockid` for `source` → `destination`, cookie `INET_DIAG_NOCOOKIE`.
fn sockid(source: SocketAddr, destination: SocketAddr) -> [u8; SOCKID] {
    let mut id = [0u8; SOCKID];
    id[0..2].copy_from_slice(&source.port().to_be_bytes());
    id[2..4].copy_from_slice(&destination.port().to_be_bytes());
    id[4..20].copy_from_slice(&address_bytes(source.ip()));
    id[20..36].copy_from_slice(&address_bytes(destination.ip()));
    // idiag_if 0 (any interface), then the cookie: all ones, "not checked".
    id[40..48].fill(0xff);
    id
}

/// An address as the sockid holds it: IPv4 in the first four bytes, IPv6 in all 16.
fn address_bytes(ip: IpAddr) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    match normalize(ip) {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes = v6.octets(),
    }
    bytes
}

/// The uid and inode from the kernel's reply, if it is one `inet_diag_msg` for exactly
/// the socket `peer` → `local` (a dual-stack socket's IPv4-mapped addresses count as
/// IPv4); `None` for an error, a short or foreign message, or another socket.
fn parse_reply(reply: &[u8], peer: SocketAddr, local: SocketAddr) -> Option<(u32, u64)> {
    let len = usize::try_from(u32_at(reply, 0)?).ok()?;
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    let seq = u32_at(reply, 8)?;
    if kind != SOCK_DIAG_BY_FAMILY || seq != SEQ || len > reply.len() {
        return None;
    }
    let message = reply.get(HEADER..len)?.get(..REPLY)?;
    let family = *message.first()?;
    let id = message.get(4..4 + SOCKID)?;
    let source = socket_address(family, id.get(4..20)?, id.get(0..2)?)?;
    let destination = socket_address(family, id.get(20..36)?, id.get(2..4)?)?;
    if source != normalized(peer) || destination != normalized(local) {
        return None;
    }
    let uid = u32_at(message, 4 + SOCKID + 12)?;
    let inode = u32_at(message, 4 + SOCKID + 16)?;
    Some((uid, u64::from(inode)))
}

/// `address` (as the sockid holds it) and big-endian `port`, for `family`.
fn socket_address(family: u8, address: &[u8], port: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes(port.try_into().ok()?);
    let ip = match family {
        AF_INET => IpAddr::from(<[u8; 4]>::try_from(address.get(..4)?).ok()?),
        AF_INET6 => IpAddr::from(<[u8; 16]>::try_from(address).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(normalize(ip), port))
}

/// `address` with an IPv4-mapped IPv6 address as plain IPv4, as replies are compared.
fn normalized(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(normalize(address.ip()), address.port())
}

/// The native-endian `u32` at `offset`, if `bytes` reaches that far.
fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

#[cfg(test)]
#[path = "sock_diag_tests.rs"]
mod tests;
