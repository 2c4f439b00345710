//! When to refresh exchanged credentials: at a random point between 60 % and 75 % of
//! their lifetime, so a fleet does not refresh in lockstep and an outage has a quarter of
//! the lifetime or more to heal (the AWS SDK's own cache refreshes only seconds before
//! expiry).

use std::time::{Duration, SystemTime};

const EARLIEST: f64 = 0.60;
const LATEST: f64 = 0.75;
/// Never refresh more often than this, whatever the lifetime.
const MIN_DELAY: Duration = Duration::from_secs(1);

/// The delay from `now` until refreshing credentials obtained at `issued_at` that expire
/// at `expires_at`; `jitter` in `[0, 1)` picks the point within the window.
pub fn delay(
    issued_at: SystemTime,
    expires_at: SystemTime,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let lifetime = expires_at.duration_since(issued_at).unwrap_or_default();
    let fraction = EARLIEST + (LATEST - EARLIEST) * jitter.clamp(0.0, 1.0);
    let at = issued_at + lifetime.mul_f64(fraction);
    at.duration_since(now).unwrap_or_default().max(MIN_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_between_60_and_75_percent_of_the_lifetime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let end = t0 + Duration::from_secs(100);
        assert_eq!(delay(t0, end, t0, 0.0), Duration::from_secs(60));
        assert_eq!(delay(t0, end, t0, 1.0), Duration::from_secs(75));
        assert_eq!(
            delay(t0, end, t0 + Duration::from_secs(10), 0.0),
            Duration::from_secs(50)
        );
        assert_eq!(delay(t0, end, end, 0.5), MIN_DELAY, "late: refresh at once");
        assert_eq!(
            delay(t0, t0, t0, 0.5),
            MIN_DELAY,
            "no lifetime: no busy loop"
        );
    }
}
