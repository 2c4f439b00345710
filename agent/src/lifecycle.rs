//! How the agent's tasks live and end: a [`FatalSignal`] any component raises to stop the
//! agent with a reason, and [`TaskGroup`]s a reload stops and restarts together. Below
//! the supervisor and every component, so both can use it without importing each other.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How a component stops the agent with an error: the reason is kept for the exit
/// status, and shutdown begins.
#[derive(Debug, Clone)]
pub struct FatalSignal {
    reason: Arc<OnceLock<String>>,
    shutdown: CancellationToken,
}

impl FatalSignal {
    /// A signal that cancels `shutdown` when raised.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            reason: Arc::default(),
            shutdown: shutdown.clone(),
        }
    }

    /// Stops the agent; the first reason raised is the one reported.
    pub fn raise(&self, reason: String) {
        tracing::error!(reason = %reason, "stopping Steeple");
        let _ = self.reason.set(reason);
        self.shutdown.cancel();
    }

    /// The reason raised, if any.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// Tasks stopped together by their own token (a child of the agent's shutdown).
#[derive(Debug)]
pub struct TaskGroup {
    /// Stops the group.
    pub stop: CancellationToken,
    /// The group's tasks.
    pub tasks: JoinSet<()>,
}

/// How long a reload waits for the tasks it replaces to stop before aborting them.
const RELOAD_STOP_GRACE: Duration = Duration::from_secs(5);

impl TaskGroup {
    /// An empty group stopped with `shutdown` or on its own.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            stop: shutdown.child_token(),
            tasks: JoinSet::new(),
        }
    }

    /// Stops the group's tasks (aborting any still running after the grace period) and
    /// returns a fresh, empty group.
    pub async fn replace(&mut self, shutdown: &CancellationToken) -> &mut Self {
        self.stop.cancel();
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(RELOAD_STOP_GRACE, all_done)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
        *self = Self::new(shutdown);
        self
    }
}
