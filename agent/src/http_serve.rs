//! The small HTTP/1.1 servers Steeple runs on TCP (the AWS container-credentials endpoint
//! and IMDSv2 emulation, the admin listener): an accept loop that survives failed
//! accepts, a header-read timeout, and a graceful stop — stop accepting, let requests in
//! flight finish, close idle keep-alive connections. Plus what the credential endpoints
//! share: secret response bodies and the proxy check.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use steeple_plugin_api::SecretBytes;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) so it cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Response bytes that zeroize when hyper drops them (credentials, session tokens).
pub struct SecretBody(pub SecretBytes);

impl AsRef<[u8]> for SecretBody {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

impl SecretBody {
    /// A body of `secret` for a response.
    pub fn full(secret: SecretBytes) -> Full<Bytes> {
        Full::new(Bytes::from_owner(Self(secret)))
    }

    /// A 200 `application/json` response of `json` (rendered credentials).
    pub fn json(json: SecretBytes) -> Response<Full<Bytes>> {
        let mut response = Response::new(Self::full(json));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Whether a request crossed a proxy (`X-Forwarded-For` or `Forwarded`): then it did not
/// come from a client on this host, whatever the TCP peer says, and a credential endpoint
/// must refuse it.
pub fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key("x-forwarded-for") || headers.contains_key(header::FORWARDED)
}

/// Serves `handler` on `listener` until `shutdown`, then drains (see the module docs).
/// `what` names the server in log events. Errors only if the listener has no local
/// address.
pub async fn serve<H, F>(
    listener: TcpListener,
    what: &'static str,
    handler: H,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let local = listener.local_addr()?;
    let mut connections = JoinSet::new();
    let mut accept_failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accept_failing = false;
                    connections.spawn(connection(stream, peer, what, handler.clone(), shutdown.clone()));
                }
                Err(e) if accept_failing => {
                    tracing::debug!(server = what, listen = %local, error = %e, "accepting a connection still failing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                Err(e) => {
                    accept_failing = true;
                    tracing::warn!(server = what, listen = %local, error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    tracing::info!(server = what, listen = %local, "stopped");
    Ok(())
}

/// One HTTP/1.1 connection, closed gracefully on `shutdown`.
async fn connection<H, F>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    what: &'static str,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let method = request.method().clone();
        let response = handler(request, peer);
        async move {
            let response = response.await;
            tracing::debug!(server = what, %peer, %method, status = response.status().as_u16(), "request");
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(server = what, %peer, error = %e, "connection ended with an error");
    }
}
