//! Retry pacing shared by every long-lived upstream client: exponential backoff with
//! jitter.

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
