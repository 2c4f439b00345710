//! The owner uid and inode of one TCP socket, read from the kernel's tables
//! `/proc/net/tcp{,6}` (every socket of this network namespace, one line each): the
//! fallback where `NETLINK_SOCK_DIAG` gives no definite answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid and inode of the socket bound to `peer` and connected to `local`, from the
/// table of `peer`'s family; `None` when it lists no such socket.
pub fn lookup(peer: SocketAddr, local: SocketAddr) -> Option<(u32, u64)> {
    let table = match peer {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    find_socket(&text, peer, local)
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
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
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
}
