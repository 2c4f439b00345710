//! Leases on tokio's paused clock, against a scripted upstream (no peer in unit tests).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Hands out numbered credentials living `lifetime`, or fails while told to.
#[derive(Clone)]
struct Scripted {
    calls: Arc<AtomicUsize>,
    lifetime: Duration,
    failure: Arc<Mutex<Option<ExchangeErrorKind>>>,
    published: Arc<Mutex<Vec<Option<usize>>>>,
}

impl Scripted {
    fn new(lifetime: Duration) -> Self {
        Self {
            calls: Arc::default(),
            lifetime,
            failure: Arc::default(),
            published: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn fail(&self, kind: Option<ExchangeErrorKind>) {
        *self.failure.lock().unwrap() = kind;
    }

    fn last_published(&self) -> Option<Option<usize>> {
        self.published.lock().unwrap().last().copied()
    }
}

impl Upstream for Scripted {
    type Credential = usize;

    fn obtain(&self) -> BoxFuture<'_, Result<Obtained<usize>, ExchangeError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let failure = *self.failure.lock().unwrap();
        Box::pin(async move {
            match failure {
                Some(kind) => Err(ExchangeError::new(kind, "Scripted", "scripted failure")),
                None => Ok(Obtained {
                    credential: n,
                    issued_at: None,
                    expires_at: SystemTime::now() + self.lifetime,
                }),
            }
        })
    }

    fn publish(&self, credential: Option<usize>) {
        self.published.lock().unwrap().push(credential);
    }
}

fn settings(window: RefreshWindow) -> LeaseSettings {
    LeaseSettings::new("test", "scripted call", window)
}

#[tokio::test(start_paused = true)]
async fn refreshes_at_its_window_and_withdraws_at_expiry_without_a_successor() {
    let upstream = Scripted::new(Duration::from_secs(100));
    let shutdown = CancellationToken::new();
    tokio::spawn(run(
        upstream.clone(),
        settings(RefreshWindow::at(0.5)),
        shutdown.clone(),
    ));
    // Obtained at 0, 50 and 100 s: three calls by 120 s, the last one published.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(upstream.calls(), 3);
    assert_eq!(upstream.last_published(), Some(Some(2)));

    // From now on every refresh fails: the last credential stays until it expires
    // (at 200 s), then it is withdrawn.
    upstream.fail(Some(ExchangeErrorKind::Transient));
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert_eq!(
        upstream.last_published(),
        Some(Some(2)),
        "served until expiry"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(upstream.last_published(), Some(None), "withdrawn at expiry");
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_fatal_error_waits_its_own_retry_time() {
    let upstream = Scripted::new(Duration::from_secs(100));
    upstream.fail(Some(ExchangeErrorKind::Fatal));
    let mut slow = settings(RefreshWindow::at(0.5));
    slow.fatal_retry = Duration::from_secs(600);
    let shutdown = CancellationToken::new();
    tokio::spawn(run(upstream.clone(), slow, shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(1_199)).await;
    assert_eq!(upstream.calls(), 2, "at 0 and 600 s");
    upstream.fail(None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        upstream.last_published(),
        Some(Some(2)),
        "recovered at 1200 s"
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn refresh_now_cuts_the_wait_short() {
    let upstream = Scripted::new(Duration::from_secs(100));
    let now = Arc::new(Notify::new());
    let mut told = settings(RefreshWindow::at(0.5));
    told.refresh_now = Some(now.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(run(upstream.clone(), told, shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(upstream.calls(), 1);
    now.notify_one();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(upstream.calls(), 2, "obtained again at once, not at 50 s");
    assert_eq!(upstream.last_published(), Some(Some(1)));
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_set_runs_one_lease_per_key_while_it_is_held() {
    let shutdown = CancellationToken::new();
    let set: LeaseSet<&str, usize> = LeaseSet::new(&shutdown);
    let upstream = Scripted::new(Duration::from_secs(100));
    let start = || (upstream.clone(), settings(RefreshWindow::at(0.5)));

    let first = set.acquire("spiffe://example.org/a", start);
    let second = set.acquire("spiffe://example.org/a", unreachable_start);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(set.running(), 1);
    assert_eq!(upstream.calls(), 1, "one upstream call for both holders");
    assert_eq!(*second.credential().borrow(), Some(0));
    assert_eq!(second.key(), &"spiffe://example.org/a");

    drop(first);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(set.running(), 1, "still held");
    assert_eq!(upstream.calls(), 2, "and still refreshed");

    drop(second);
    assert_eq!(set.running(), 0);
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(upstream.calls(), 2, "stopped with its last holder");

    let again = set.acquire("spiffe://example.org/a", || {
        (upstream.clone(), settings(RefreshWindow::at(0.5)))
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*again.credential().borrow(), Some(2), "a new lease");
    shutdown.cancel();
}

/// For an `acquire` whose key already runs: its start is never called.
fn unreachable_start() -> (Scripted, LeaseSettings) {
    panic!("a second lease was started for a running key")
}

#[tokio::test(start_paused = true)]
async fn a_lingering_lease_outlives_its_last_holder_and_is_found_warm() {
    let shutdown = CancellationToken::new();
    let set: LeaseSet<&str, usize> = LeaseSet::new(&shutdown).with_linger(Duration::from_secs(600));
    let upstream = Scripted::new(Duration::from_secs(3600));
    let start = || (upstream.clone(), settings(RefreshWindow::at(0.5)));

    drop(set.acquire("a", start));
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(set.running(), 1, "lingers without holders");
    let back = set.acquire("a", unreachable_start);
    assert_eq!(
        *back.credential().borrow(),
        Some(0),
        "warm: no new upstream call"
    );
    assert_eq!(upstream.calls(), 1);
    drop(back);
    // The first linger timer (due at 600 s) must not stop the lease held again at 300 s:
    // the second one (due at 900 s) does.
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert_eq!(set.running(), 1, "the earlier timer saw the key held again");
    tokio::time::sleep(Duration::from_secs(250)).await;
    assert_eq!(
        set.running(),
        0,
        "stopped once a whole linger passed unheld"
    );
    assert_eq!(upstream.calls(), 1);
    shutdown.cancel();
}
