//! A workload's own JWT-SVIDs in delegated mode: `jwt-svid:<audience>` is fetched for the
//! caller (`FetchJWTSVIDs{audience, pid}`) the first time one of its streams asks, and
//! kept fresh by a [`lease`] until the workload is no longer followed.

use std::sync::{Arc, Weak};

use spire_api::pb::spire::api::agent::delegatedidentity::v1::FetchJwtsviDsRequest;
use steeple_plugin_api::lease::{self, LeaseSettings, Obtained, Upstream};
use steeple_plugin_api::{BoxFuture, ExchangeError, ExchangeErrorKind, JwtSvidSource, SecretBytes};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

use super::holder_waits::HolderWait;
use super::{DelegatedClient, Workloads};
use crate::authz::Caller;
use crate::exchange::jwt_source::JwtSvidsById;
use crate::identity::jwt::{REFRESH_WINDOW, take_token};
use crate::store::{Secret, SecretStore, Source};

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
        let pick = Pick::Hint(self.default_hint.as_deref());
        Box::pin(fetch(
            &self.client,
            &self.caller,
            self.pid,
            &self.audience,
            pick,
        ))
    }

    fn publish(&self, token: Option<SecretBytes>) {
        let source = Source::JwtSvid(self.name.clone());
        let entries = token.map(|t| (self.name.clone(), Secret::Generic(t)));
        self.store
            .sync_source(&source, entries.into_iter().collect());
    }
}

/// Which of a workload's JWT-SVIDs a fetch keeps.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// The one whose entry has this hint, else SPIRE's first.
    Hint(Option<&'a str>),
    /// The one for this SPIFFE ID, or none.
    Id(&'a str),
}

/// One `FetchJWTSVIDs{audience, pid}` for the process `caller`, keeping the JWT-SVID
/// `pick` names (the others are zeroized): refused if the process exited meanwhile (the
/// pid may have been another's when SPIRE attested it).
pub async fn fetch(
    client: &DelegatedClient,
    caller: &Caller,
    pid: i32,
    audience: &str,
    pick: Pick<'_>,
) -> Result<Obtained<SecretBytes>, ExchangeError> {
    let request = FetchJwtsviDsRequest {
        audience: vec![audience.to_owned()],
        selectors: Vec::new(),
        pid,
    };
    let response = client
        .fetch_jwt_svids(request)
        .await
        .map_err(|status| fetch_error(super::explain(&status)))?;
    if !caller.still_running() {
        return Err(ExchangeError::new(
            ExchangeErrorKind::Fatal,
            "FetchJWTSVIDs",
            "the workload's process exited".to_owned(),
        ));
    }
    let mut svids = response.svids;
    let at = match pick {
        Pick::Hint(hint) => Some(
            hint.and_then(|h| svids.iter().position(|s| s.hint == h))
                .unwrap_or(0),
        ),
        Pick::Id(id) => svids.iter().position(|s| {
            s.id.as_ref()
                .is_some_and(|i| format!("spiffe://{}{}", i.trust_domain, i.path) == id)
        }),
    }
    .filter(|at| *at < svids.len());
    let Some(at) = at else {
        for other in &mut svids {
            other.token.zeroize();
        }
        return Err(fetch_error(
            "no registration entry gives this workload that JWT-SVID".into(),
        ));
    };
    let mut svid = svids.swap_remove(at);
    for other in &mut svids {
        other.token.zeroize();
    }
    take_token(&mut svid.token).map_err(|e| fetch_error(format!("JWT-SVID refused: {e}")))
}

/// A failed fetch: worth retrying (SPIRE agent restarting, the entry not synced yet).
fn fetch_error(message: String) -> ExchangeError {
    ExchangeError::new(ExchangeErrorKind::Transient, "FetchJWTSVIDs", message)
}

/// JWT-SVIDs of the SPIFFE IDs followed workloads hold, for their roles' exchanges: each
/// fetched for the process of a live workload holding that identity.
#[derive(Debug, Clone)]
pub struct WorkloadJwtSvids {
    workloads: Weak<Workloads>,
}

impl WorkloadJwtSvids {
    /// The JWT-SVIDs of `workloads`' identities.
    pub fn new(workloads: &Arc<Workloads>) -> Self {
        Self {
            workloads: Arc::downgrade(workloads),
        }
    }
}

impl JwtSvidsById for WorkloadJwtSvids {
    /// `retry_now` is notified when a workload holding `spiffe_id` is followed again
    /// after a fetch found none.
    fn for_id(&self, spiffe_id: &str, retry_now: &Arc<Notify>) -> Arc<dyn JwtSvidSource> {
        let wait = self
            .workloads
            .upgrade()
            .map(|w| w.holder_waits().register(spiffe_id, retry_now));
        Arc::new(IdentityJwt {
            workloads: self.workloads.clone(),
            spiffe_id: spiffe_id.to_owned(),
            wait,
        })
    }
}

/// One SPIFFE ID's JWT-SVIDs, for one lease.
#[derive(Debug)]
struct IdentityJwt {
    workloads: Weak<Workloads>,
    spiffe_id: String,
    /// The lease's wait for a holder (`None` once the registry is gone).
    wait: Option<Arc<HolderWait>>,
}

impl JwtSvidSource for IdentityJwt {
    fn fetch<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<SecretBytes, ExchangeError>> {
        Box::pin(async move {
            // Waiting from before the look, so a holder arriving meanwhile is not missed.
            if let Some(wait) = &self.wait {
                wait.begin();
            }
            let holder = self
                .workloads
                .upgrade()
                .and_then(|w| w.holder_of(&self.spiffe_id));
            if let (Some(wait), Some(_)) = (&self.wait, &holder) {
                wait.end();
            }
            let Some((client, caller, pid)) = holder else {
                return Err(fetch_error(format!(
                    "no running workload holds {} now",
                    self.spiffe_id
                )));
            };
            let pick = Pick::Id(&self.spiffe_id);
            match fetch(&client, &caller, pid, audience, pick).await {
                Ok(obtained) => Ok(obtained.credential),
                // That process exited mid-fetch; another of the identity may still run.
                Err(e) if e.kind == ExchangeErrorKind::Fatal => Err(ExchangeError::new(
                    ExchangeErrorKind::Transient,
                    e.code,
                    e.message,
                )),
                Err(e) => Err(e),
            }
        })
    }
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
