//! IMDSv2 emulation (`[aws] imds_listen`) for SDKs and tools that do not read the
//! container-credentials variables: they find it through
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` and see an EC2 instance profile holding the
//! caller's role.
//!
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1–21600) → a
//!   session token bound to the calling process ([`super::imds_tokens`]);
//! - `GET /latest/meta-data/iam/security-credentials/` → the role's name, and
//!   `GET …/security-credentials/<role>` → the instance-profile JSON (the same under
//!   `security-credentials-extended/`, which newer SDKs try first);
//! - GETs need `X-aws-ec2-metadata-token` from the same process (IMDSv1 is refused, 401);
//!   anything carrying `X-Forwarded-For` or `Forwarded` is refused (403), as is a caller
//!   `[[callers]]` does not grant `aws.credentials_resource_name` (403, audited);
//! - the listening socket sends with IP TTL / hop limit 1 (EC2's default), so no reply
//!   survives a router; the accepted sockets inherit it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::caller_credentials::{Authorized, CallerCredentials};
use super::delivery::instance_profile_json;
use super::imds_tokens::{MAX_TOKEN_LEN, TokenBinding, TokenRefusal, TokenTable};
use super::role_credentials::RoleCredentials;
use crate::authz::{Caller, tcp_peer};
use crate::http_serve::{SecretBody, forwarded};

/// The endpoint's name in audit events.
const ENDPOINT: &str = "imds";
const TOKEN_PATH: &str = "/latest/api/token";
/// The instance-profile listings: the original, and the one with `AccountId` that newer
/// SDKs try first (falling back on 404). Both answer alike here.
const CREDENTIAL_PATHS: [&str; 2] = [
    "/latest/meta-data/iam/security-credentials",
    "/latest/meta-data/iam/security-credentials-extended",
];
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The longest session EC2 grants (6 h).
const MAX_TTL_SECONDS: u64 = 21_600;

/// What the emulation serves, and to whom.
#[derive(Debug)]
pub struct Imds {
    credentials: CallerCredentials,
    tokens: Mutex<TokenTable>,
}

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Token,
    RoleList,
    Role(&'a str),
    Unknown,
}

impl Imds {
    /// Serves `credentials` to the callers they authorize.
    pub fn new(credentials: CallerCredentials) -> Self {
        Self {
            credentials,
            tokens: Mutex::new(TokenTable::default()),
        }
    }

    async fn respond(
        &self,
        request: &Request<Incoming>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let headers = request.headers();
        if forwarded(headers) {
            return text(
                StatusCode::FORBIDDEN,
                "requests through a proxy are refused",
            );
        }
        if carries_body(headers) {
            return text(StatusCode::BAD_REQUEST, "request bodies are not accepted");
        }
        match (route(request.uri().path()), request.method()) {
            (Route::Unknown, _) => text(StatusCode::NOT_FOUND, "not found"),
            (Route::Token, &Method::PUT) => self.put_token(headers, peer, local).await,
            (Route::Token, _) => method_not_allowed("PUT"),
            (route, &Method::GET) => self.get(&route, headers, peer, local).await,
            (_, _) => method_not_allowed("GET"),
        }
    }

    /// `PUT /latest/api/token`: a new session token for the calling process.
    async fn put_token(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let Some(ttl) = token_ttl(headers) else {
            return text(
                StatusCode::BAD_REQUEST,
                "X-aws-ec2-metadata-token-ttl-seconds must be one whole number of seconds from 1 to 21600",
            );
        };
        let caller = match self.credentials.authorize(peer, local, ENDPOINT).await {
            Ok(authorized) => authorized.caller,
            Err(refusal) => return refused(&refusal),
        };
        let issued = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .issue(TokenBinding::of(&caller), ttl, Instant::now());
        match issued {
            Ok(token) => {
                let mut response = Response::new(SecretBody::full(token));
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                headers.insert(TTL_HEADER, HeaderValue::from(ttl.as_secs()));
                response
            }
            Err(e) => {
                tracing::error!(error = %e, "no IMDS session token minted");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no session token available",
                )
            }
        }
    }

    /// A GET under the instance-profile listing, for a caller holding a token it minted.
    async fn get(
        &self,
        route: &Route<'_>,
        headers: &HeaderMap,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let Some(presented) = single_header(headers, TOKEN_HEADER) else {
            return text(
                StatusCode::UNAUTHORIZED,
                "a session token from PUT /latest/api/token is required (IMDSv2)",
            );
        };
        let Authorized { caller, role } =
            match self.credentials.authorize(peer, local, ENDPOINT).await {
                Ok(authorized) => authorized,
                Err(refusal) => return refused(&refusal),
            };
        if let Err(refusal) = self.check_token(presented, &caller) {
            return text(StatusCode::UNAUTHORIZED, &refusal.to_string());
        }
        match route {
            Route::RoleList => text(StatusCode::OK, role.role_name()),
            Route::Role(name) if *name == role.role_name() => {
                role.wait_first().await;
                credentials_response(&role)
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// Whether `presented` is a live token minted for `caller`; a token of another
    /// process is an audit event.
    fn check_token(&self, presented: &[u8], caller: &Caller) -> Result<(), TokenRefusal> {
        let checked = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(presented, &TokenBinding::of(caller), Instant::now());
        if let Err(reason @ TokenRefusal::OtherCaller) = checked {
            tracing::warn!(target: crate::audit::TARGET, caller = %caller.describe(), resource = %self.credentials.resource_name(), decision = "deny", reason = %reason, "{ENDPOINT}");
        }
        checked
    }
}

/// Serves `imds` on `listener` until `shutdown` (see [`crate::http_serve::serve`]).
/// Errors only if the listener has no local address.
pub async fn serve(
    listener: TcpListener,
    imds: Imds,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, "AWS IMDSv2 emulation listening");
    let imds = Arc::new(imds);
    let handler = move |request: Request<Incoming>, peer: SocketAddr| {
        let imds = imds.clone();
        async move { imds.respond(&request, peer, local).await }
    };
    crate::http_serve::serve(listener, ENDPOINT, handler, shutdown).await
}

/// Makes `listener` send with IP TTL (IPv4) or hop limit (IPv6) 1, as EC2's IMDS does
/// by default: a reply to anything beyond the first router is dropped. Sockets it
/// accepts inherit the setting.
pub fn limit_hops(listener: &std::net::TcpListener) -> std::io::Result<()> {
    match listener.local_addr()? {
        SocketAddr::V4(_) => listener.set_ttl(1),
        SocketAddr::V6(_) => {
            rustix::net::sockopt::set_ipv6_unicast_hops(listener, Some(1)).map_err(Into::into)
        }
    }
}

/// The role's credentials as instance-profile JSON, or 503 when none are valid now.
fn credentials_response(role: &RoleCredentials) -> Response<Full<Bytes>> {
    match role.render_valid(instance_profile_json) {
        Some(Ok(json)) => SecretBody::json(json),
        Some(Err(e)) => {
            tracing::error!(error = %e, "AWS credentials not served over IMDS");
            text(StatusCode::SERVICE_UNAVAILABLE, "no valid AWS credentials")
        }
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid AWS credentials yet; the exchange is retrying",
        ),
    }
}

/// What `path` names; a trailing `/` on the listing is optional.
fn route(path: &str) -> Route<'_> {
    if path == TOKEN_PATH {
        return Route::Token;
    }
    CREDENTIAL_PATHS
        .iter()
        .find_map(|prefix| {
            let rest = path.strip_prefix(prefix)?;
            match rest.strip_prefix('/') {
                None if rest.is_empty() => Some(Route::RoleList),
                Some("") => Some(Route::RoleList),
                Some(name) => Some(Route::Role(name)),
                None => None,
            }
        })
        .unwrap_or(Route::Unknown)
}

/// The requested token lifetime: exactly one header of 1–21600 whole seconds.
fn token_ttl(headers: &HeaderMap) -> Option<Duration> {
    let value = single_header(headers, TTL_HEADER)?;
    if value.is_empty() || value.len() > 5 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seconds: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (1..=MAX_TTL_SECONDS)
        .contains(&seconds)
        .then(|| Duration::from_secs(seconds))
}

/// The one value of header `name` (at most [`MAX_TOKEN_LEN`] bytes); `None` when it is
/// missing, repeated or longer.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if value.len() <= MAX_TOKEN_LEN => Some(value.as_bytes()),
        _ => None,
    }
}

/// Whether the request declares a body (IMDS requests have none; it is never read).
fn carries_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// A plain-text answer, as IMDS gives (the SDKs read only the status of an error).
/// A refused caller: 404 for one no role maps (as IMDS answers without an instance
/// profile), 403 otherwise.
fn refused(refusal: &tcp_peer::Refusal) -> Response<Full<Bytes>> {
    let status = match refusal {
        tcp_peer::Refusal::NoRole(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::FORBIDDEN,
    };
    text(status, &refusal.to_string())
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
#[path = "imds_tests.rs"]
mod tests;
