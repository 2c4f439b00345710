use super::*;

const PEER: &str = "127.0.0.1:54321";
const LOCAL: &str = "127.0.0.1:8080";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A kernel reply for `source` → `destination` of `family`, owned by `uid`, inode `inode`.
fn reply(family: u8, source: SocketAddr, destination: SocketAddr, uid: u32, inode: u32) -> Vec<u8> {
    let mut message = vec![family, 1, 0, 0];
    let mut id = sockid(source, destination);
    if family == AF_INET6 {
        for (at, ip) in [(4, source.ip()), (20, destination.ip())] {
            let v6 = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            id[at..at + 16].copy_from_slice(&v6.octets());
        }
    }
    message.extend_from_slice(&id);
    for field in [0u32, 0, 0, uid, inode] {
        message.extend_from_slice(&field.to_ne_bytes());
    }
    // An attribute the kernel adds unasked (INET_DIAG_SHUTDOWN).
    message.extend_from_slice(&[5, 0, 8, 0, 0, 0, 0, 0]);
    let mut whole = Vec::new();
    whole.extend_from_slice(&((HEADER + message.len()) as u32).to_ne_bytes());
    whole.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    whole.extend_from_slice(&0u16.to_ne_bytes());
    whole.extend_from_slice(&SEQ.to_ne_bytes());
    whole.extend_from_slice(&4242u32.to_ne_bytes());
    whole.extend_from_slice(&message);
    whole
}

#[test]
fn the_request_names_one_socket_by_its_four_tuple() {
    let message = request(addr(PEER), addr(LOCAL)).unwrap();
    assert_eq!(message.len(), 72, "nlmsghdr + inet_diag_req_v2");
    assert_eq!(u32_at(&message, 0), Some(72));
    assert_eq!(message[4..6], SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    assert_eq!(message[6..8], NLM_F_REQUEST.to_ne_bytes(), "no dump");
    assert_eq!(message[16..18], [AF_INET, IPPROTO_TCP]);
    let id = &message[24..];
    assert_eq!(id[0..2], 54321u16.to_be_bytes(), "source: the client");
    assert_eq!(id[2..4], 8080u16.to_be_bytes());
    assert_eq!(id[4..8], [127, 0, 0, 1]);
    assert_eq!(id[20..24], [127, 0, 0, 1]);
    assert_eq!(id[40..48], [0xff; 8], "INET_DIAG_NOCOOKIE");
    let v6 = request(addr("[::1]:1"), addr("[::1]:2")).unwrap();
    assert_eq!(v6[16], AF_INET6);
    assert_eq!(v6[24 + 4..24 + 20], std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(request(addr(PEER), addr("[::1]:2")), None, "mixed families");
}

#[test]
fn a_reply_for_exactly_that_socket_gives_its_uid_and_inode() {
    let (peer, local) = (addr(PEER), addr(LOCAL));
    let answer = reply(AF_INET, peer, local, 1234, 5678);
    assert_eq!(parse_reply(&answer, peer, local), Some((1234, 5678)));
    let dual_stack = reply(AF_INET6, peer, local, 1234, 5678);
    assert_eq!(
        parse_reply(&dual_stack, peer, local),
        Some((1234, 5678)),
        "a dual-stack client's IPv4-mapped addresses"
    );
}

#[test]
fn anything_but_that_reply_is_no_answer() {
    let (peer, local) = (addr(PEER), addr(LOCAL));
    let answer = reply(AF_INET, peer, local, 1234, 5678);
    // The kernel's lookup falls back to a listener on the client's port.
    let listener = reply(AF_INET, peer, addr("0.0.0.0:0"), 0, 9);
    assert_eq!(parse_reply(&listener, peer, local), None);
    let reversed = reply(AF_INET, local, peer, 0, 9);
    assert_eq!(
        parse_reply(&reversed, peer, local),
        None,
        "the server's socket"
    );
    let mut error = answer.clone();
    error[4..6].copy_from_slice(&2u16.to_ne_bytes());
    assert_eq!(parse_reply(&error, peer, local), None, "NLMSG_ERROR");
    let mut other_seq = answer.clone();
    other_seq[8..12].copy_from_slice(&7u32.to_ne_bytes());
    assert_eq!(parse_reply(&other_seq, peer, local), None);
    let mut other_family = answer.clone();
    other_family[HEADER] = 1;
    assert_eq!(parse_reply(&other_family, peer, local), None);
    for cut in [0, 3, HEADER, HEADER + REPLY - 1, answer.len() - 1] {
        assert_eq!(
            parse_reply(&answer[..cut], peer, local),
            None,
            "cut at {cut}"
        );
    }
    let mut overlong = answer.clone();
    overlong[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
    assert_eq!(parse_reply(&overlong, peer, local), None);
}

#[tokio::test]
async fn the_kernel_answers_for_a_real_connection_as_proc_net_does() {
    let listener = tokio::net::TcpListener::bind(LOCAL.replace("8080", "0"))
        .await
        .unwrap();
    let local = listener.local_addr().unwrap();
    let _client = tokio::net::TcpStream::connect(local).await.unwrap();
    let (_server_side, peer) = listener.accept().await.unwrap();
    let (uid, inode) = lookup(peer, local).expect("the kernel knows the socket");
    assert_eq!(uid, rustix::process::geteuid().as_raw());
    assert_eq!(
        Some((uid, inode)),
        super::super::proc_net::lookup(peer, local)
    );
    assert_eq!(
        lookup(local, peer).map(|(_, i)| i == inode),
        Some(false),
        "the server's own"
    );
    let unused = SocketAddr::new(peer.ip(), 1);
    assert_eq!(lookup(unused, local), None);
}
