//! gRPC codecs whose buffers start small. tonic's default codec allocates 8 KiB to encode
//! and 8 KiB to decode per call up front; an agent holding a stream open per SDS stream
//! (server side) and per workload process (the Delegated Identity subscription, client
//! side) would spend more on those buffers than on everything else a stream holds.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Bytes a call's codec buffers start with, and grow by. A request (a few names and an
/// Envoy node, a pid) fits; a message of a few KB grows the buffer a few steps once.
const BUFFER: usize = 1024;
/// Encoded bytes after which a message is handed to HTTP/2 (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The buffer settings of every codec here.
pub fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER, YIELD_THRESHOLD)
}

/// Decodes prost messages `T`, with small buffers.
pub struct ProtoDecoder<T>(PhantomData<fn() -> T>);

impl<T> Default for ProtoDecoder<T> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T: prost::Message + Default> Decoder for ProtoDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        // The same status tonic's prost codec gives a message that does not decode.
        T::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// Encodes prost messages `T`, with small buffers.
pub struct ProtoEncoder<T>(PhantomData<fn(T)>);

impl<T: prost::Message> Encoder for ProtoEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// A client's codec: sends `Req`, receives `Resp`, both prost messages, small buffers.
pub struct ClientCodec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Default for ClientCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Codec for ClientCodec<Req, Resp>
where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default + 'static,
{
    type Encode = Req;
    type Decode = Resp;
    type Encoder = ProtoEncoder<Req>;
    type Decoder = ProtoDecoder<Resp>;

    fn encoder(&mut self) -> Self::Encoder {
        ProtoEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder::default()
    }
}
