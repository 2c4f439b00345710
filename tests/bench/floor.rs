//! The `floor` target: the least an SDS server on Steeple's stack (tokio, tonic 0.14,
//! hyper, h2; a release build) can spend to push one response to every stream and take
//! its ACK, or to answer one `FetchSecrets`. It is a measuring stick for how far Steeple is
//! from what its stack allows, not a fake of a peer: it serves nothing of its own, but
//! relays Steeple's real responses. Shared by `sds_fanout` and `envelopes` (included by
//! path); a benchmark that starts it must call [`run_if_asked`] first thing in `main`.
//!
//! It runs as a process of its own (the benchmark's binary, re-executed with
//! [`LISTEN_ENV`], [`UPSTREAM_ENV`] and [`NAMES_ENV`] set), so its CPU can be read alone.
//! It holds one `StreamSecrets` stream for its names (`ALL` unless told otherwise) to
//! Steeple's SDS socket, and on each response it receives encodes, once, a
//! `DiscoveryResponse` carrying that response's resources (the `Any`s as received, their
//! secrets neither parsed nor rebuilt), its own version and the same `type_url`. Every
//! stream of its own socket gets those shared bytes plus its own nonce: on its first
//! request, and whenever the upstream answers again. ACKs and NACKs need nothing. Every
//! `FetchSecrets` gets the same bytes with no nonce, whatever it asked for (`UNAVAILABLE`
//! before the first upstream response). There is no authorization, no name lookup, no
//! store, and no look at `/proc`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message as _;
use prost::bytes::{BufMut as _, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint};
use steeple_e2e::ChildProcess;
use steeple_e2e::sds_client;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};

/// The socket the floor serves on; set, the binary runs as the floor server.
pub const LISTEN_ENV: &str = "STEEPLE_BENCH_FLOOR";
/// Steeple's SDS socket, which the floor relays.
pub const UPSTREAM_ENV: &str = "STEEPLE_BENCH_FLOOR_UPSTREAM";
/// The resource names the floor's upstream stream asks for, comma-separated; unset,
/// [`DEFAULT_NAMES`].
pub const NAMES_ENV: &str = "STEEPLE_BENCH_FLOOR_NAMES";
/// What the upstream stream asks for when [`NAMES_ENV`] is unset: everything Envoy would
/// get (`sds_fanout`'s streams ask for the same).
const DEFAULT_NAMES: &str = "ALL";

const STREAM_SECRETS: &str = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets";
const FETCH_SECRETS: &str = "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets";
/// The node name of the floor's upstream stream.
const NODE: &str = "steeple-bench-floor";
/// Codec buffers: Steeple's (`agent/src/small_codec.rs`), so RSS per stream compares
/// like with like; tonic's default would start at 8 KiB each way per stream.
const BUFFER: usize = 1024;
const YIELD_THRESHOLD: usize = 32 * 1024;
/// How long the floor may take to answer `FetchSecrets` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the floor's socket may take to appear, and how often to look.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
const SOCKET_POLL: Duration = Duration::from_millis(20);
/// How often to try `FetchSecrets` until the floor answers.
const READY_POLL: Duration = Duration::from_millis(100);

// ---- The server (the child process) ----

/// Runs the floor server if this process was started as one ([`LISTEN_ENV`] set), until
/// its upstream stream or its listener fails; `None` otherwise.
pub fn run_if_asked() -> Option<anyhow::Result<()>> {
    let listen = PathBuf::from(std::env::var_os(LISTEN_ENV)?);
    Some(run(&listen))
}

fn run(listen: &Path) -> anyhow::Result<()> {
    let upstream = std::env::var_os(UPSTREAM_ENV)
        .map(PathBuf::from)
        .with_context(|| format!("{UPSTREAM_ENV} is not set"))?;
    let names = match std::env::var(NAMES_ENV) {
        Ok(names) => names,
        Err(std::env::VarError::NotPresent) => DEFAULT_NAMES.to_owned(),
        Err(e) => anyhow::bail!("{NAMES_ENV}: {e}"),
    };
    let names: Vec<&str> = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    anyhow::ensure!(!names.is_empty(), "{NAMES_ENV} names no resource");
    // Tokio's default worker count (one per CPU), as Steeple's runtime has
    // (`agent/src/cli/mod.rs`): 2 on a 2-core machine.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, &upstream, &names))
}

async fn serve(listen: &Path, upstream: &Path, names: &[&str]) -> anyhow::Result<()> {
    let (current, watched) = watch::channel(None);
    let listener =
        UnixListener::bind(listen).with_context(|| format!("binding {}", listen.display()))?;
    let server = tonic::transport::Server::builder()
        .add_service(FloorServer { current: watched })
        .serve_with_incoming(UnixListenerStream::new(listener));
    tokio::select! {
        relayed = relay(upstream, names, &current) => {
            relayed.context("the upstream stream to Steeple")
        }
        served = server => served.context("serving"),
    }
}

