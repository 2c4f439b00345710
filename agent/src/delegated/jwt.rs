//! A workload's own JWT-SVIDs in delegated mode: `jwt-svid:<audience>` is fetched for the
//! caller (`FetchJWTSVIDs{audience, pid}`) the first time one of its streams asks, and
//! kept fresh by a [`lease`] until the workload is no longer followed.

use std::sync::Arc;
use std::time::Duration;

use spire_api::pb::spire::api::agent::delegatedidentity::v1::FetchJwtsviDsRequest;
use steeple_plugin_api::lease::{self, LeaseSettings, Obtained, Upstream};
use steeple_plugin_api::{BoxFuture, ExchangeError, ExchangeErrorKind, SecretBytes};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

use super::DelegatedClient;
use crate::authz::Caller;
use crate::identity::jwt::{REFRESH_WINDOW, take_token};
use crate::store::{Secret, SecretStore, Source};

/// How long one FetchJWTSVIDs may take before it counts as failed (and is retried).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One (workload, audience) JWT-SVID, kept in the workload's store.
pub struct DelegatedJwt {
    /// The Delegated Identity API.
    pub client: DelegatedClient,
    /// The workload's process, as it connected (SPIRE attests its pid on every fetch).
    pub caller: Arc<Caller>,
    /// Its pid as Steeple sees it.
    pub pid: i32,
    /// The workload's own store.
    pub store: Arc<SecretStore>,
    /// The audience asked for.
    pub audience: String,
    /// The name it is served under (`jwt-svid:<audience>`).
    pub name: String,
    /// `workload_api.default_svid_hint`: which JWT-SVID when several entries match.
    pub default_hint: Option<String>,
}

impl std::fmt::Debug for DelegatedJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedJwt")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Upstream for DelegatedJwt {
    type Credential = SecretBytes;

    fn obtain(&self) -> BoxFuture<'_, Result<Obtained<SecretBytes>, ExchangeError>> {
        Box::pin(async move {
            let request = FetchJwtsviDsRequest {
                audience: vec![self.audience.clone()],
                selectors: Vec::new(),
                pid: self.pid,
            };
            let mut client = self.client.clone();
            let response = tokio::time::timeout(FETCH_TIMEOUT, client.fetch_jwtsvi_ds(request))
                .await
                .map_err(|_| fetch_error(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())))?
                .map_err(|status| fetch_error(super::explain(&status)))?
                .into_inner();
            if !self.caller.still_running() {
                // Attested after the process exited: the pid may be another's.
                return Err(ExchangeError::new(
                    ExchangeErrorKind::Fatal,
                    "FetchJWTSVIDs",
                    "the workload's process exited".to_owned(),
                ));
            }
            let mut svids = response.svids;
            let at = self
                .default_hint
                .as_deref()
                .and_then(|h| svids.iter().position(|s| s.hint == h))
                .unwrap_or(0);
            if at >= svids.len() {
                return Err(fetch_error(
                    "no registration entry matches this workload".into(),
                ));
            }
            let mut svid = svids.swap_remove(at);
            for other in &mut svids {
                other.token.zeroize();
            }
            take_token(&mut svid.token).map_err(|e| fetch_error(format!("JWT-SVID refused: {e}")))
        })
    }

    fn publish(&self, token: Option<SecretBytes>) {
        let source = Source::JwtSvid(self.name.clone());
        let entries = token.map(|t| (self.name.clone(), Secret::Generic(t)));
        self.store
            .sync_source(&source, entries.into_iter().collect());
    }
}

/// A failed fetch: worth retrying (SPIRE agent restarting, the entry not synced yet).
fn fetch_error(message: String) -> ExchangeError {
    ExchangeError::new(ExchangeErrorKind::Transient, "FetchJWTSVIDs", message)
}

/// Keeps the JWT-SVID fresh until `stop`.
pub async fn run(jwt: DelegatedJwt, stop: CancellationToken) {
    let settings = LeaseSettings::new(
        format!("delegated jwt-svid pid={}", jwt.pid),
        "FetchJWTSVIDs",
        REFRESH_WINDOW,
    );
    lease::run(jwt, settings, stop).await;
}
