//! Identity: the one long-lived client of the SPIFFE Workload API. It follows X.509-SVIDs,
//! bundles and JWT bundles, keeps configured JWT-SVIDs fresh, and writes it all into the store.

pub mod jwt;
pub mod jwt_bundles;
pub mod x509;

use std::path::Path;
use std::sync::Arc;

use steeple_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{JwtSvidConfig, SdsConfig};
use crate::lifecycle::TaskGroup;
use crate::store::SecretStore;

/// The gRPC client type of the Workload API over a Unix socket.
pub type WorkloadApiClient = SpiffeWorkloadApiClient<tonic::transport::Channel>;

/// The SPIRE-compatible names the default SVID and bundles are also published under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNames {
    /// The first SVID (`default`).
    pub svid: String,
    /// The own trust domain's bundle (`ROOTCA`).
    pub bundle: String,
    /// Every bundle (`ALL`).
    pub all_bundles: String,
}

impl From<&SdsConfig> for DefaultNames {
    fn from(sds: &SdsConfig) -> Self {
        Self {
            svid: sds.default_svid_name.clone(),
            bundle: sds.default_bundle_name.clone(),
            all_bundles: sds.default_all_bundles_name.clone(),
        }
    }
}

/// Wraps a Workload API message with the security header every call must carry.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        steeple_proto::SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// The one Workload API client (a lazily connected channel; clones share it).
pub fn client(socket: &Path) -> WorkloadApiClient {
    SpiffeWorkloadApiClient::new(crate::uds::lazy_channel(socket))
}

/// Starts the X.509-SVID and JWT-bundle tasks on `client`; they run until `shutdown` and
/// never return errors (they log and retry).
pub fn spawn(
    client: &WorkloadApiClient,
    names: DefaultNames,
    store: Arc<SecretStore>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(x509::run(
        client.clone(),
        store.clone(),
        names,
        shutdown.clone(),
    ));
    tasks.spawn(jwt_bundles::run(
        client.clone(),
        store.clone(),
        shutdown.clone(),
    ));
}

/// Starts one task per `[[jwt_svids]]` entry in `group`, keeping that JWT-SVID in the
/// store until the group stops.
pub fn spawn_jwt_svids(
    client: &WorkloadApiClient,
    jwt_svids: &[JwtSvidConfig],
    store: &Arc<SecretStore>,
    group: &mut TaskGroup,
) {
    for jwt in jwt_svids {
        group.tasks.spawn(jwt::run(
            client.clone(),
            store.clone(),
            jwt.clone(),
            group.stop.clone(),
        ));
    }
}

#[cfg(test)]
#[path = "x509_tests.rs"]
mod x509_tests;
