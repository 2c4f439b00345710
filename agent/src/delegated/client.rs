//! The Delegated Identity API client over SPIRE agent's admin socket (lazily connected).
//! Calls go through the `spire-api` crate's generated client, except the per-workload
//! subscription: a node agent keeps one open per workload process, so it decodes with
//! small buffers ([`crate::small_codec`]) rather than the generated client's 8 KiB.

use spire_api::pb::spire::api::agent::delegatedidentity::v1::delegated_identity_client::DelegatedIdentityClient;
use spire_api::pb::spire::api::agent::delegatedidentity::v1::{
    FetchJwtsviDsRequest, FetchJwtsviDsResponse, SubscribeToX509BundlesRequest,
    SubscribeToX509BundlesResponse, SubscribeToX509sviDsRequest, SubscribeToX509sviDsResponse,
};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{GrpcMethod, Status, Streaming};

use crate::small_codec::ClientCodec;

const SERVICE: &str = "spire.api.agent.delegatedidentity.v1.DelegatedIdentity";
const SUBSCRIBE_TO_X509_SVIDS: &str =
    "/spire.api.agent.delegatedidentity.v1.DelegatedIdentity/SubscribeToX509SVIDs";

/// A Delegated Identity API client; clones share the connection.
#[derive(Debug, Clone)]
pub struct DelegatedClient {
    channel: Channel,
}

impl DelegatedClient {
    /// Calls over `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    fn generated(&self) -> DelegatedIdentityClient<Channel> {
        DelegatedIdentityClient::new(self.channel.clone())
    }

    /// `SubscribeToX509Bundles`: every bundle SPIRE agent tracks, as it changes.
    pub async fn subscribe_to_x509_bundles(
        &self,
    ) -> Result<Streaming<SubscribeToX509BundlesResponse>, Status> {
        let response = self
            .generated()
            .subscribe_to_x509_bundles(SubscribeToX509BundlesRequest {})
            .await?;
        Ok(response.into_inner())
    }

    /// `FetchJWTSVIDs` as `request` says.
    pub async fn fetch_jwt_svids(
        &self,
        request: FetchJwtsviDsRequest,
    ) -> Result<FetchJwtsviDsResponse, Status> {
        Ok(self
            .generated()
            .fetch_jwtsvi_ds(request)
            .await?
            .into_inner())
    }

    /// `SubscribeToX509SVIDs{pid}`: the X.509-SVIDs of the process `pid` (SPIRE attests
    /// it now), as they change.
    pub async fn subscribe_to_x509_svids(
        &self,
        pid: i32,
    ) -> Result<Streaming<SubscribeToX509sviDsResponse>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
        let mut request = tonic::Request::new(SubscribeToX509sviDsRequest {
            selectors: Vec::new(),
            pid,
        });
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE, "SubscribeToX509SVIDs"));
        let codec =
            ClientCodec::<SubscribeToX509sviDsRequest, SubscribeToX509sviDsResponse>::default();
        let path = PathAndQuery::from_static(SUBSCRIBE_TO_X509_SVIDS);
        Ok(grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner())
    }
}
