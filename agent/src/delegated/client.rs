//! The Delegated Identity API client over SPIRE agent's admin socket (lazily connected).
//! Calls go through the `spire-api` crate's generated client, except the per-workload
//! subscription: a node agent keeps one open per workload process, so it decodes with
//! small buffers ([`crate::small_codec`]) rather than the generated client's 8 KiB.
//!
//! Calls naming a workload's pid make SPIRE agent attest it (and Steeple, the delegate)
//! before answering, and SPIRE agent does not cope with a burst of them: with 1,000 such
//! calls at once (a node's workloads starting together, or all re-subscribing after
//! SPIRE agent restarted) its attestations time out, the calls are cancelled, retried,
//! and it stalls for good. So only `workload_api.max_concurrent_attestations` are in
//! flight at once, the rest queue here, and each call's timeout starts when it is sent.

use std::sync::Arc;
use std::time::Duration;

use spire_api::pb::spire::api::agent::delegatedidentity::v1::delegated_identity_client::DelegatedIdentityClient;
use spire_api::pb::spire::api::agent::delegatedidentity::v1::{
    FetchJwtsviDsRequest, FetchJwtsviDsResponse, SubscribeToX509BundlesRequest,
    SubscribeToX509BundlesResponse, SubscribeToX509sviDsRequest, SubscribeToX509sviDsResponse,
};
use tokio::sync::Semaphore;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{GrpcMethod, Status, Streaming};

use crate::small_codec::ClientCodec;

const SERVICE: &str = "spire.api.agent.delegatedidentity.v1.DelegatedIdentity";
const SUBSCRIBE_TO_X509_SVIDS: &str =
    "/spire.api.agent.delegatedidentity.v1.DelegatedIdentity/SubscribeToX509SVIDs";

/// How long SPIRE agent has to answer a call once it is sent.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A Delegated Identity API client; clones share the connection and the attestation
/// queue.
#[derive(Debug, Clone)]
pub struct DelegatedClient {
    channel: Channel,
    attestations: Arc<Semaphore>,
}

impl DelegatedClient {
    /// Calls over `channel`, at most `max_attestations` of those naming a pid at once.
    pub fn new(channel: Channel, max_attestations: usize) -> Self {
        Self {
            channel,
            attestations: Arc::new(Semaphore::new(max_attestations.max(1))),
        }
    }

    /// `call`, once fewer than the most attestations allowed are in flight, bounded by
    /// [`CALL_TIMEOUT`] from then.
    async fn attesting<T>(
        &self,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let _turn = self
            .attestations
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the Delegated Identity client is closed"))?;
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("no answer within {}s", CALL_TIMEOUT.as_secs()))
            })?
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

    /// `FetchJWTSVIDs` as `request` says (its turn in the attestation queue first).
    pub async fn fetch_jwt_svids(
        &self,
        request: FetchJwtsviDsRequest,
    ) -> Result<FetchJwtsviDsResponse, Status> {
        let call = async { self.generated().fetch_jwtsvi_ds(request).await };
        Ok(self.attesting(call).await?.into_inner())
    }

    /// `SubscribeToX509SVIDs{pid}`: the X.509-SVIDs of the process `pid` (SPIRE attests
    /// it now), as they change; opened in its turn in the attestation queue.
    pub async fn subscribe_to_x509_svids(
        &self,
        pid: i32,
    ) -> Result<Streaming<SubscribeToX509sviDsResponse>, Status> {
        self.attesting(self.open_x509_svids(pid)).await
    }

    async fn open_x509_svids(
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn client(max_attestations: usize) -> DelegatedClient {
        let channel = crate::uds::lazy_channel(std::path::Path::new("/nonexistent/admin.sock"));
        DelegatedClient::new(channel, max_attestations)
    }

    #[tokio::test(start_paused = true)]
    async fn attesting_calls_queue_past_the_limit_and_each_gets_its_full_timeout() {
        let client = client(2);
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let calls = (0..6).map(|_| {
            let (client, now, most) = (client.clone(), now.clone(), most.clone());
            tokio::spawn(async move {
                let call = async {
                    let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(in_flight, Ordering::SeqCst);
                    // Most of a timeout each: six in a row take far longer than one.
                    tokio::time::sleep(CALL_TIMEOUT - Duration::from_secs(1)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok::<(), Status>(())
                };
                client.attesting(call).await
            })
        });
        for call in calls.collect::<Vec<_>>() {
            assert!(call.await.unwrap().is_ok(), "a queued call timed out");
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_spire_does_not_answer_in_time_fails_and_frees_its_turn() {
        let client = client(1);
        let stuck = client
            .attesting(std::future::pending::<Result<(), Status>>())
            .await;
        assert_eq!(stuck.unwrap_err().code(), tonic::Code::DeadlineExceeded);
        let next = client.attesting(async { Ok::<u8, Status>(7) }).await;
        assert_eq!(next.unwrap(), 7);
    }
}
