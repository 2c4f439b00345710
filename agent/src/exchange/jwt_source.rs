//! Fresh JWT-SVIDs for exchanges: every exchange fetches a new token from the Workload
//! API (a JWT-SVID lives minutes, an STS session hours; a token is never reused), through
//! the shared [`JwtSvidSource`] trait the Vault keeper takes too.

use steeple_plugin_api::{BoxFuture, ExchangeError, ExchangeErrorKind, JwtSvidSource, SecretBytes};
use steeple_proto::workload::JwtsvidRequest;
use zeroize::Zeroize as _;

use crate::identity::{WorkloadApiClient, request};

/// JWT-SVIDs from the SPIFFE Workload API.
#[derive(Debug, Clone)]
pub struct WorkloadApiJwtFetcher {
    client: WorkloadApiClient,
    spiffe_id: Option<String>,
}

impl WorkloadApiJwtFetcher {
    /// Fetches for `spiffe_id` (default: the Workload API's first identity).
    pub fn new(client: WorkloadApiClient, spiffe_id: Option<String>) -> Self {
        Self { client, spiffe_id }
    }
}

impl JwtSvidSource for WorkloadApiJwtFetcher {
    fn fetch<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<SecretBytes, ExchangeError>> {
        Box::pin(async move {
            let req = JwtsvidRequest {
                audience: vec![audience.to_owned()],
                spiffe_id: self.spiffe_id.clone().unwrap_or_default(),
            };
            let unavailable = |message: String| {
                ExchangeError::new(
                    ExchangeErrorKind::Transient,
                    "WorkloadApiUnavailable",
                    message,
                )
            };
            let response = self
                .client
                .clone()
                .fetch_jwtsvid(request(req))
                .await
                .map_err(|status| unavailable(format!("FetchJWTSVID: {}", status.message())))?;
            let mut svid = response
                .into_inner()
                .svids
                .into_iter()
                .next()
                .ok_or_else(|| unavailable("FetchJWTSVID returned no JWT-SVID".into()))?;
            let token = SecretBytes::copy_from(svid.svid.as_bytes());
            svid.svid.zeroize();
            Ok(token)
        })
    }
}

/// JWT-SVIDs of one SPIFFE ID, for the exchanges of that identity's roles: the agent's
/// own from the Workload API (`self` mode), a local workload's through the Delegated
/// Identity API (a node agent).
pub trait JwtSvidsById: Send + Sync + std::fmt::Debug {
    /// The source of `spiffe_id`'s JWT-SVIDs for one lease, which `retry_now` tells to
    /// try again at once: a source that can be without anyone to fetch for (a node agent
    /// between two of a workload's processes) notifies it when one comes.
    fn for_id(
        &self,
        spiffe_id: &str,
        retry_now: &std::sync::Arc<tokio::sync::Notify>,
    ) -> std::sync::Arc<dyn JwtSvidSource>;
}

impl JwtSvidsById for WorkloadApiClient {
    /// The agent's own identity is always there to fetch for: `retry_now` is not needed.
    fn for_id(
        &self,
        spiffe_id: &str,
        _: &std::sync::Arc<tokio::sync::Notify>,
    ) -> std::sync::Arc<dyn JwtSvidSource> {
        std::sync::Arc::new(WorkloadApiJwtFetcher::new(
            self.clone(),
            Some(spiffe_id.to_owned()),
        ))
    }
}
