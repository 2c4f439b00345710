//! The SDS gRPC service, routed by hand rather than through envoy-types' generated server,
//! for its codec: responses are written from resources encoded once and shared by every
//! stream ([`super::wire`]), not rebuilt as prost messages per stream; and each stream's
//! encode and decode buffers start small, where tonic's default codec allocates 8 KiB each
//! way per stream up front — more than everything else one stream holds.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};

use super::SdsService;
use super::stream::Responses;
use super::wire::{DeltaResponse, SotwResponse, WireMessage};
use crate::small_codec::ProtoDecoder;

const SERVICE: &str = "envoy.service.secret.v3.SecretDiscoveryService";
const STREAM_SECRETS: &str = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets";
const DELTA_SECRETS: &str = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets";
const FETCH_SECRETS: &str = "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets";

/// The tonic service serving `StreamSecrets`, `DeltaSecrets` and `FetchSecrets`.
#[derive(Debug, Clone)]
pub struct SdsServer {
    service: Arc<SdsService>,
    max_request_bytes: usize,
}

impl SdsServer {
    /// Serves `service`, refusing requests over `max_request_bytes`.
    pub fn new(service: SdsService, max_request_bytes: usize) -> Self {
        Self {
            service: Arc::new(service),
            max_request_bytes,
        }
    }

    fn grpc<Req: prost::Message + Default + 'static, Resp: WireMessage>(
        &self,
    ) -> Grpc<SdsCodec<Req, Resp>> {
        Grpc::new(SdsCodec(PhantomData))
            .apply_max_message_size_config(Some(self.max_request_bytes), None)
    }
}

impl NamedService for SdsServer {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for SdsServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.service.clone();
        match request.uri().path() {
            STREAM_SECRETS => {
                let mut grpc = self.grpc::<DiscoveryRequest, SotwResponse>();
                Box::pin(async move { Ok(grpc.streaming(StreamSecrets(service), request).await) })
            }
            DELTA_SECRETS => {
                let mut grpc = self.grpc::<DeltaDiscoveryRequest, DeltaResponse>();
                Box::pin(async move { Ok(grpc.streaming(DeltaSecrets(service), request).await) })
            }
            FETCH_SECRETS => {
                let mut grpc = self.grpc::<DiscoveryRequest, SotwResponse>();
                Box::pin(async move { Ok(grpc.unary(FetchSecrets(service), request).await) })
            }
            _ => Box::pin(async { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

struct StreamSecrets(Arc<SdsService>);

impl StreamingService<DiscoveryRequest> for StreamSecrets {
    type Response = SotwResponse;
    type ResponseStream = Responses<SotwResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.stream_secrets(request).await })
    }
}

struct DeltaSecrets(Arc<SdsService>);

impl StreamingService<DeltaDiscoveryRequest> for DeltaSecrets {
    type Response = DeltaResponse;
    type ResponseStream = Responses<DeltaResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.delta_secrets(request).await })
    }
}

struct FetchSecrets(Arc<SdsService>);

impl UnaryService<DiscoveryRequest> for FetchSecrets {
    type Response = SotwResponse;
    type Future = BoxFuture<Response<SotwResponse>, Status>;

    fn call(&mut self, request: Request<DiscoveryRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.fetch_secrets(request).await })
    }
}

/// Requests decoded by prost, responses written by [`WireMessage`], small buffers.
struct SdsCodec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Codec for SdsCodec<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: WireMessage,
{
    type Encode = Resp;
    type Decode = Req;
    type Encoder = WireEncoder<Resp>;
    type Decoder = ProtoDecoder<Req>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder::default()
    }
}

struct WireEncoder<T>(PhantomData<fn(T)>);

impl<T: WireMessage> Encoder for WireEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode_raw(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        crate::small_codec::buffer_settings()
    }
}
