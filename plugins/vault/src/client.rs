//! The one HTTP client every Vault call goes through: rustls with the system roots plus an
//! optional CA file, a per-request timeout, `X-Vault-Namespace` and `X-Vault-Token`
//! headers, and Vault's `{"errors": [...]}` answers turned into [`VaultError`].
//!
//! Why not `vaultrs` (0.8, read at the time of writing): it sets the namespace per client,
//! not per request (rows name their own namespace); it takes no custom rustls verifier (our
//! trust follows the live SPIFFE bundle, [`LiveRoots`], with a pinned SPIFFE ID); its token
//! is a plain `String` (ours zeroizes and redacts); and it pulls reqwest 0.13 beside our
//! 0.12. The Vault API surface used here is six calls (login, renew-self, lookup-self,
//! revoke-self, KV read, transit decrypt/encrypt), so a thin client costs less than those
//! gaps.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use steeple_plugin_api::SecretBytes;
use zeroize::Zeroizing;

use crate::LiveRoots;

/// The default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer body read from Vault; a bigger one is refused unread.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// How to reach Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultClientConfig {
    /// Vault's address, scheme included, e.g. `https://vault.example.org:8200`.
    /// Default `https://127.0.0.1:8200`.
    pub addr: String,
    /// A PEM file of CA certificates trusted for Vault's certificate, on top of the
    /// system roots. Default none.
    pub ca_file: Option<PathBuf>,
    /// The namespace (`X-Vault-Namespace`) of every call that names none itself.
    /// Default none (the root namespace).
    pub namespace: Option<String>,
    /// Per-request timeout, connect to last byte. Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
}

impl Default for VaultClientConfig {
    fn default() -> Self {
        Self {
            addr: "https://127.0.0.1:8200".to_owned(),
            ca_file: None,
            namespace: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why a [`VaultClient`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientBuildError {
    /// `addr` is not an `http://` or `https://` URL.
    #[error("vault addr {0:?} is not an http(s) URL like https://vault.example.org:8200")]
    Addr(String),
    /// The CA file is unreadable or holds no PEM certificate.
    #[error("vault ca_file {}: {problem}", path.display())]
    CaFile {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The HTTP client itself could not be built (TLS backend setup).
    #[error("building the Vault HTTP client: {0}")]
    Client(String),
}

/// Why a Vault call failed. Messages name the API path and carry Vault's own error
/// strings, never a token or secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// Vault could not be reached: connection refused, TLS failure, timeout.
    #[error("vault unreachable at {addr}: {message}")]
    Unreachable {
        /// The configured address.
        addr: String,
        /// The transport error chain.
        message: String,
    },
    /// Vault answered with an error status.
    #[error("vault answered {status} on {path}: {}", describe_errors(errors))]
    Api {
        /// The API path, after `/v1/`.
        path: String,
        /// The HTTP status.
        status: u16,
        /// Vault's `errors` (the body's first bytes when it was not Vault JSON).
        errors: Vec<String>,
    },
    /// A success answer that did not hold what the API promises.
    #[error("unexpected answer from vault on {path}: {problem}")]
    Malformed {
        /// The API path, after `/v1/`.
        path: String,
        /// What was missing or wrong.
        problem: String,
    },
    /// The request could not be formed (a namespace or token that is not a valid header).
    #[error("invalid request to vault on {path}: {problem}")]
    Request {
        /// The API path, after `/v1/`.
        path: String,
        /// What was wrong.
        problem: String,
    },
}

impl VaultError {
    /// Whether trying again later may help: unreachable, 5xx (incl. sealed), 429, 412.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Api { status, .. } => *status >= 500 || matches!(status, 412 | 429),
            Self::Malformed { .. } | Self::Request { .. } => false,
        }
    }

    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Vault's error strings joined (empty for non-API errors).
    pub fn vault_errors(&self) -> String {
        match self {
            Self::Api { errors, .. } => describe_errors(errors),
            _ => String::new(),
        }
    }
}

fn describe_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        "(no error text)".to_owned()
    } else {
        errors.join("; ")
    }
}

