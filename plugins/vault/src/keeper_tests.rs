//! Upkeep decisions: when to renew, when to log in again, and the retry pacing.

use steeple_plugin_api::SecretBytes;

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

#[test]
fn backoff_doubles_to_thirty_seconds_with_jitter_and_resets() {
    let mut b = Backoff::default();
    let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
    assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
    assert!(delays[1] >= Duration::from_secs(1) && delays[1] <= Duration::from_secs(2));
    for d in &delays[5..] {
        assert!(*d >= Duration::from_secs(15) && *d <= BACKOFF_MAX, "{d:?}");
    }
    b.reset();
    assert!(b.next_delay() <= Duration::from_secs(1));
}
