//! The SDS server: `envoy.service.secret.v3.SecretDiscoveryService` (StreamSecrets,
//! DeltaSecrets, FetchSecrets) on a Unix socket, serving the store's entries.

pub mod activity;
pub mod admission;
pub mod delta;
pub mod limits;
pub mod own_identity;
pub mod peer;
pub mod resources;
pub mod server;
pub mod sotw;
pub mod stream;
mod wakes;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::authz::{Caller, Grant, SharedPolicy};
use crate::delegated::{Workload, Workloads};
use crate::metrics::metrics;
use crate::store::{DemandRefused, SecretStore, View, ViewReceiver};
use delta::DeltaStream;
pub use limits::SdsSettings;
use resources::{ClientCaps, SECRET_TYPE_URL, encoded};
use server::SdsServer;
use sotw::SotwStream;
use stream::Responses;
use wire::{DeltaResponse, SotwResponse};

/// The SDS service over the shared store.
#[derive(Debug, Clone)]
pub struct SdsService {
    store: Arc<SecretStore>,
    settings: Arc<SdsSettings>,
    policy: SharedPolicy,
    shutdown: CancellationToken,
    /// Streams open now, all connections together (`sds.max_streams`).
    open_streams: Arc<AtomicUsize>,
    /// Delegated mode: each caller's own identity, followed while it has a stream.
    workloads: Option<Arc<Workloads>>,
}

/// One open stream's place under `sds.max_streams`, given back when its task ends, and
/// its hold on its connection (busy, not idle, while the stream is open).
#[derive(Debug)]
struct StreamPermit {
    open_streams: Arc<AtomicUsize>,
    _in_use: Option<activity::InUse>,
    /// Delegated mode: the caller's workload, followed while the stream is open.
    workload: Option<Arc<Workload>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SdsService {
    /// A service answering from `store` to callers as `policy` allows (as it is when a
    /// request comes, and re-checked on open streams when replaced); its streams end
    /// when `shutdown` is cancelled.
    pub fn new(
        store: Arc<SecretStore>,
        settings: SdsSettings,
        policy: SharedPolicy,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
            policy,
            shutdown,
            open_streams: Arc::default(),
            workloads: None,
        }
    }

    /// Delegated mode: each caller sees its own identity from `workloads`, never the
    /// agent's own.
    pub fn with_workloads(mut self, workloads: Arc<Workloads>) -> Self {
        self.workloads = Some(workloads);
        self
    }

    /// Delegated mode: the caller's workload — its first answer from SPIRE awaited, and
    /// `grant` recomputed under the identity it was attested with — followed while the
    /// result is held, and for a while after a unary fetch (`unary`). A caller no rule
    /// may grant anything, or one without peer credentials, gets a workload with no
    /// identity: never the agent's own.
    async fn attested_workload(
        &self,
        connected: Option<&peer::ConnectedCaller>,
        grant: &mut Grant,
        unary: bool,
    ) -> Option<Arc<Workload>> {
        let workloads = self.workloads.as_ref()?;
        let policy = self.policy.current();
        let Some(caller) = connected
            .map(|c| c.caller.clone())
            .filter(|c| policy.may_grant(c))
        else {
            return Some(Workloads::unattested());
        };
        let workload = match unary {
            true => workloads.acquire_for_fetch(&caller),
            false => workloads.acquire(&caller),
        };
        let own = workload.first_answer().await;
        if let Some(identity) = View::delegated(self.store.snapshot(), own).own_identity() {
            *grant = grant.attested(&policy, identity);
        }
        Some(workload)
    }

    /// The caller's grant, from the Unix peer credentials of its connection. A connection
    /// without them (not admitted through [`peer::incoming`]) gets nothing.
    fn grant<T>(&self, request: &Request<T>) -> Grant {
        match Self::connection(request) {
            Some(connected) => Grant::new(connected.caller.clone(), &self.policy.current()),
            None => Grant::nothing(Arc::new(Caller::from_peer(u32::MAX, u32::MAX, None))),
        }
    }

    /// The connection `request` came on, if it was admitted through [`peer::incoming`].
    fn connection<T>(request: &Request<T>) -> Option<&peer::ConnectedCaller> {
        request.extensions().get::<peer::ConnectedCaller>()
    }

    /// A stream's grant and its place under `sds.max_streams`, refused before any task is
    /// spawned when the grant covers nothing (the policy may have narrowed since the
    /// connection was admitted) or every place is taken.
    async fn stream_grant<T>(&self, request: &Request<T>) -> Result<(Grant, StreamPermit), Status> {
        let mut grant = self.grant(request);
        let workload = self
            .attested_workload(Self::connection(request), &mut grant, false)
            .await;
        if grant.is_empty() {
            metrics().sds_request_refused();
            return Err(Status::permission_denied(
                "this caller is not authorized for any resource",
            ));
        }
        let open = self.open_streams.fetch_add(1, Ordering::Relaxed);
        let permit = StreamPermit {
            open_streams: self.open_streams.clone(),
            _in_use: Self::connection(request).map(|c| c.activity.stream_opened()),
            workload,
        };
        if open >= self.settings.max_streams {
            metrics().sds_request_refused();
            return Err(Status::resource_exhausted(format!(
                "this server holds its limit of {} SDS streams (sds.max_streams)",
                self.settings.max_streams
            )));
        }
        Ok((grant, permit))
    }

