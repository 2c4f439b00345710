//! Which of an SDS stream's waits woke it. A stream waits on four things at once — a store
//! change, the client's next message, shutdown and a reloaded policy — and each is polled
//! with a waker of its own that notes it fired before it wakes the stream's task. A turn of
//! the stream's loop then polls only the waits that fired (or that were ready last time
//! and must be polled again to wait anew), not all four: polling a `watch` or `Notify`
//! wait that has not fired takes its waiter list's lock, shared by every stream, only to
//! refresh the waker it already holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// One of a stream's waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A change of the stores the caller sees.
    Store,
    /// The client's next message.
    Client,
    /// The agent shutting down.
    Shutdown,
    /// A reloaded policy.
    Policy,
}

impl Wait {
    const ALL: [Self; 4] = [Self::Store, Self::Client, Self::Shutdown, Self::Policy];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The waits of one stream: which are due for a poll, and a waker for each.
pub struct Wakes {
    fired: Arc<Fired>,
    wakers: [Waker; 4],
    /// Waits to poll in this turn: fired, or ready when last polled.
    due: u8,
}

/// What the waits' wakers share.
#[derive(Default)]
struct Fired {
    /// The waits that fired since the task last looked.
    bits: AtomicU8,
    /// The stream's task, woken when any of them fires.
    task: AtomicWaker,
}

/// The waker one wait is polled with.
struct WaitWaker {
    fired: Arc<Fired>,
    bit: u8,
}

impl Wake for WaitWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.bits.fetch_or(self.bit, Ordering::AcqRel);
        self.fired.task.wake();
    }
}

impl Wakes {
    /// Every wait due: none has been polled yet, so none is waiting.
    pub fn new() -> Self {
        let fired = Arc::new(Fired::default());
        let wakers = Wait::ALL.map(|wait| {
            Waker::from(Arc::new(WaitWaker {
                fired: fired.clone(),
                bit: wait.bit(),
            }))
        });
        Self {
            fired,
            wakers,
            due: u8::MAX,
        }
    }

    /// Starts a turn for the task polling with `cx`: it is the one woken from now on, and
    /// the waits that fired since the last turn are due.
    pub fn begin(&mut self, cx: &Context<'_>) {
        self.fired.task.register(cx.waker());
        // After registering: a wait firing from here on wakes this task again.
        self.due |= self.fired.bits.swap(0, Ordering::AcqRel);
    }

    /// Polls `wait` with `poll` (given the wait's own context) if it is due in this turn,
    /// and notes the outcome; `Pending` without polling if it is not due.
    pub fn poll<T>(
        &mut self,
        wait: Wait,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !self.is_due(wait) {
            return Poll::Pending;
        }
        let polled = poll(&mut self.context(wait));
        self.polled(wait, &polled);
        polled
    }

    /// Whether `wait` should be polled in this turn.
    fn is_due(&self, wait: Wait) -> bool {
        self.due & wait.bit() != 0
    }

    /// The context to poll `wait` with.
    fn context(&self, wait: Wait) -> Context<'_> {
        Context::from_waker(&self.wakers[wait as usize])
    }

    /// Notes how polling `wait` went: pending, it waits for its waker; ready, it stays due,
    /// since only a new poll makes it wait again.
    fn polled<T>(&mut self, wait: Wait, poll: &Poll<T>) {
        if poll.is_pending() {
            self.due &= !wait.bit();
        }
    }
}

impl std::fmt::Debug for Wakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakes")
            .field("due", &self.due)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes of a task.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn only_waits_that_fired_or_were_ready_are_due() {
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let cx = Context::from_waker(&waker);
        let mut wakes = Wakes::new();
        wakes.begin(&cx);
        assert!(Wait::ALL.iter().all(|w| wakes.is_due(*w)), "at first, all");
        for wait in Wait::ALL {
            wakes.polled(wait, &Poll::<()>::Pending);
        }
        wakes.begin(&cx);
        assert!(!Wait::ALL.iter().any(|w| wakes.is_due(*w)), "none fired");
        let skipped = wakes.poll(Wait::Store, |_| -> Poll<()> {
            unreachable!("a wait not due is not polled")
        });
        assert!(skipped.is_pending());

        // The client's wait fires: the task is woken, and only that wait is due.
        wakes.context(Wait::Client).waker().wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        wakes.begin(&cx);
        assert!(wakes.is_due(Wait::Client));
        assert!(!wakes.is_due(Wait::Store) && !wakes.is_due(Wait::Policy));

        // Ready, it stays due (to wait anew); pending, it is not due until it fires.
        assert!(wakes.poll(Wait::Client, |_| Poll::Ready(())).is_ready());
        wakes.begin(&cx);
        assert!(wakes.is_due(Wait::Client));
        assert!(
            wakes
                .poll(Wait::Client, |_| Poll::<()>::Pending)
                .is_pending()
        );
        wakes.begin(&cx);
        assert!(!wakes.is_due(Wait::Client));
    }

    #[test]
    fn a_wait_firing_twice_before_the_task_runs_wakes_it_and_is_due_once() {
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let cx = Context::from_waker(&waker);
        let mut wakes = Wakes::new();
        wakes.begin(&cx);
        for wait in Wait::ALL {
            wakes.polled(wait, &Poll::<()>::Pending);
        }
        let store = wakes.context(Wait::Store).waker().clone();
        store.wake_by_ref();
        store.wake();
        assert!(task.0.load(Ordering::SeqCst) >= 1);
        wakes.begin(&cx);
        assert!(wakes.is_due(Wait::Store));
        assert!(!wakes.is_due(Wait::Shutdown));
    }
}
