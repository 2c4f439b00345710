//! A fault injector, not a peer: a Unix-socket proxy put between Envoy and Steeple's SDS
//! socket that forwards bytes both ways untouched and, on a schedule, severs every open
//! connection at once (both halves dropped), as a flapping sidecar hop would. Envoy sees
//! its SDS stream die and must re-subscribe; Steeple sees the stream vanish mid-flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutStats {
    /// Connections accepted from the downstream side (Envoy).
    pub accepted: u64,
    /// Connections opened to the upstream side (Steeple) for them.
    pub upstream_connected: u64,
    /// Connections open right now (as of the proxy's last event).
    pub open: u64,
    /// Scheduled cuts that severed at least one connection.
    pub cuts: u64,
    /// Scheduled cuts that found no connection open: the downstream had not reconnected
    /// since the previous cut.
    pub idle_cuts: u64,
    /// Connections severed by cuts, in total.
    pub severed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    upstream_connected: AtomicU64,
    open: AtomicU64,
    cuts: AtomicU64,
    idle_cuts: AtomicU64,
    severed: AtomicU64,
}

/// The running proxy. It only forwards until [`CuttingProxy::cut_every`] is called.
/// Dropping it severs everything, stops listening and removes its socket.
#[derive(Debug)]
pub struct CuttingProxy {
    socket: PathBuf,
    counters: Arc<Counters>,
    schedule: watch::Sender<Option<Duration>>,
    task: JoinHandle<()>,
}

impl CuttingProxy {
    /// Listens on `socket` and forwards each connection to a new connection to
    /// `upstream`. Call from within a tokio runtime.
    pub fn start(socket: &Path, upstream: &Path) -> anyhow::Result<Self> {
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("binding the cutting proxy to {}", socket.display()))?;
        let counters = Arc::new(Counters::default());
        let (schedule, schedule_rx) = watch::channel(None);
        let task = tokio::spawn(serve(
            listener,
            upstream.to_owned(),
            Arc::clone(&counters),
            schedule_rx,
        ));
        Ok(Self {
            socket: socket.to_owned(),
            counters,
            schedule,
            task,
        })
    }

    /// The socket to point Envoy's SDS cluster at.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// From now on, every `interval`, severs every open connection.
    pub fn cut_every(&self, interval: Duration) {
        self.schedule.send_replace(Some(interval));
    }

    /// Stops cutting; connections are forwarded for as long as they last.
    pub fn stop_cutting(&self) {
        self.schedule.send_replace(None);
    }

    /// The counters so far.
    pub fn stats(&self) -> CutStats {
        let c = &self.counters;
        CutStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            upstream_connected: c.upstream_connected.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            cuts: c.cuts.load(Ordering::Relaxed),
            idle_cuts: c.idle_cuts.load(Ordering::Relaxed),
            severed: c.severed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        // Aborting the task drops its JoinSet, which aborts every forwarding task.
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The proxy's one task: accepts, reaps finished connections, and cuts on schedule. The
/// forwarding tasks live in a `JoinSet` it owns, so aborting them drops both halves.
async fn serve(
    listener: UnixListener,
    upstream: PathBuf,
    counters: Arc<Counters>,
    mut schedule: watch::Receiver<Option<Duration>>,
) {
    let mut connections = JoinSet::new();
    let mut next_cut: Option<Instant> = None;
    loop {
        let cut_at = next_cut.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((downstream, _)) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    let upstream = upstream.clone();
                    connections.spawn(forward(downstream, upstream, Arc::clone(&counters)));
                }
                // Transient (e.g. out of descriptors): try again shortly.
                Err(e) => {
                    eprintln!("cutting proxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = schedule.changed() => {
                if changed.is_err() {
                    return;
                }
                next_cut = schedule.borrow_and_update().map(|every| Instant::now() + every);
            }
            () = tokio::time::sleep_until(cut_at), if next_cut.is_some() => {
                cut(&mut connections, &counters).await;
                next_cut = schedule.borrow().map(|every| Instant::now() + every);
            }
        }
        counters
            .open
            .store(connections.len() as u64, Ordering::Relaxed);
    }
}

/// Severs every open connection and waits until each is dropped.
async fn cut(connections: &mut JoinSet<()>, counters: &Counters) {
    // Connections that ended on their own are not severed by this cut.
    while connections.try_join_next().is_some() {}
    let open = connections.len() as u64;
    if open == 0 {
        counters.idle_cuts.fetch_add(1, Ordering::Relaxed);
        return;
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    counters.cuts.fetch_add(1, Ordering::Relaxed);
    counters.severed.fetch_add(open, Ordering::Relaxed);
}

/// Copies bytes both ways until either side closes (or the task is aborted by a cut).
async fn forward(mut downstream: UnixStream, upstream: PathBuf, counters: Arc<Counters>) {
    let Ok(mut upstream) = UnixStream::connect(&upstream).await else {
        // Dropping `downstream` tells the client, as a refused connection would.
        return;
    };
    counters.upstream_connected.fetch_add(1, Ordering::Relaxed);
    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
}
