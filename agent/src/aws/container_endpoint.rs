//! The AWS container-credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` with
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`): unmodified SDKs `GET` it on loopback and
//! receive `{"AccessKeyId","SecretAccessKey","Token","Expiration"}` from the exchange's
//! watch channel. It never calls STS itself and never answers success without valid
//! credentials. Besides the token, the caller is authorized like an SDS caller: the
//! process behind the loopback connection (uid, gid, executable — see
//! [`crate::authz::tcp_peer`]) must be granted `aws.credentials_resource_name` by
//! `[[callers]]`.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::caller_credentials::CallerCredentials;
use super::delivery::container_json;
use super::role_credentials::RoleCredentials;
use crate::http_serve::{SecretBody, forwarded};

/// The endpoint's name in audit events.
const ENDPOINT: &str = "container-credentials";

/// Largest token file read; anything longer is a misconfiguration, not a token.
const MAX_TOKEN_BYTES: u64 = 8 * 1024;

/// What the endpoint serves, and to whom.
#[derive(Debug)]
pub struct Endpoint {
    /// The file holding the token SDKs must present.
    pub token_file: PathBuf,
    /// The credentials each caller gets, and who may fetch them.
    pub credentials: CallerCredentials,
}

/// Serves `endpoint` on `listener` until `shutdown`: stops accepting, lets requests in
/// flight finish, closes idle keep-alive connections, then returns. Errors only if the
/// listener has no local address; failed accepts are logged and retried.
pub async fn serve(
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, token_file = %endpoint.token_file.display(), "AWS container-credentials endpoint listening");
    if ends_with_newline(&endpoint.token_file).await {
        tracing::warn!(
            token_file = %endpoint.token_file.display(),
            "the container-credentials token file ends with a newline: botocore (boto3, the AWS CLI) sends the file as it is and refuses it (\"Auth token value is not a legal header value\"); write it without one, e.g. with printf '%s'"
        );
    }
    let endpoint = Arc::new(endpoint);
    let handler = move |request: Request<Incoming>, peer: SocketAddr| {
        let endpoint = endpoint.clone();
        async move { endpoint.respond(&request, peer, local).await }
    };
    crate::http_serve::serve(listener, ENDPOINT, handler, shutdown).await
}

impl Endpoint {
    async fn respond(
        &self,
        request: &Request<Incoming>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let headers = request.headers();
        if forwarded(headers) {
            return error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "requests through a proxy are refused",
            );
        }
        if request.method() != Method::GET {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "only GET is supported",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        let expected = match read_token(&self.token_file).await {
            Ok(token) => token,
            Err(reason) => {
                tracing::error!(token_file = %self.token_file.display(), reason = %reason, "container-credentials token file unusable; refusing every request");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "the endpoint's authorization token is not configured correctly",
                );
            }
        };
        let mut presented = headers.get_all(header::AUTHORIZATION).iter();
        let authorized = match (presented.next(), presented.next()) {
            (Some(value), None) => tokens_match(value.as_bytes(), &expected),
            _ => false,
        };
        if !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "missing or wrong Authorization token",
            );
        }
        match self.credentials.authorize(peer, local, ENDPOINT).await {
            Ok(authorized) => credentials_response(&authorized.role).await,
            Err(refusal) => error(StatusCode::FORBIDDEN, "Forbidden", &refusal.to_string()),
        }
    }
}

/// The role's current credentials as JSON (waiting briefly for a lease just started), or
/// 503 when none are valid right now.
async fn credentials_response(role: &RoleCredentials) -> Response<Full<Bytes>> {
    role.wait_first().await;
    match role.render_valid(|c, _| container_json(c)) {
        Some(Ok(json)) => SecretBody::json(json),
        Some(Err(e)) => {
            tracing::error!(error = %e, "AWS credentials not served over the container endpoint");
            unavailable()
        }
        None => unavailable(),
    }
}

fn unavailable() -> Response<Full<Bytes>> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "CredentialsUnavailable",
        "no valid AWS credentials yet; the exchange is retrying",
    )
}

/// `{"code","message"}`, the error shape the SDKs read.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The token in `path`, minus one trailing newline. The reason for a failure names the
/// problem, never the content.
async fn read_token(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    // Sized up front so reading never reallocates and leaves a copy behind.
    let mut token = Zeroizing::new(Vec::with_capacity(MAX_TOKEN_BYTES as usize + 1));
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut token)
        .await
        .map_err(|e| e.to_string())?;
    if token.len() as u64 > MAX_TOKEN_BYTES {
        return Err(format!("longer than {MAX_TOKEN_BYTES} bytes"));
    }
    let newline = if token.ends_with(b"\r\n") {
        2
    } else {
        usize::from(token.ends_with(b"\n"))
    };
    let len = token.len() - newline;
    // Zeroizing<Vec> wipes the whole capacity on drop, the cut-off bytes included.
    token.truncate(len);
    if token.is_empty() {
        return Err("empty".to_owned());
    }
    Ok(token)
}

/// Whether the file at `path` ends with `\n` (an unreadable file is reported per request by
/// [`read_token`]). Reads only the last byte, never the token.
async fn ends_with_newline(path: &Path) -> bool {
    use tokio::io::AsyncSeekExt as _;
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return false;
    };
    let mut last = [0u8; 1];
    file.seek(std::io::SeekFrom::End(-1)).await.is_ok()
        && file.read_exact(&mut last).await.is_ok()
        && last[0] == b'\n'
}

/// Compares SHA-256 digests in constant time, so neither the content nor the length of
/// the expected token shows in the timing.
fn tokens_match(presented: &[u8], expected: &[u8]) -> bool {
    let a = ring::digest::digest(&ring::digest::SHA256, presented);
    let b = ring::digest::digest(&ring::digest::SHA256, expected);
    let difference = a
        .as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
#[path = "container_endpoint_tests.rs"]
mod tests;
