//! The exchange loop on tokio's paused clock: single-flight, refresh ahead of expiry,
//! last good until expiry, recovery.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use steeple_plugin_api::{BoxFuture, SecretBytes};

use super::*;

#[derive(Debug, Clone, PartialEq)]
struct Token(SystemTime);

impl Expiring for Token {
    fn expires_at(&self) -> SystemTime {
        self.0
    }
}

/// An exchanger whose answers the test scripts (no peer needed in unit tests).
#[derive(Debug)]
struct ScriptedExchanger {
    calls: AtomicUsize,
    lifetime: Duration,
    failure: Mutex<Option<ExchangeErrorKind>>,
}

impl CredentialExchanger for ScriptedExchanger {
    type Credentials = Token;
    fn audience(&self) -> &str {
        "sts.amazonaws.com"
    }
    fn exchange<'a>(&'a self, jwt: &'a SecretBytes) -> BoxFuture<'a, Result<Token, ExchangeError>> {
        assert_eq!(jwt.expose(), b"jwt-for-sts.amazonaws.com");
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failure = *self.failure.lock().unwrap();
        let lifetime = self.lifetime;
        Box::pin(async move {
            match failure {
                Some(kind) => Err(ExchangeError::new(kind, "Scripted", "scripted failure")),
                None => Ok(Token(SystemTime::now() + lifetime)),
            }
        })
    }
}

#[derive(Debug)]
struct AudienceJwt;

impl JwtSvidSource for AudienceJwt {
    fn fetch<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<SecretBytes, ExchangeError>> {
        Box::pin(async move {
            Ok(SecretBytes::copy_from(
                format!("jwt-for-{audience}").as_bytes(),
            ))
        })
    }
}

fn start(
    lifetime: Duration,
) -> (
    Arc<ScriptedExchanger>,
    CredentialWatch<Token>,
    CancellationToken,
) {
    let exchanger = Arc::new(ScriptedExchanger {
        calls: AtomicUsize::new(0),
        lifetime,
        failure: Mutex::new(None),
    });
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let rx = spawn(
        "test".into(),
        exchanger.clone(),
        Arc::new(AudienceJwt),
        shutdown.clone(),
        &mut tasks,
    );
    tasks.detach_all();
    (exchanger, rx, shutdown)
}

#[tokio::test(start_paused = true)]
async fn a_thousand_consumers_cause_one_exchange_per_refresh_window() {
    let (exchanger, rx, shutdown) = start(Duration::from_secs(100));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let mut rx = rx.clone();
        readers.spawn(async move {
            let mut served = 0;
            for _ in 0..250 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                served += usize::from(rx.borrow_and_update().is_some());
            }
            served
        });
    }
    while let Some(served) = readers.join_next().await {
        assert_eq!(served.unwrap(), 250, "credentials were always there");
    }
    // Refreshes at 60–75 s of a 100 s lifetime: t=0 and 3–4 more in 250 s.
    let calls = exchanger.calls.load(Ordering::SeqCst);
    assert!((4..=5).contains(&calls), "{calls} exchanges");
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn cached_credentials_outlive_an_outage_until_expiry_then_recover() {
    let (exchanger, mut rx, shutdown) = start(Duration::from_secs(100));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rx.borrow_and_update().is_some());
    *exchanger.failure.lock().unwrap() = Some(ExchangeErrorKind::Transient);
    // The refresh at 60–75 s fails; the cached credentials stay until 100 s.
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert!(rx.borrow().is_some(), "last good served until expiry");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(rx.borrow().is_none(), "never served past expiry");
    let calls_while_down = exchanger.calls.load(Ordering::SeqCst);
    assert!(
        calls_while_down > 3,
        "retried with backoff: {calls_while_down}"
    );

    *exchanger.failure.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(rx.borrow().is_some(), "recovered within one backoff step");
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_fatal_error_is_retried_slowly() {
    let (exchanger, rx, shutdown) = start(Duration::from_secs(100));
    *exchanger.failure.lock().unwrap() = Some(ExchangeErrorKind::Fatal);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = exchanger.calls.load(Ordering::SeqCst);
    tokio::time::sleep(FATAL_RETRY * 3).await;
    let calls = exchanger.calls.load(Ordering::SeqCst) - first;
    assert!(calls <= 3, "{calls} retries in three fatal-retry periods");
    drop(rx);
    shutdown.cancel();
}