    /// The tonic service with the request size limit applied.
    pub fn into_server(self) -> SdsServer {
        let limit = self.settings.max_request_bytes;
        SdsServer::new(self, limit)
    }

    fn open_stream<P: stream::Protocol>(
        &self,
        (grant, permit): (Grant, StreamPermit),
        protocol: P,
        inbound: Streaming<P::Request>,
    ) -> Responses<P::Response> {
        let view = match &permit.workload {
            None => ViewReceiver::shared(self.store.subscribe()),
            Some(w) => {
                ViewReceiver::delegated(self.store.subscribe(), w.store().subscribe(), w.clone())
            }
        };
        stream::run(
            grant,
            protocol,
            inbound,
            view,
            self.policy.subscribe(),
            &self.shutdown,
            permit,
        )
    }
}

/// The three SDS methods; [`SdsServer`] routes requests to them.
impl SdsService {
    /// `StreamSecrets`: state-of-the-world SDS.
    pub async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses<SotwResponse>>, Status> {
        let grant = self.stream_grant(&request).await?;
        let protocol = SotwStream::new(self.settings.clone());
        Ok(Response::new(self.open_stream(
            grant,
            protocol,
            request.into_inner(),
        )))
    }

    /// `DeltaSecrets`: incremental SDS.
    pub async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Responses<DeltaResponse>>, Status> {
        let grant = self.stream_grant(&request).await?;
        let protocol = DeltaStream::new(self.settings.clone());
        Ok(Response::new(self.open_stream(
            grant,
            protocol,
            request.into_inner(),
        )))
    }

    /// `FetchSecrets`: one answer, no stream.
    pub async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<SotwResponse>, Status> {
        let mut grant = self.grant(&request);
        let connected = Self::connection(&request).cloned();
        if let Some(connected) = &connected {
            connected.activity.touch();
        }
        let request = request.into_inner();
        SdsSettings::check_type_url(&request.type_url)?;
        self.settings.check_names(&request.resource_names)?;
        let caps = ClientCaps::from_node(
            request.node.as_ref(),
            self.settings.disable_spiffe_cert_validation,
        );
        let mut names: Vec<&str> = request.resource_names.iter().map(String::as_str).collect();
        let workload = self
            .attested_workload(connected.as_ref(), &mut grant, true)
            .await;
        // Authorized before anything is fetched on the caller's behalf.
        grant.authorize(names.iter().copied())?;
        let snapshot = match &workload {
            None => self.store.view(),
            Some(w) => View::delegated(
                self.store.snapshot(),
                w.with_demanded(&names).await.map_err(demand_refused)?,
            ),
        };
        if names.is_empty() {
            // FetchSecrets without names: everything this caller may see.
            names = snapshot
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| grant.covers(n))
                .collect();
            names.sort_unstable();
        } else if let own_identity::Verdict::Foreign(name) = own_identity::judge(&snapshot, &names)
        {
            return Err(own_identity::refuse(grant.caller(), name));
        }
        fetched(&names, &snapshot, caps).map(Response::new)
    }
}

/// The status answering a name that will not be served on demand.
fn demand_refused(why: DemandRefused) -> Status {
    match why {
        DemandRefused::Limit(why) => Status::resource_exhausted(why),
        DemandRefused::Denied(why) => Status::permission_denied(why),
    }
}

/// The `FetchSecrets` answer carrying `names` from `snapshot`: all of them, or `NotFound`
/// naming (some of) those missing.
fn fetched(names: &[&str], snapshot: &View, caps: ClientCaps) -> Result<SotwResponse, Status> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| snapshot.get(n).is_none())
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().copied().take(5).collect();
        return Err(Status::not_found(format!(
            "{} requested resource(s) not available (yet): {shown:?}",
            missing.len()
        )));
    }
    let resources = names
        .iter()
        .filter_map(|n| snapshot.get(n).map(|e| encoded(n, e, caps)))
        .collect();
    Ok(SotwResponse {
        version_info: snapshot.generation().to_string(),
        resources,
        type_url: SECRET_TYPE_URL.to_owned(),
        nonce: String::new(),
    })
}

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(20));
/// Streams a client may open and reset before the server has accepted them (hyper's
/// default is 20 as well; stated so the bound does not depend on a dependency's default).
const MAX_PENDING_RESETS: usize = 20;

/// Serves SDS on `listener` until `shutdown`, then lets open streams finish. Connections
/// are admitted under the settings' limits ([`admission`]); each carries at most
/// `max_streams_per_connection` streams, and dead peers are found by HTTP/2 keepalive.
pub async fn serve(
    listener: UnixListener,
    service: SdsService,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let settings = service.settings.clone();
    let admission = admission::Admission::new(settings.connections, service.policy.clone());
    tonic::transport::Server::builder()
        .max_concurrent_streams(settings.max_streams_per_connection)
        .http2_keepalive_interval(Some(KEEPALIVE.0))
        .http2_keepalive_timeout(Some(KEEPALIVE.1))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            peer::incoming(listener, admission),
            shutdown.cancelled_owned(),
        )
        .await
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