/// A Vault HTTP client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    base: String,
    namespace: Option<String>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("addr", &self.base)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl VaultClientConfig {
    /// Builds the client: rustls, system roots plus `ca_file`, no redirects (a redirect
    /// would carry `X-Vault-Token` to wherever it points).
    pub fn build(&self) -> Result<VaultClient, ClientBuildError> {
        let mut builder = self.builder()?;
        if let Some(path) = &self.ca_file {
            for cert in read_ca_file(path)? {
                let cert = reqwest::Certificate::from_der(&cert)
                    .map_err(|e| ca_file_error(path, error_chain(&e)))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        self.finish(builder)
    }

    /// Builds the client trusting only live roots — no system roots: the returned
    /// [`LiveRoots`] starts with `ca_file` (if any) and takes the roots of `origin` (e.g.
    /// `the SPIFFE bundle of example.org`, named in handshake errors) through
    /// [`LiveRoots::replace`] whenever they change. Until then, with no `ca_file`, every
    /// call fails as unreachable, naming `origin` as not received yet.
    pub fn build_with_live_roots(
        &self,
        origin: &str,
        spiffe_id: Option<&str>,
    ) -> Result<(VaultClient, LiveRoots), ClientBuildError> {
        let fixed = match &self.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let roots = LiveRoots::new(origin, fixed, spiffe_id.map(str::to_owned));
        let tls = roots
            .client_config()
            .map_err(|e| ClientBuildError::Client(e.to_string()))?;
        let client = self.finish(self.builder()?.use_preconfigured_tls(tls))?;
        Ok((client, roots))
    }

    fn builder(&self) -> Result<reqwest::ClientBuilder, ClientBuildError> {
        let url = reqwest::Url::parse(self.addr.trim_end_matches('/'))
            .map_err(|_| ClientBuildError::Addr(self.addr.clone()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ClientBuildError::Addr(self.addr.clone()));
        }
        Ok(reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none()))
    }

    fn finish(&self, builder: reqwest::ClientBuilder) -> Result<VaultClient, ClientBuildError> {
        let http = builder
            .build()
            .map_err(|e| ClientBuildError::Client(error_chain(&e)))?;
        Ok(VaultClient {
            http,
            base: self.addr.trim_end_matches('/').to_owned(),
            namespace: self.namespace.clone().filter(|n| !n.is_empty()),
        })
    }
}

fn ca_file_error(path: &Path, problem: String) -> ClientBuildError {
    ClientBuildError::CaFile {
        path: path.to_path_buf(),
        problem,
    }
}

/// The certificates of a PEM CA file, as DER.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientBuildError> {
    let pem = std::fs::read(path).map_err(|e| ca_file_error(path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_file_error(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(ca_file_error(path, "holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// One API call: `method /v1/<path>`.
pub(crate) struct Call<'a> {
    /// GET, POST, …
    pub method: reqwest::Method,
    /// After `/v1/`, already percent-encoded, query included.
    pub path: &'a str,
    /// Overrides the client's default namespace.
    pub namespace: Option<&'a str>,
    /// `X-Vault-Token`.
    pub token: Option<&'a SecretBytes>,
    /// A JSON body; zeroized once sent, as it may hold a JWT or plaintext.
    pub body: Option<Zeroizing<Vec<u8>>>,
}

/// A success answer (2xx). The body may hold secrets and zeroizes on drop.
pub(crate) struct Answer {
    /// The body.
    pub body: Zeroizing<Vec<u8>>,
}

impl VaultClient {
    /// The configured address, without a trailing slash.
    pub fn addr(&self) -> &str {
        &self.base
    }

    /// The default namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Sends `call`; a non-2xx answer becomes [`VaultError::Api`].
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Answer, VaultError> {
        let path = call.path;
        let request_error = |problem: &str| VaultError::Request {
            path: strip_query(path).to_owned(),
            problem: problem.to_owned(),
        };
        let url = self
            .api_url(path)
            .map_err(|problem| request_error(&problem))?;
        let mut request = self
            .http
            .request(call.method, url)
            .header("X-Vault-Request", "true");
        let namespace = call.namespace.filter(|n| !n.is_empty());
        if let Some(namespace) = namespace.or(self.namespace.as_deref()) {
            let value = HeaderValue::from_str(namespace)
                .map_err(|_| request_error("namespace is not a valid header value"))?;
            request = request.header("X-Vault-Namespace", value);
        }
        if let Some(token) = call.token {
            let mut value = HeaderValue::from_bytes(token.expose())
                .map_err(|_| request_error("token is not a valid header value"))?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(body) = call.body {
            // reqwest keeps its own copy; ours is zeroized when `body` drops here.
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        let body = self.read_body(response).await?;
        if (200..300).contains(&status) {
            Ok(Answer { body })
        } else {
            Err(VaultError::Api {
                path: strip_query(path).to_owned(),
                status,
                errors: parse_errors(&body),
            })
        }
    }

    /// `<addr>/v1/<path>` as a URL, refused unless it stays under `/v1/` exactly as
    /// written: a `.` or `..` segment (which URL parsing resolves, possibly out of `/v1/`)
    /// or anything else the parser rewrites never reaches the wire with a token.
    fn api_url(&self, path: &str) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(&format!("{}/v1/{path}", self.base))
            .map_err(|_| "the path does not form a valid URL".to_owned())?;
        let base = reqwest::Url::parse(&self.base)
            .map_err(|_| "the Vault address is not a valid URL".to_owned())?;
        let expected = format!(
            "{}/v1/{}",
            base.path().trim_end_matches('/'),
            strip_query(path)
        );
        if url.path() != expected {
            return Err("the path leaves /v1/ or is not in normal form".to_owned());
        }
        Ok(url)
    }

    async fn read_body(
        &self,
        mut response: reqwest::Response,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let mut body = Zeroizing::new(Vec::new());
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(VaultError::Unreachable {
                    addr: self.base.clone(),
                    message: format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn unreachable(&self, e: &reqwest::Error) -> VaultError {
        VaultError::Unreachable {
            addr: self.base.clone(),
            message: error_chain(e),
        }
    }
}

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// Vault's `{"errors": [...]}`; anything else is shown by its first 200 characters (an
/// error page of a proxy in front of Vault).
pub(crate) fn parse_errors(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<String>,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(body) {
        return parsed.errors;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        Vec::new()
    } else {
        vec![text.chars().take(200).collect()]
    }
}

/// `e` and its sources joined with `: ` (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Percent-encodes each `/`-separated segment of `path` (RFC 3986 unreserved characters
/// stay as they are); Vault decodes them again.
pub(crate) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// Serializes a request body straight into a zeroizing buffer.
pub(crate) fn json_body<T: serde::Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(Vec::new());
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    if serde_json::to_writer(&mut *body, value).is_err() {
        body.clear();
    }
    body
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
