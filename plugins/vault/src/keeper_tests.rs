//! Upkeep decisions: when to renew, when to log in again, and the retry pacing.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn token(lease_s: u64, renewable: bool, max_ttl_reached: bool) -> VaultToken {
    let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
    VaultToken {
        token: SecretBytes::copy_from(b"s.token"),
        accessor: "acc".into(),
        lease: Duration::from_secs(lease_s),
        renewable,
        issued_at,
        expires_at: issued_at + Duration::from_secs(lease_s),
        max_ttl_reached,
        namespace: None,
    }
}

#[test]
fn renewable_tokens_renew_at_about_two_thirds_of_the_lease() {
    let t = token(300, true, false);
    let now = t.issued_at;
    assert_eq!(
        next_action(&t, now, 0.0),
        TokenAction::Renew {
            at: now + Duration::from_secs(186)
        }
    );
    assert_eq!(
        next_action(&t, now, 1.0).at(),
        now + Duration::from_secs(216)
    );
    let mid = next_action(&t, now, 0.5).at();
    assert!(mid > now + Duration::from_secs(186) && mid < now + Duration::from_secs(216));
}

#[test]
fn not_renewable_or_at_max_ttl_means_login_again_at_the_same_point() {
    for t in [token(90, false, false), token(90, true, true)] {
        let now = t.issued_at;
        assert!(
            matches!(next_action(&t, now, 0.0), TokenAction::Relogin { at } if at == now + Duration::from_millis(55_800)),
            "{t:?}"
        );
    }
}

#[test]
fn late_decisions_act_now_never_in_the_past() {
    let t = token(60, true, false);
    let late = t.issued_at + Duration::from_secs(59);
    assert_eq!(next_action(&t, late, 0.3), TokenAction::Renew { at: late });
    let expired = t.expires_at + Duration::from_secs(5);
    let relogin = token(60, false, false);
    assert_eq!(
        next_action(&relogin, expired, 0.3),
        TokenAction::Relogin { at: expired }
    );
    assert!(!t.is_valid_at(t.expires_at));
}

/// A stand-in for Vault answering every request with `status` and `body`; counts them.
async fn fake_vault(status: u16, body: &'static str) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            assert!(request.starts_with(b"GET /v1/auth/token/lookup-self "));
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (addr, hits)
}

/// A denial checker against `addr` for a fresh token, three resolvers' reports pending
/// on it.
fn checker_with_reports(
    addr: &str,
) -> (
    DenialChecker,
    DenialChecks,
    Vec<tokio::sync::oneshot::Receiver<TokenVerdict>>,
) {
    let client = crate::VaultClientConfig {
        addr: addr.into(),
        ..crate::VaultClientConfig::default()
    }
    .build()
    .unwrap();
    let login = crate::VaultJwtLogin::new(client, crate::VaultJwtLoginConfig::default());
    let mut current = token(3600, true, false);
    current.issued_at = SystemTime::now();
    current.expires_at = current.issued_at + current.lease;
    let (tx, _) = watch::channel(Some(current.clone()));
    let checker = DenialChecker {
        login: Arc::new(login),
        tokens: Arc::new(tx),
    };
    let mut checks = DenialChecks::default();
    let (mut denials, mut verdicts) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (reply, verdict) = tokio::sync::oneshot::channel();
        denials.push(Report {
            token: current.token.clone(),
            reply,
        });
        verdicts.push(verdict);
    }
    for report in denials {
        checks.accept(report, Some(&current.token));
    }
    (checker, checks, verdicts)
}

#[tokio::test]
async fn a_revoked_token_is_dropped_after_one_lookup_and_reports_say_replaced() {
    let (addr, hits) = fake_vault(403, r#"{"errors":["permission denied"]}"#).await;
    let (checker, mut checks, verdicts) = checker_with_reports(&addr);
    let mut published = checker.tokens.subscribe();
    assert!(checker.check(&mut checks).await, "log in now");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "one lookup for three reports"
    );
    assert!(published.borrow_and_update().is_none(), "no longer served");
    for verdict in verdicts {
        assert_eq!(verdict.await, Ok(TokenVerdict::Replaced));
    }
}

#[tokio::test]
async fn a_valid_token_is_kept_and_the_denial_is_the_policys() {
    let (addr, hits) = fake_vault(200, r#"{"data":{"accessor":"acc"}}"#).await;
    let (checker, mut checks, verdicts) = checker_with_reports(&addr);
    assert!(!checker.check(&mut checks).await);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(checker.tokens.borrow().is_some());
    for verdict in verdicts {
        assert_eq!(verdict.await, Ok(TokenVerdict::Valid));
    }
}

#[tokio::test]
async fn a_failed_check_neither_drops_the_token_nor_keeps_the_value() {
    let (addr, _) = fake_vault(503, r#"{"errors":["Vault is sealed"]}"#).await;
    let (checker, mut checks, verdicts) = checker_with_reports(&addr);
    assert!(!checker.check(&mut checks).await);
    assert!(checker.tokens.borrow().is_some());
    for verdict in verdicts {
        assert_eq!(verdict.await, Ok(TokenVerdict::Unknown));
    }
}
