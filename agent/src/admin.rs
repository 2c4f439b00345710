//! The admin listener (`[admin] listen`): `GET /metrics` (Prometheus text), `/healthz`
//! (liveness: the process serves) and `/readyz` (every configured output is held, see
//! [`crate::readiness`]; otherwise 503 naming what is missing). Nothing else; no secret
//! is ever part of an answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::metrics;
use crate::readiness::Readiness;
use crate::store::{SecretStore, Snapshot};

/// The Prometheus text exposition format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    store: Arc<SecretStore>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "admin listener is not on loopback: /metrics is reachable from the network");
    }
    tracing::info!(listen = %local, "admin listener (/metrics, /healthz, /readyz) listening");
    let handler = move |request: Request<Incoming>, _peer: SocketAddr| {
        let (store, readiness) = (store.clone(), readiness.clone());
        async move { respond(&request, &store.snapshot(), &readiness) }
    };
    crate::http_serve::serve(listener, "admin", handler, shutdown).await
}

/// The answer to one admin request.
fn respond(
    request: &Request<Incoming>,
    snapshot: &Snapshot,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(
                StatusCode::OK,
                metrics().render(snapshot, SystemTime::now()),
            );
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => {
            let missing = readiness.missing();
            if missing.is_empty() {
                text(StatusCode::OK, "ready\n".to_owned())
            } else {
                let why = missing.join("; ");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