/// Follows `names` on Steeple's socket like Envoy (ACKing each response) and publishes
/// each response it gets as the floor's current one. Returns only with an error.
async fn relay(
    upstream: &Path,
    names: &[&str],
    current: &watch::Sender<Option<Current>>,
) -> anyhow::Result<()> {
    let mut client = sds_client::connect(upstream);
    let mut version = 0;
    sds_client::stream_like_envoy(&mut client, NODE, names, |response| {
        version += 1;
        current.send_replace(Some(Current::encode(version, response)));
        Ok(())
    })
    .await
}

/// The response every stream (and every fetch) is sent, encoded once. `Bytes` is shared
/// by reference count, so the watch channel hands each stream a pointer, not a copy.
#[derive(Debug, Clone)]
struct Current {
    /// The floor's own version (counting upstream responses from 1).
    version: u64,
    /// A `DiscoveryResponse`'s fields `version_info`, `resources` and `type_url`, encoded;
    /// each stream appends its `nonce` (field 5, so fields stay in tag order), a fetch
    /// nothing.
    body: Bytes,
}

impl Current {
    /// `upstream`'s resources and type URL under the floor's `version`. The `Any`s are
    /// written back as prost decoded them; the secrets inside are only copied.
    fn encode(version: u64, upstream: &DiscoveryResponse) -> Self {
        let mut body = BytesMut::new();
        prost::encoding::string::encode(1, &version.to_string(), &mut body);
        for resource in &upstream.resources {
            prost::encoding::message::encode(2, resource, &mut body);
        }
        prost::encoding::string::encode(4, &upstream.type_url, &mut body);
        Self {
            version,
            body: body.freeze(),
        }
    }
}

/// The service: `StreamSecrets` and `FetchSecrets`; `DeltaSecrets` and anything else
/// answer `UNIMPLEMENTED`. Routed by hand, not through envoy-types' generated server, for
/// the codec: the generated one encodes prost `DiscoveryResponse`s, whose `Any.value` is a
/// `Vec<u8>`, so every response would need its own copy of the secrets to encode from.
#[derive(Debug, Clone)]
struct FloorServer {
    current: watch::Receiver<Option<Current>>,
}

impl NamedService for FloorServer {
    const NAME: &'static str = "envoy.service.secret.v3.SecretDiscoveryService";
}

impl Service<http::Request<Body>> for FloorServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            STREAM_SECRETS => {
                let service = StreamSecrets(self.current.clone());
                Box::pin(async move { Ok(Grpc::new(FloorCodec).streaming(service, request).await) })
            }
            FETCH_SECRETS => {
                // The response as of the request's arrival: a reference count, no copy.
                let body = self.current.borrow().as_ref().map(|c| c.body.clone());
                let service = FetchSecrets(body);
                Box::pin(async move { Ok(Grpc::new(FloorCodec).unary(service, request).await) })
            }
            _ => Box::pin(async { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

/// One `FetchSecrets`: the current response's shared bytes, whatever was asked (`None`:
/// nothing relayed yet).
struct FetchSecrets(Option<Bytes>);

impl UnaryService<DiscoveryRequest> for FetchSecrets {
    type Response = Push;
    type Future = std::future::Ready<Result<Response<Push>, Status>>;

    fn call(&mut self, _request: Request<DiscoveryRequest>) -> Self::Future {
        let answer = match self.0.take() {
            Some(body) => Ok(Response::new(Push { body, nonce: None })),
            None => Err(Status::unavailable(
                "the floor has no response from its upstream yet",
            )),
        };
        std::future::ready(answer)
    }
}

struct StreamSecrets(watch::Receiver<Option<Current>>);

impl StreamingService<DiscoveryRequest> for StreamSecrets {
    type Response = Push;
    type ResponseStream = Downstream;
    type Future = std::future::Ready<Result<Response<Downstream>, Status>>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let downstream = Downstream::new(request.into_inner(), self.0.clone());
        std::future::ready(Ok(Response::new(downstream)))
    }
}

/// One response on its way to one stream or fetch: the shared body and, on a stream, its
/// nonce.
struct Push {
    body: Bytes,
    nonce: Option<u64>,
}

/// One stream's responses, as the response body hyper polls: each poll takes the
/// client's requests and the upstream's changes until there is something to send.
struct Downstream {
    requests: Streaming<DiscoveryRequest>,
    /// Kept across polls, so a stream waits on the channel without registering anew at
    /// each request.
    changes: WatchStream<Option<Current>>,
    current: Option<Current>,
    /// Whether the client has sent its first request.
    subscribed: bool,
    /// The version last sent; 0 before the first response.
    sent: u64,
    /// The last nonce sent (the stream's response count).
    nonce: u64,
}

impl Downstream {
    fn new(
        requests: Streaming<DiscoveryRequest>,
        mut current: watch::Receiver<Option<Current>>,
    ) -> Self {
        let now = current.borrow_and_update().clone();
        Self {
            requests,
            changes: WatchStream::from_changes(current),
            current: now,
            subscribed: false,
            sent: 0,
            nonce: 0,
        }
    }

    /// The current response if the client asked and has not been sent it yet.
    fn due(&mut self) -> Option<Push> {
        let current = self.current.as_ref()?;
        if !self.subscribed || current.version == self.sent {
            return None;
        }
        self.sent = current.version;
        self.nonce += 1;
        Some(Push {
            body: current.body.clone(),
            nonce: Some(self.nonce),
        })
    }
}

impl Stream for Downstream {
    type Item = Result<Push, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Poll::Ready(change) = Pin::new(&mut this.changes).poll_next(cx) {
                match change {
                    Some(current) => this.current = current,
                    // The relay is gone, and with it the process.
                    None => return Poll::Ready(None),
                }
            } else {
                match Pin::new(&mut this.requests).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(_request))) => this.subscribed = true,
                    Poll::Ready(Some(Err(status))) => {
                        eprintln!("floor: a stream ended on a bad request or transport: {status}");
                        return Poll::Ready(None);
                    }
                    Poll::Ready(None) => return Poll::Ready(None),
                }
            }
            if let Some(push) = this.due() {
                return Poll::Ready(Some(Ok(push)));
            }
        }
    }
}

