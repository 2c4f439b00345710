//! A TCP pass-through that keeps a copy of both directions, so the suite learns the exact
//! secrets a `steeple doctor` run handled (the JWT-SVID it sent Vault, the token and the
//! AWS credentials it got back) and can check none of them reached the output.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

type Seen = Arc<Mutex<Vec<u8>>>;

/// Forwards 127.0.0.1:`port()` to an upstream port; stops on drop.
pub struct Tee {
    port: u16,
    sent: Seen,
    received: Seen,
    accept: JoinHandle<()>,
}

impl Tee {
    /// Listens on a free loopback port, forwarding every connection to `upstream`.
    pub async fn start(upstream: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (sent, received) = (Seen::default(), Seen::default());
        let (to_up, from_up) = (sent.clone(), received.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, to_up.clone()));
                tokio::spawn(pump(server_read, client_write, from_up.clone()));
            }
        });
        Ok(Self {
            port,
            sent,
            received,
            accept,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything clients sent upstream so far.
    pub fn sent(&self) -> String {
        text(&self.sent)
    }

    /// Everything the upstream answered so far.
    pub fn received(&self) -> String {
        text(&self.received)
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn text(seen: &Seen) -> String {
    String::from_utf8_lossy(&seen.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Seen,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Every value between `start` and `end` in `text` (e.g. `"client_token":"` and `"`).
pub fn between(text: &str, start: &str, end: &str) -> Vec<String> {
    text.split(start)
        .skip(1)
        .filter_map(|rest| rest.split(end).next())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}
