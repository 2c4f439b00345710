//! The Envoy mTLS pair seen from outside: which certificates each Envoy holds, and whether
//! a request through the pair went over a full mTLS handshake.

use std::time::Duration;

use anyhow::Context as _;
use steeple_e2e::suite::MtlsPair;
use steeple_e2e::{Envoy, http_get};

/// One request or admin call may take this long.
const ATTEMPT: Duration = Duration::from_secs(2);
/// Counters of the client Envoy's cluster towards the server Envoy (harness bootstrap).
const CONNECTIONS: &str = "cluster.upstream.upstream_cx_total";
const HANDSHAKES: &str = "cluster.upstream.ssl.handshake";
const RESUMED: &str = "cluster.upstream.ssl.session_reused";

/// How a request that answered 200 got through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Certificates exchanged and verified on both sides.
    Full,
    /// A TLS session resumed: no certificate was looked at.
    Resumed,
}

/// Puts the server Envoy in health-check-failed state, in which it closes each downstream
/// HTTP/1.1 connection after its response, and checks that each request then opens a new
/// upstream connection. Otherwise the client's pooled connection, made before the suspend,
/// would carry requests on expired certificates (TLS looks at them at handshake only) and
/// "requests succeed again" would prove nothing.
pub async fn one_connection_per_request(pair: &MtlsPair) -> anyhow::Result<()> {
    let response = pair
        .server
        .admin_request("POST", "/healthcheck/fail")
        .await?;
    anyhow::ensure!(response.status == 200, "/healthcheck/fail: {response:?}");
    // The first request may still ride the pooled connection, which it then closes.
    http_get(pair.client_port, "/").await?;
    for _ in 0..2 {
        request(pair).await?;
    }
    anyhow::ensure!(
        pair.client.stat(RESUMED).await?.is_some(),
        "the client Envoy has no {RESUMED} stat"
    );
    Ok(())
}

/// One request through the pair that answered 200 over a new upstream connection, and
/// whether that connection's handshake was full or resumed.
pub async fn request(pair: &MtlsPair) -> anyhow::Result<Handshake> {
    let counters = [CONNECTIONS, HANDSHAKES, RESUMED];
    let before = counts(&pair.client, counters).await?;
    let (status, body) = tokio::time::timeout(ATTEMPT, http_get(pair.client_port, "/"))
        .await
        .context("request through the pair hung")??;
    anyhow::ensure!((status, body.as_str()) == (200, "ok"), "{status}: {body}");
    let after = counts(&pair.client, counters).await?;
    anyhow::ensure!(
        after[0] > before[0],
        "the request reused a pooled connection"
    );
    anyhow::ensure!(
        after[1] > before[1],
        "no TLS handshake counted for the request"
    );
    Ok(if after[2] > before[2] {
        Handshake::Resumed
    } else {
        Handshake::Full
    })
}

async fn counts<const N: usize>(envoy: &Envoy, names: [&str; N]) -> anyhow::Result<[u64; N]> {
    let mut values = [0; N];
    for (value, name) in values.iter_mut().zip(names) {
        *value = envoy.counter(name).await?;
    }
    Ok(values)
}

/// Whether `envoy` holds (`/certs`) a leaf for `id` valid now; errors count as no.
pub async fn holds_valid(envoy: &Envoy, id: &str) -> bool {
    let Ok(Ok(body)) = tokio::time::timeout(ATTEMPT, envoy.admin_get("/certs")).await else {
        return false;
    };
    let Ok(certs) = serde_json::from_str::<serde_json::Value>(&body) else {
        return false;
    };
    let now = time::OffsetDateTime::now_utc();
    let time = |v: &serde_json::Value| {
        let text = v.as_str()?;
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
    };
    let chains = certs["certificates"].as_array().into_iter().flatten();
    let mut leaves = chains.filter_map(|c| c["cert_chain"].as_array()).flatten();
    leaves.any(|cert| {
        let sans = cert["subject_alt_names"].as_array().into_iter().flatten();
        let is_id = sans.into_iter().any(|san| san["uri"] == id);
        let valid = matches!(
            (time(&cert["valid_from"]), time(&cert["expiration_time"])),
            (Some(from), Some(until)) if from <= now && now < until
        );
        is_id && valid
    })
}
