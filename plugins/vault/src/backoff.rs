//! Retry pacing for the token keeper: exponential backoff with jitter.

use std::time::Duration;

use rand::Rng as _;

/// Exponential backoff with jitter: each delay is drawn from `[d/2, d]`, `d` doubling
/// from 1 s to 30 s; reset after any success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    current: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Default for Backoff {
    fn default() -> Self {
        Self {
            current: BACKOFF_MIN,
        }
    }
}

impl Backoff {
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(BACKOFF_MAX);
        rand::rng().random_range(ceiling / 2..=ceiling)
    }

    pub(crate) fn reset(&mut self) {
        self.current = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
