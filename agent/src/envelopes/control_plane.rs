//! The control-plane source: polls `GET {url}/v1/crypto/envelope-secrets` with a bearer
//! token (from a file, re-read every poll, or a fresh JWT-SVID) and `If-None-Match`, and
//! publishes the rows. Metadata only ever travels this way. On any failure the last good
//! rows stay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use steeple_plugin_api::{EnvelopeRow, JwtSvidSource, SecretBytes};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize as _;

use super::RowSink;
use super::parse::{Format, parse_document};
use crate::config::ControlPlaneConfig;

/// The source name rows from the control plane are published under.
pub const SOURCE: &str = "control-plane";
const PATH: &str = "/v1/crypto/envelope-secrets";
/// Largest list response accepted.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How the source authenticates.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bearer token in a file, re-read before every poll.
    TokenFile(PathBuf),
    /// A JWT-SVID for this audience, fetched fresh for every poll.
    JwtSvid(Arc<dyn JwtSvidSource>, String),
}

/// Why a poll failed. Never carries the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// `control_plane.url` is not an http(s) URL.
    #[error("control_plane.url is not a valid http(s) URL")]
    Url,
    /// The HTTP client could not be built (bad CA file).
    #[error("control_plane.ca_file: {0}")]
    CaFile(String),
    /// The bearer token could not be obtained.
    #[error("no bearer token: {0}")]
    Token(String),
    /// Network or TLS failure.
    #[error("request failed: {0}")]
    Http(String),
    /// A non-success status.
    #[error("HTTP {status}{hint}")]
    Status {
        /// The status code.
        status: u16,
        /// What it usually means.
        hint: &'static str,
    },
    /// The body is not a list of rows.
    #[error("response refused: {0}")]
    Body(String),
}

/// One control plane.
#[derive(Debug)]
pub struct ControlPlaneSource {
    client: reqwest::Client,
    url: String,
    /// `url` as logged: no user info or query.
    shown_url: String,
    /// `control_plane.logical_path_prefixes` (empty: any path).
    prefixes: Vec<String>,
    credential: Credential,
    etag: Option<String>,
}

impl ControlPlaneSource {
    /// A source for `config` authenticating with `credential`.
    pub fn new(config: &ControlPlaneConfig, credential: Credential) -> Result<Self, PollError> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| PollError::CaFile(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| PollError::CaFile(e.to_string()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| PollError::CaFile(e.to_string()))?;
        let url = rows_url(&config.url)?;
        Ok(Self {
            client,
            shown_url: crate::redact::display_url(&url),
            url,
            prefixes: config.logical_path_prefixes.clone(),
            credential,
            etag: None,
        })
    }

    /// One poll: `Ok(None)` when unchanged since the last one.
    pub async fn poll(&mut self) -> Result<Option<Vec<EnvelopeRow>>, PollError> {
        let token = self.token().await?;
        let mut request = self.client.get(&self.url).header(
            reqwest::header::AUTHORIZATION,
            bearer(&token).map_err(PollError::Token)?,
        );
        drop(token);
        if let Some(etag) = &self.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| PollError::Http(without_url(&e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(PollError::Status {
                status: status.as_u16(),
                hint: hint(status.as_u16()),
            });
        }
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| PollError::Http(without_url(&e)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(PollError::Body(format!(
                    "larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let rows = parse_document(&body, Format::Json).map_err(PollError::Body)?;
        self.etag = etag;
        Ok(Some(rows))
    }

    async fn token(&self) -> Result<SecretBytes, PollError> {
        match &self.credential {
            Credential::TokenFile(path) => {
                let mut text = std::fs::read(path)
                    .map_err(|e| PollError::Token(format!("{}: {e}", path.display())))?;
                let token = SecretBytes::copy_from(text.trim_ascii());
                text.zeroize();
                if token.is_empty() {
                    return Err(PollError::Token(format!("{} is empty", path.display())));
                }
                Ok(token)
            }
            Credential::JwtSvid(fetcher, audience) => fetcher
                .fetch(audience)
                .await
                .map_err(|e| PollError::Token(e.to_string())),
        }
    }
}

/// `Bearer <token>` as a sensitive header value (kept out of reqwest's Debug output).
fn bearer(token: &SecretBytes) -> Result<reqwest::header::HeaderValue, String> {
    let mut bytes = Vec::with_capacity(7 + token.len());
    bytes.extend_from_slice(b"Bearer ");
    bytes.extend_from_slice(token.expose());
    let value = reqwest::header::HeaderValue::from_bytes(&bytes);
    bytes.zeroize();
    let mut value =
        value.map_err(|_| "the token holds characters not allowed in a header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

impl ControlPlaneSource {
    /// The rows whose logical path starts with one of `control_plane.logical_path_prefixes`
    /// (all of them when none are set); each other row is refused with an ERROR.
    fn within_prefixes(&self, rows: Vec<EnvelopeRow>) -> Vec<EnvelopeRow> {
        if self.prefixes.is_empty() {
            return rows;
        }
        rows.into_iter()
            .filter(|row| {
                let inside = self
                    .prefixes
                    .iter()
                    .any(|p| row.logical_path.starts_with(p.as_str()));
                if !inside {
                    tracing::error!(logical_path = %row.logical_path, source = SOURCE, allowed = ?self.prefixes, "envelope refused; not served: outside control_plane.logical_path_prefixes");
                }
                inside
            })
            .collect()
    }
}

/// `{base}/v1/crypto/envelope-secrets`, the base URL's own query (e.g. a signature) kept.
fn rows_url(base: &str) -> Result<String, PollError> {
    let mut url = reqwest::Url::parse(base).map_err(|_| PollError::Url)?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(PollError::Url);
    }
    let path = format!("{}{PATH}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url.into())
}

/// What went wrong, from the innermost cause, without the URL (which may carry a query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => " (the bearer token was refused)",
        403 => {
            " (is the dual_custody_intercept feature flag on, and may this identity read envelopes?)"
        }
        404 => " (is control_plane.url the control plane's base URL?)",
        _ => "",
    }
}

/// Polls until `shutdown`, publishing rows when they change.
pub async fn run(
    mut source: ControlPlaneSource,
    interval: Duration,
    sink: RowSink,
    shutdown: CancellationToken,
) {
    let mut failing: Option<String> = None;
    loop {
        match source.poll().await {
            Ok(rows) => {
                if failing.take().is_some() {
                    tracing::info!(url = %source.shown_url, "control plane reachable again");
                }
                if let Some(rows) = rows {
                    tracing::info!(url = %source.shown_url, rows = rows.len(), "envelope rows fetched from the control plane");
                    sink.publish(SOURCE, source.within_prefixes(rows));
                }
            }
            Err(e) => {
                let message = e.to_string();
                if failing.as_deref() != Some(message.as_str()) {
                    tracing::warn!(url = %source.shown_url, error = %message, "control plane poll failed; keeping the last good rows");
                    failing = Some(message);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
#[path = "control_plane_tests.rs"]
mod tests;
