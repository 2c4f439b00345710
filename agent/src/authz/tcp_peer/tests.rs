use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use super::*;

/// A loopback connection: the listener's address, the client and the server's end.
async fn connection(
    client: impl std::future::Future<Output = std::io::Result<tokio::net::TcpStream>>,
    listener: tokio::net::TcpListener,
) -> (SocketAddr, tokio::net::TcpStream, SocketAddr) {
    let client = client.await.unwrap();
    let (_server_side, peer) = listener.accept().await.unwrap();
    (listener.local_addr().unwrap(), client, peer)
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn assert_is_this_process(caller: &Caller) {
    assert_eq!(caller.uid, rustix::process::geteuid().as_raw());
    assert_eq!(caller.pid, Some(std::process::id() as i32));
    assert_eq!(caller.gid, rustix::process::getegid().as_raw());
}

#[tokio::test]
async fn a_real_loopback_connection_is_traced_to_this_process() {
    let listener = listener().await;
    let to = listener.local_addr().unwrap();
    let (local, _client, peer) = connection(tokio::net::TcpStream::connect(to), listener).await;
    let caller = loopback_caller(peer, local)
        .await
        .expect("the kernel knows the client socket");
    assert_is_this_process(&caller);
    assert_eq!(single_holder(&[]), Ok(None));
}

#[tokio::test]
async fn a_dual_stack_client_is_traced_too() {
    let listener = listener().await;
    let mapped = std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped();
    let to = SocketAddr::new(mapped.into(), listener.local_addr().unwrap().port());
    let socket = tokio::net::TcpSocket::new_v6().unwrap();
    let (local, _client, peer) = connection(socket.connect(to), listener).await;
    assert!(peer.is_ipv4(), "the server sees {peer}");
    let caller = loopback_caller(peer, local)
        .await
        .expect("an IPv6 socket of this process");
    assert_is_this_process(&caller);
}

#[tokio::test]
async fn a_client_that_closed_its_socket_is_not_taken_for_anyone() {
    let listener = listener().await;
    let to = listener.local_addr().unwrap();
    let (local, client, peer) = connection(tokio::net::TcpStream::connect(to), listener).await;
    drop(client);
    // Its socket lingers (FIN_WAIT, then TIME_WAIT) with inode 0 and, later, uid 0.
    assert_eq!(
        loopback_caller(peer, local).await.err(),
        Some(PeerError::NotFound)
    );
}

#[tokio::test]
async fn holders_running_other_executables_are_ambiguous() {
    let listener = listener().await;
    let to = listener.local_addr().unwrap();
    let (local, client, peer) = connection(tokio::net::TcpStream::connect(to), listener).await;
    let ours = client.into_std().unwrap();
    let shared = OwnedFd::from(ours.try_clone().unwrap());
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::from(shared))
        .spawn()
        .unwrap();
    let traced = loopback_caller(peer, local).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(traced.err(), Some(PeerError::AmbiguousHolders));
    let alone = loopback_caller(peer, local)
        .await
        .expect("its only holder again");
    assert_is_this_process(&alone);
}
