//! Whether an SDS connection is in use. A connection is busy while it carries a stream
//! and idle from when its last stream ended or its last unary request was answered; a
//! connection idle for `sds.idle_timeout` is closed (see [`super::peer::PeerStream`]), so
//! a local process cannot keep hundreds of live but unused HTTP/2 connections open —
//! answering keepalive pings does not count as use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The use of one connection, shared by its reader and its requests.
#[derive(Debug)]
pub struct Activity {
    open_streams: AtomicUsize,
    last_used: Mutex<Instant>,
}

/// One open stream's hold on its connection: busy until dropped.
#[derive(Debug)]
pub struct InUse(Arc<Activity>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// A connection used just now, with no stream.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open_streams: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
        })
    }

    /// Marks a stream open until the returned guard drops.
    pub fn stream_opened(self: &Arc<Self>) -> InUse {
        self.open_streams.fetch_add(1, Ordering::AcqRel);
        InUse(self.clone())
    }

    /// Records a use now (a unary request).
    pub fn touch(&self) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// When the connection will have been idle for `timeout`, or `None` while a stream is
    /// open (then it cannot become idle before that stream ends).
    pub fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.open_streams.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(last + timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_use_and_not_while_a_stream_is_open() {
        let timeout = Duration::from_secs(60);
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(activity.idle_deadline(timeout), Some(start + timeout));

        tokio::time::advance(Duration::from_secs(5)).await;
        let stream = activity.stream_opened();
        let second = activity.stream_opened();
        assert_eq!(activity.idle_deadline(timeout), None);
        drop(stream);
        assert_eq!(
            activity.idle_deadline(timeout),
            None,
            "one stream still open"
        );

        tokio::time::advance(Duration::from_secs(5)).await;
        drop(second);
        assert_eq!(
            activity.idle_deadline(timeout),
            Some(start + Duration::from_secs(10) + timeout)
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        activity.touch();
        assert_eq!(
            activity.idle_deadline(timeout),
            Some(start + Duration::from_secs(11) + timeout)
        );
    }
}
