//! Denial reports: coalescing, spacing of lookups, stale tokens, and what a resolver
//! makes of each verdict.

use steeple_plugin_api::ResolveError;

use super::*;
use crate::token::denial_error;

fn secret(text: &str) -> SecretBytes {
    SecretBytes::copy_from(text.as_bytes())
}

fn report(token: &str) -> (Report, oneshot::Receiver<TokenVerdict>) {
    let (reply, verdict) = oneshot::channel();
    let report = Report {
        token: secret(token),
        reply,
    };
    (report, verdict)
}

#[test]
fn concurrent_reports_for_the_current_token_share_one_lookup() {
    let mut checks = DenialChecks::default();
    let current = secret("s.current");
    let now = Instant::now();
    assert_eq!(
        checks.check_at(now),
        None,
        "nothing pending, nothing to check"
    );
    let mut verdicts = Vec::new();
    for _ in 0..3 {
        let (r, v) = report("s.current");
        checks.accept(r, Some(&current));
        verdicts.push(v);
    }
    assert_eq!(
        checks.check_at(now),
        Some(now),
        "the first lookup runs at once"
    );
    let batch = checks.start_lookup(now);
    assert_eq!(batch.len(), 3);
    assert_eq!(checks.check_at(now), None);
    answer_all(batch, TokenVerdict::Valid);
    for mut v in verdicts {
        assert_eq!(v.try_recv(), Ok(TokenVerdict::Valid));
    }
}

#[test]
fn lookups_are_spaced_and_never_reuse_an_older_verdict() {
    let mut checks = DenialChecks::default();
    let current = secret("s.current");
    let t0 = Instant::now();
    let (r, _v) = report("s.current");
    checks.accept(r, Some(&current));
    answer_all(checks.start_lookup(t0), TokenVerdict::Valid);

    // A report right after a lookup waits for the next one instead of being answered
    // from the last: the token may have been revoked since.
    let (r, mut v) = report("s.current");
    checks.accept(r, Some(&current));
    assert!(v.try_recv().is_err(), "no answer before its own lookup");
    let soon = t0 + Duration::from_secs(1);
    assert_eq!(checks.check_at(soon), Some(t0 + MIN_CHECK_INTERVAL));
    let late = t0 + MIN_CHECK_INTERVAL * 2;
    assert_eq!(checks.check_at(late), Some(late));
}

#[test]
fn reports_on_a_token_already_gone_are_answered_replaced_at_once() {
    let mut checks = DenialChecks::default();
    let (r, mut v) = report("s.old");
    checks.accept(r, Some(&secret("s.new")));
    assert_eq!(v.try_recv(), Ok(TokenVerdict::Replaced));
    let (r, mut v) = report("s.old");
    checks.accept(r, None);
    assert_eq!(v.try_recv(), Ok(TokenVerdict::Replaced));
    assert_eq!(checks.check_at(Instant::now()), None, "no lookup for them");

    // Pending on a token the keeper then replaced (renewal found it dead, new login).
    let old = secret("s.old");
    let (r, mut v) = report("s.old");
    checks.accept(r, Some(&old));
    checks.answer_stale(Some(&old));
    assert!(v.try_recv().is_err(), "still the current token");
    checks.answer_stale(Some(&secret("s.new")));
    assert_eq!(v.try_recv(), Ok(TokenVerdict::Replaced));
    assert_eq!(checks.check_at(Instant::now()), None);
}

#[test]
fn lookup_driven_logins_are_spaced() {
    let mut checks = DenialChecks::default();
    let t0 = Instant::now();
    assert!(checks.may_relogin(t0));
    assert!(!checks.may_relogin(t0 + Duration::from_secs(5)));
    assert!(checks.may_relogin(t0 + RELOGIN_SPACING));
}

#[tokio::test(start_paused = true)]
async fn reporters_get_pending_from_a_busy_keeper_and_unknown_from_none() {
    let (denials, mut inbox) = TokenDenials::channel();
    let token = secret("s.token");
    let started = Instant::now();
    // The keeper holds the report but does not answer in time.
    let (verdict, held) = tokio::join!(denials.report(&token), inbox.recv());
    assert_eq!(verdict, TokenVerdict::Pending);
    assert_eq!(started.elapsed(), VERDICT_WAIT);
    assert!(held.is_some_and(|r| r.token == token));

    let answering = tokio::spawn(async move {
        let report = inbox.recv().await?;
        report.answer(TokenVerdict::Replaced);
        Some(inbox)
    });
    assert_eq!(denials.report(&token).await, TokenVerdict::Replaced);
    drop(answering.await);
    assert_eq!(
        denials.report(&token).await,
        TokenVerdict::Unknown,
        "the keeper is gone"
    );
    assert!(format!("{denials:?}").contains("keeper_running: false"));
}

#[tokio::test]
async fn a_plain_channel_has_no_keeper_to_ask() {
    let (_tx, rx) = watch::channel(None::<VaultToken>);
    assert_eq!(rx.denied(&secret("s.x")).await, TokenVerdict::Unknown);
}

#[test]
fn only_a_token_being_replaced_keeps_the_last_good_value() {
    let policy = || ResolveError::Upstream("permission denied on secret/app".into());
    for verdict in [TokenVerdict::Replaced, TokenVerdict::Pending] {
        let e = denial_error(verdict, "secret/app", policy());
        assert!(e.is_retryable(), "{verdict:?}: {e}");
        assert!(e.to_string().contains("secret/app"), "{e}");
        assert!(verdict.retry_soon());
    }
    for verdict in [TokenVerdict::Valid, TokenVerdict::Unknown] {
        assert_eq!(denial_error(verdict, "secret/app", policy()), policy());
        assert!(!verdict.retry_soon());
    }
}
