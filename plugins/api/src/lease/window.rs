//! When to refresh a credential: at a point within a window of its lifetime, drawn at
//! random so a fleet does not refresh in lockstep, and never sooner than a second from
//! now (a credential with no lifetime left must not turn into a busy loop).

use std::time::{Duration, SystemTime};

/// Never refresh sooner than this, whatever the lifetime.
pub const MIN_DELAY: Duration = Duration::from_secs(1);

/// The part of a credential's lifetime within which it is refreshed: between `earliest`
/// and `latest` (fractions of the lifetime, `0 < earliest <= latest < 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshWindow {
    earliest: f64,
    latest: f64,
}

impl RefreshWindow {
    /// Between `earliest` and `latest` of the lifetime (clamped into `[0, 1]`, and
    /// `latest` to no less than `earliest`).
    pub const fn between(earliest: f64, latest: f64) -> Self {
        let earliest = earliest.clamp(0.0, 1.0);
        Self {
            earliest,
            latest: latest.clamp(earliest, 1.0),
        }
    }

    /// Always at `fraction` of the lifetime.
    pub const fn at(fraction: f64) -> Self {
        Self::between(fraction, fraction)
    }

    /// The wall-clock instant to refresh a credential obtained at `issued_at` that
    /// expires at `expires_at`; `jitter` in `[0, 1)` picks the point within the window.
    pub fn refresh_at(
        &self,
        issued_at: SystemTime,
        expires_at: SystemTime,
        jitter: f64,
    ) -> SystemTime {
        let lifetime = expires_at.duration_since(issued_at).unwrap_or_default();
        let fraction = self.earliest + (self.latest - self.earliest) * jitter.clamp(0.0, 1.0);
        issued_at + lifetime.mul_f64(fraction)
    }

    /// The delay from `now` until the refresh ([`Self::refresh_at`]), at least
    /// [`MIN_DELAY`].
    pub fn delay(
        &self,
        issued_at: SystemTime,
        expires_at: SystemTime,
        now: SystemTime,
        jitter: f64,
    ) -> Duration {
        self.refresh_at(issued_at, expires_at, jitter)
            .duration_since(now)
            .unwrap_or_default()
            .max(MIN_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_within_the_window_and_never_in_a_busy_loop() {
        let window = RefreshWindow::between(0.60, 0.75);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let end = t0 + Duration::from_secs(100);
        assert_eq!(window.delay(t0, end, t0, 0.0), Duration::from_secs(60));
        assert_eq!(window.delay(t0, end, t0, 1.0), Duration::from_secs(75));
        assert_eq!(
            window.delay(t0, end, t0 + Duration::from_secs(10), 0.0),
            Duration::from_secs(50)
        );
        assert_eq!(window.delay(t0, end, end, 0.5), MIN_DELAY, "late: at once");
        assert_eq!(window.delay(t0, t0, t0, 0.5), MIN_DELAY, "no lifetime");
        let fixed = RefreshWindow::at(0.6);
        assert_eq!(fixed.delay(t0, end, t0, 0.9), Duration::from_secs(60));
        assert_eq!(
            RefreshWindow::between(0.8, 0.2),
            RefreshWindow::at(0.8),
            "a window cannot end before it starts"
        );
    }
}
