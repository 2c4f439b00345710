//! Retry pacing and log-noise control shared by the long-lived upstream clients.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter: each delay is drawn from `[d/2, d]` where `d`
/// doubles from `min` up to `max`; [`Backoff::reset`] after any success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `min`, capped at `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: min,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let floor = ceiling / 2;
        rand::rng().random_range(floor..=ceiling)
    }

    /// Back to the shortest delay.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

impl Default for Backoff {
    /// 1 s doubling to 30 s, as go-spiffe's watcher.
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// Logs the first occurrence of an error at WARN and identical repeats at DEBUG, so an
/// upstream that stays down does not flood the log.
#[derive(Debug, Default)]
pub struct RepeatFilter {
    last: Option<String>,
}

impl RepeatFilter {
    /// Logs `message` about `what`.
    pub fn warn(&mut self, what: &str, message: String) {
        if self.last.as_deref() == Some(message.as_str()) {
            tracing::debug!(%what, error = %message, "still failing");
        } else {
            tracing::warn!(%what, error = %message, "upstream call failed; retrying with backoff");
            self.last = Some(message);
        }
    }

    /// Forgets the last error (call on success) and says so if there was one.
    pub fn recovered(&mut self, what: &str) {
        if self.last.take().is_some() {
            tracing::info!(%what, "recovered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let d: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(500) && d[0] <= Duration::from_secs(1));
        assert!(d[4] >= Duration::from_secs(2) && d[4] <= Duration::from_secs(4));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
