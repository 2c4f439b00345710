//! The admin listener (`[admin] listen`): `GET /metrics` (Prometheus text), `/healthz`
//! (the process serves) and `/readyz` (an X.509-SVID is held and every configured
//! envelope is served; otherwise 503 naming what is missing). Nothing else; no secret is
//! ever part of an answer.

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
use crate::store::{Secret, SecretStore, Snapshot};

/// The Prometheus text exposition format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    store: Arc<SecretStore>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "admin listener is not on loopback: /metrics is reachable from the network");
    }
    tracing::info!(listen = %local, "admin listener (/metrics, /healthz, /readyz) listening");
    let handler = move |request: Request<Incoming>, _peer: SocketAddr| {
        let store = store.clone();
        async move { respond(&request, &store.snapshot()) }
    };
    crate::http_serve::serve(listener, "admin", handler, shutdown).await
}

/// The answer to one admin request.
fn respond(request: &Request<Incoming>, snapshot: &Snapshot) -> Response<Full<Bytes>> {
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
        "/readyz" => match not_ready(snapshot, metrics().envelopes_unserved()) {
            None => text(StatusCode::OK, "ready\n".to_owned()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n".to_owned(),
        ),
    }
}

/// Why the agent is not ready, if it is not: no X.509-SVID yet, or envelopes not served.
pub fn not_ready(snapshot: &Snapshot, envelopes_unserved: i64) -> Option<String> {
    let has_svid = snapshot
        .iter()
        .any(|(_, entry)| matches!(entry.secret, Secret::Certificate(_)));
    let mut missing = Vec::new();
    if !has_svid {
        missing.push("no X.509-SVID yet".to_owned());
    }
    if envelopes_unserved > 0 {
        missing.push(format!(
            "{envelopes_unserved} configured envelope(s) not served"
        ));
    }
    (!missing.is_empty()).then(|| missing.join("; "))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::store::{Certificate, Source};
    use steeple_plugin_api::SecretBytes;

    #[test]
    fn ready_needs_an_svid_and_every_envelope() {
        let store = SecretStore::new();
        assert_eq!(
            not_ready(&store.snapshot(), 2).as_deref(),
            Some("no X.509-SVID yet; 2 configured envelope(s) not served")
        );
        let cert = |not_after| {
            Secret::Certificate(Certificate {
                spiffe_id: "spiffe://example.org/web".into(),
                chain_der: vec![vec![1]],
                key_pkcs8: SecretBytes::copy_from(b"k"),
                not_before: SystemTime::now() - Duration::from_secs(60),
                not_after,
            })
        };
        let expired = cert(SystemTime::now() - Duration::from_secs(1));
        store.sync_source(&Source::X509Identity, vec![("default".into(), expired)]);
        assert_eq!(
            not_ready(&store.snapshot(), 0).as_deref(),
            Some("no X.509-SVID yet"),
            "an expired SVID does not count"
        );
        let valid = cert(SystemTime::now() + Duration::from_secs(600));
        store.sync_source(&Source::X509Identity, vec![("default".into(), valid)]);
        assert_eq!(
            not_ready(&store.snapshot(), 1).as_deref(),
            Some("1 configured envelope(s) not served")
        );
        assert_eq!(not_ready(&store.snapshot(), 0), None);
    }
}
