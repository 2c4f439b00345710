//! Deadlines that hold on both clocks. Tokio's timers run on the monotonic clock, which
//! stops while the host is suspended: a sleep set for a `notAfter` one hour ahead still has
//! most of that hour to go when the host wakes past it. The wall clock keeps running
//! through a suspend, but can be stepped. A [`Deadline`] is reached when either clock says
//! so; waiting for one naps at most [`RECHECK`] at a time and reads both clocks again.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// The longest nap before the wall clock is read again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// An instant on both clocks, reached when either passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    monotonic: Instant,
    wall: SystemTime,
}

impl Deadline {
    /// `delay` from now.
    pub fn after(delay: Duration) -> Self {
        Self {
            monotonic: Instant::now() + delay,
            wall: SystemTime::now() + delay,
        }
    }

    /// The wall-clock instant `at` (e.g. an expiry), mirrored on the monotonic clock.
    pub fn at(at: SystemTime) -> Self {
        let delay = at.duration_since(SystemTime::now()).unwrap_or_default();
        Self {
            monotonic: Instant::now() + delay,
            wall: at,
        }
    }

    /// Whether either clock has reached the deadline.
    pub fn passed(&self) -> bool {
        self.left().is_zero()
    }

    /// The time left by whichever clock is further along.
    fn left(&self) -> Duration {
        let wall = self
            .wall
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        wall.min(self.monotonic.saturating_duration_since(Instant::now()))
    }

    /// Returns once the deadline has passed.
    pub async fn reached(self) {
        loop {
            let left = self.left();
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(RECHECK)).await;
        }
    }
}

/// Like [`Deadline::reached`]; never returns for `None`.
pub async fn reached(deadline: Option<Deadline>) {
    match deadline {
        Some(deadline) => deadline.reached().await,
        None => std::future::pending().await,
    }
}

/// How long to nap now towards the wall-clock instant `at`: until then, but at most
/// [`RECHECK`] (also when there is no `at`), so the caller reads the clock again soon.
pub fn nap_towards(at: Option<SystemTime>) -> Duration {
    at.map_or(RECHECK, |at| {
        at.duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(RECHECK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naps_are_capped_and_past_instants_are_now() {
        let now = SystemTime::now();
        assert_eq!(nap_towards(None), RECHECK);
        assert_eq!(nap_towards(Some(now + Duration::from_secs(3600))), RECHECK);
        assert_eq!(
            nap_towards(Some(now - Duration::from_secs(5))),
            Duration::ZERO
        );
        assert!(nap_towards(Some(now + Duration::from_millis(200))) <= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_wall_clock_instant_already_past_is_reached_at_once() {
        // As after a suspend: the monotonic mirror would still be an hour away.
        let deadline = Deadline {
            monotonic: Instant::now() + Duration::from_secs(3600),
            wall: SystemTime::now() - Duration::from_secs(1),
        };
        assert!(deadline.passed());
        tokio::time::timeout(Duration::from_millis(500), deadline.reached())
            .await
            .expect("reached at once");
    }

    #[tokio::test]
    async fn a_monotonic_deadline_is_reached_even_if_the_wall_clock_stepped_back() {
        let deadline = Deadline {
            monotonic: Instant::now() + Duration::from_millis(50),
            wall: SystemTime::now() + Duration::from_secs(3600),
        };
        assert!(!deadline.passed());
        tokio::time::timeout(Duration::from_secs(2), deadline.reached())
            .await
            .expect("reached by the monotonic clock");
    }
}