/// Requests decoded by prost (as any server on this stack does); responses written from
/// the shared body.
struct FloorCodec;

impl Codec for FloorCodec {
    type Encode = Push;
    type Decode = DiscoveryRequest;
    type Encoder = PushEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> PushEncoder {
        PushEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

struct PushEncoder;

impl Encoder for PushEncoder {
    type Item = Push;
    type Error = Status;

    fn encode(&mut self, push: Push, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let Some(nonce) = push.nonce else {
            // A fetch: no nonce, and an empty string is no field at all in proto3.
            dst.put_slice(&push.body);
            return Ok(());
        };
        let (digits, start) = decimal(nonce);
        let nonce = &digits[start..];
        // Key, length and at most 20 digits.
        dst.reserve(push.body.len() + 2 + nonce.len());
        dst.put_slice(&push.body);
        encode_key(5, WireType::LengthDelimited, dst);
        encode_varint(nonce.len() as u64, dst);
        dst.put_slice(nonce);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER, YIELD_THRESHOLD)
    }
}

/// `n` in decimal, without allocating: the digits are `buffer[start..]`.
fn decimal(mut n: u64) -> ([u8; 20], usize) {
    let mut buffer = [0u8; 20];
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return (buffer, start);
        }
    }
}

struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = DiscoveryRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DiscoveryRequest>, Status> {
        DiscoveryRequest::decode(src).map(Some).map_err(|e| {
            eprintln!("floor: an undecodable request: {e}");
            Status::internal(e.to_string())
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER, YIELD_THRESHOLD)
    }
}

// ---- The benchmark's side ----

/// The floor server, running as a child of the benchmark; stopped when dropped.
#[derive(Debug)]
pub struct FloorProcess {
    child: ChildProcess,
    socket: PathBuf,
}

impl FloorProcess {
    /// Starts the floor on a socket in `dir`, relaying `names` from Steeple's SDS socket
    /// `upstream`, and waits until a `FetchSecrets` on it answers (so it has relayed a
    /// response). The benchmark's `main` must call [`run_if_asked`] first.
    pub async fn start(dir: &Path, upstream: &Path, names: &[&str]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !names.is_empty() && names.iter().all(|n| !n.is_empty() && !n.contains(',')),
            "the floor needs resource names, none empty or with a comma: {names:?}"
        );
        let socket = dir.join("floor.sock");
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env(LISTEN_ENV, &socket)
            .env(UPSTREAM_ENV, upstream)
            .env(NAMES_ENV, names.join(","));
        let mut floor = Self {
            child: ChildProcess::spawn("floor", command, dir)?,
            socket,
        };
        let ready = floor.wait_ready(names).await;
        ready.with_context(|| {
            format!(
                "the floor server did not start; its logs:\n{}",
                floor.child.logs()
            )
        })?;
        Ok(floor)
    }

    async fn wait_ready(&mut self, names: &[&str]) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + SOCKET_TIMEOUT;
        while !self.socket.exists() {
            anyhow::ensure!(self.child.is_running(), "it exited");
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no socket after {SOCKET_TIMEOUT:?}"
            );
            tokio::time::sleep(SOCKET_POLL).await;
        }
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut client = sds_client::connect(&self.socket);
        loop {
            match client.fetch_secrets(sds_client::request(names)).await {
                Ok(_) => return Ok(()),
                Err(status) => {
                    anyhow::ensure!(self.child.is_running(), "it exited");
                    anyhow::ensure!(
                        tokio::time::Instant::now() < deadline,
                        "FetchSecrets still fails after {READY_TIMEOUT:?}: {status}"
                    );
                }
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The socket it serves SDS on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it has written so far (errors only).
    pub fn logs(&self) -> String {
        self.child.logs()
    }
}
