//! SDS connections with their caller identified once, when admitted: the Unix peer
//! credentials and the `/proc` facts of the connecting process, shared by every request
//! on the connection (each request still checks that the process runs). A connection
//! holds its place in the connection counts until it closes, and is closed if it sends
//! nothing (not even the HTTP/2 preface) within the handshake timeout, or once it has
//! carried no request for the idle timeout ([`super::activity`]).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Sleep;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Connected;

use super::activity::Activity;
use super::admission::{Admission, Slot, Timeouts};
use crate::authz::Caller;

/// The caller of a connection and the connection's use, as tonic hands them to every
/// request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectedCaller {
    /// Who connected.
    pub caller: Arc<Caller>,
    /// Streams open on the connection and its last use.
    pub activity: Arc<Activity>,
}

/// An admitted Unix stream and its caller.
#[derive(Debug)]
pub struct PeerStream {
    stream: UnixStream,
    caller: ConnectedCaller,
    /// Armed until the first byte arrives.
    handshake: Option<Pin<Box<Sleep>>>,
    /// Fires at the earliest moment the connection may have become idle.
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    _slot: Slot,
}

impl PeerStream {
    /// `stream` from `caller`, counted in `slot`, closed if silent or idle for `timeouts`.
    pub fn new(stream: UnixStream, caller: Arc<Caller>, slot: Slot, timeouts: Timeouts) -> Self {
        Self {
            stream,
            caller: ConnectedCaller {
                caller,
                activity: Activity::new(),
            },
            handshake: Some(Box::pin(tokio::time::sleep(timeouts.handshake))),
            idle: Box::pin(tokio::time::sleep(timeouts.idle)),
            idle_timeout: timeouts.idle,
            _slot: slot,
        }
    }

    /// Whether the connection has been idle for the idle timeout; otherwise arms the idle
    /// timer (and registers `cx` with it) for the next moment it may have been.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle.as_mut().poll(cx).is_ready() {
            let now = tokio::time::Instant::now();
            match self.caller.activity.idle_deadline(self.idle_timeout) {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => self.idle.as_mut().reset(deadline),
                None => self.idle.as_mut().reset(now + self.idle_timeout),
            }
        }
        false
    }
}

/// The connections of `listener` that `admission` lets in (the others are closed as they
/// are accepted).
pub fn incoming(
    listener: UnixListener,
    admission: Arc<Admission>,
) -> impl Stream<Item = io::Result<PeerStream>> {
    UnixListenerStream::new(listener).filter_map(move |accepted| {
        let admitted = match accepted {
            Ok(stream) => admission.admit(&stream).map(|(caller, slot)| {
                Ok(PeerStream::new(stream, caller, slot, admission.timeouts()))
            }),
            Err(e) => Some(Err(e)),
        };
        std::future::ready(admitted)
    })
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
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Some(deadline) = self.handshake.as_mut() {
            if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                self.handshake = None;
            } else if read.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nothing received within sds.handshake_timeout",
                )));
            }
        }
        if read.is_pending() && self.idle_expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within sds.idle_timeout",
            )));
        }
        read
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
