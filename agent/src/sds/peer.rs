//! SDS connections with their caller identified once, when accepted: the Unix peer
//! credentials and the `/proc` facts of the connecting process, shared by every request
//! on the connection (each request still checks that the process runs).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Connected;

use crate::authz::Caller;

/// The caller of a connection, as tonic hands it to every request's extensions. `None`:
/// the kernel reported no peer credentials.
#[derive(Debug, Clone)]
pub struct ConnectedCaller(pub Option<Arc<Caller>>);

/// An accepted Unix stream and its caller.
#[derive(Debug)]
pub struct PeerStream {
    stream: UnixStream,
    caller: ConnectedCaller,
}

impl PeerStream {
    fn new(stream: UnixStream) -> Self {
        let caller = stream
            .peer_cred()
            .ok()
            .map(|cred| Arc::new(Caller::from_peer(cred.uid(), cred.gid(), cred.pid())));
        Self {
            stream,
            caller: ConnectedCaller(caller),
        }
    }
}

/// The accepted connections of `listener`.
pub fn incoming(listener: UnixListener) -> impl Stream<Item = io::Result<PeerStream>> {
    UnixListenerStream::new(listener).map(|accepted| accepted.map(PeerStream::new))
}

impl Connected for PeerStream {
    type ConnectInfo = ConnectedCaller;

    fn connect_info(&self) -> ConnectedCaller {
        self.caller.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
