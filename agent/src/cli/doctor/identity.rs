//! The Workload API checks: one `FetchX509SVID` answer (every SVID checked as the agent
//! would before serving it), and fresh JWT-SVIDs whose header says how they are signed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use base64::Engine as _;
use steeple_plugin_api::JwtSvidSource;
use steeple_proto::workload::{X509svidRequest, X509svidResponse};
use zeroize::Zeroize as _;

use crate::doctor_check::{CALL_TIMEOUT, Check, Issued, expiry};
use crate::identity::jwt::token_times;
use crate::identity::x509::bundle_sources;
use crate::identity::{WorkloadApiClient, request};
use crate::spiffe_ids::trust_domain_of;
use crate::svid::{split_der_certificates, validate_svid};

/// The check name of the X.509 fetch.
pub const X509_CHECK: &str = "workload_api.x509_svid";

/// `workload_api.x509_svid`: one `FetchX509SVID` answer within [`CALL_TIMEOUT`].
pub async fn x509(client: &WorkloadApiClient, socket: &Path) -> (Check, Option<Issued>) {
    match first_answer(client, socket).await {
        Ok(response) => examine(response, socket),
        Err((detail, fix)) => fail(detail, fix),
    }
}

/// The first answer of the stream, or what went wrong and its fix.
async fn first_answer(
    client: &WorkloadApiClient,
    socket: &Path,
) -> Result<X509svidResponse, (String, String)> {
    let shown = socket.display();
    let mut client = client.clone();
    let first = tokio::time::timeout(CALL_TIMEOUT, async move {
        let mut stream = client
            .fetch_x509svid(request(X509svidRequest {}))
            .await?
            .into_inner();
        stream.message().await
    })
    .await;
    let failed = |detail: String, fix: &str| Err((detail, fix.to_owned()));
    match first {
        Ok(Ok(Some(response))) => Ok(response),
        Err(_) => Err((
            format!("no answer from the Workload API at {shown} within {CALL_TIMEOUT:?}"),
            format!("check the SPIRE agent: spire-agent healthcheck -socketPath {shown}"),
        )),
        Ok(Err(status)) if status.code() == tonic::Code::PermissionDenied => Err((
            format!(
                "the Workload API at {shown} issued no identity: {}",
                status.message()
            ),
            format!(
                "register an entry for this workload, e.g. spire-server entry create -parentID <agent ID> -spiffeID <ID> -selector unix:uid:{}",
                rustix::process::geteuid().as_raw()
            ),
        )),
        Ok(Err(status)) => failed(
            format!(
                "cannot fetch from the Workload API at {shown}: {}",
                status.message()
            ),
            "start the SPIRE agent, or point workload_api.socket (or SPIFFE_ENDPOINT_SOCKET) at its socket",
        ),
        Ok(Ok(None)) => failed(
            format!("the Workload API at {shown} closed the stream without an answer"),
            "check the SPIRE agent's log",
        ),
    }
}

/// Checks every SVID of `response` as the agent would before serving it; the private
/// keys are zeroized once checked.
fn examine(response: X509svidResponse, socket: &Path) -> (Check, Option<Issued>) {
    let mut issued = Issued {
        spiffe_ids: Vec::new(),
        bundles: bundles(&response),
    };
    let now = SystemTime::now();
    let (mut seen, mut refused) = (Vec::new(), Vec::new());
    for mut svid in response.svids {
        let roots = trust_domain_of(&svid.spiffe_id)
            .and_then(|td| issued.bundles.get(td.as_str()))
            .cloned()
            .unwrap_or_default();
        let id = &svid.spiffe_id;
        match validate_svid(id, &svid.x509_svid, &svid.x509_svid_key, &roots, now) {
            Ok(cert) => {
                seen.push(format!("{id} (expires {})", expiry(cert.not_after)));
                issued.spiffe_ids.push(cert.spiffe_id.clone());
            }
            Err(e) => refused.push(format!("{id}: {e}")),
        }
        svid.x509_svid_key.zeroize();
    }
    if !refused.is_empty() {
        return fail(
            format!("X.509-SVID(s) Steeple would refuse: {}", refused.join("; ")),
            "check the SPIRE server's CA and the workload's entries (the SVID must chain to its trust domain's bundle)",
        );
    }
    if seen.is_empty() {
        return fail(
            format!(
                "the Workload API at {} answered with no X.509-SVID",
                socket.display()
            ),
            "register an entry for this workload with the SPIRE server",
        );
    }
    let domains: Vec<&str> = issued.bundles.keys().map(String::as_str).collect();
    let detail = format!("{}; bundles of {}", seen.join(", "), domains.join(", "));
    (Check::ok(X509_CHECK, detail), Some(issued))
}

/// Trust domain name → roots, for every bundle (own and federated) that parses.
fn bundles(response: &X509svidResponse) -> BTreeMap<String, Vec<Vec<u8>>> {
    bundle_sources(response)
        .filter_map(|(id, der)| {
            let td = trust_domain_of(id)?;
            Some((td.to_string(), split_der_certificates(der).ok()?))
        })
        .collect()
}

fn fail(detail: String, fix: impl Into<String>) -> (Check, Option<Issued>) {
    (Check::fail(X509_CHECK, detail, fix), None)
}

/// `name`: a fresh JWT-SVID for `audience` within [`CALL_TIMEOUT`]; with `sts`, signed
/// with RSA (STS refuses ES256). Returns whether an upstream can be tried with it. Only
/// the header and `exp` are read; the token is dropped (zeroized) at once.
pub async fn jwt_svid(
    name: &str,
    jwt: &dyn JwtSvidSource,
    audience: &str,
    sts: bool,
) -> (Check, bool) {
    let token = match tokio::time::timeout(CALL_TIMEOUT, jwt.fetch(audience)).await {
        Err(_) => {
            let detail = format!("no JWT-SVID for audience {audience} within {CALL_TIMEOUT:?}");
            return (
                Check::fail(name, detail, "check the SPIRE agent's health and log"),
                false,
            );
        }
        Ok(Err(e)) => {
            let detail = format!("no JWT-SVID for audience {audience}: {}", e.message);
            return (
                Check::fail(
                    name,
                    detail,
                    "check the workload's SPIRE entry and the SPIRE agent's log",
                ),
                false,
            );
        }
        Ok(Ok(token)) => token,
    };
    let text = std::str::from_utf8(token.expose()).unwrap_or_default();
    let Some(alg) = header_alg(text) else {
        let detail = format!("the JWT-SVID for audience {audience} has no readable header");
        return (
            Check::fail(name, detail, "check the SPIRE server's JWT signing key"),
            false,
        );
    };
    let expires = token_times(text, SystemTime::now())
        .map(|t| format!(", expires {}", expiry(t.expires_at)))
        .unwrap_or_default();
    if sts && !is_rsa(&alg) {
        let detail = format!(
            "the JWT-SVID for audience {audience} is signed with {alg}; STS accepts only RS256/RS384/RS512/PS*"
        );
        let fix = "set jwt_key_type = \"rsa-2048\" in the SPIRE server's config (server block) and let the JWT key rotate";
        return (Check::fail(name, detail, fix), false);
    }
    (
        Check::ok(
            name,
            format!("JWT-SVID for audience {audience}: {alg}{expires}"),
        ),
        true,
    )
}

/// The `alg` of a compact JWS's header, without looking at anything else.
pub fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

/// Whether STS accepts a token signed with `alg` (RSA PKCS#1 v1.5 or PSS).
pub fn is_rsa(alg: &str) -> bool {
    matches!(
        alg,
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512"
    )
}
