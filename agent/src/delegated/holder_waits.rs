//! Leases waiting for a holder of their identity. A workload's role credentials are
//! exchanged for a JWT-SVID that SPIRE issues only for a live, attested process holding
//! that identity; when none is followed (every process of the workload between two
//! polls), the lease's attempt fails and it would wait out its backoff — up to 30 s —
//! even after a process of the identity came back and is asking. So such a lease says
//! it is waiting, and the first subscription to bring that identity in again tells it to
//! retry at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Notify;

/// One lease's wait for a holder of its identity.
#[derive(Debug)]
pub struct HolderWait {
    /// Set while the lease's last attempt found no holder.
    waiting: AtomicBool,
    /// The lease's "obtain now" signal.
    retry_now: Arc<Notify>,
}

impl HolderWait {
    /// Marks the lease as waiting; called before looking for a holder, so one arriving
    /// meanwhile is not missed.
    pub fn begin(&self) {
        self.waiting.store(true, Ordering::SeqCst);
    }

    /// A holder was found: no longer waiting.
    pub fn end(&self) {
        self.waiting.store(false, Ordering::SeqCst);
    }
}

/// Every lease waiting (or that may come to wait) for a holder, by SPIFFE ID.
#[derive(Debug, Default)]
pub struct HolderWaits {
    by_id: Mutex<HashMap<String, Vec<Weak<HolderWait>>>>,
}

impl HolderWaits {
    /// Registers a lease of `spiffe_id` whose retry signal is `retry_now`; it stays
    /// registered while the returned value lives.
    pub fn register(&self, spiffe_id: &str, retry_now: &Arc<Notify>) -> Arc<HolderWait> {
        let wait = Arc::new(HolderWait {
            waiting: AtomicBool::new(false),
            retry_now: retry_now.clone(),
        });
        let mut by_id = self.lock();
        by_id.retain(|_, waits| {
            waits.retain(|w| w.strong_count() > 0);
            !waits.is_empty()
        });
        by_id
            .entry(spiffe_id.to_owned())
            .or_default()
            .push(Arc::downgrade(&wait));
        wait
    }

    /// A followed workload now holds `spiffe_ids`: every lease of them that is waiting
    /// retries now.
    pub fn arrived<'a>(&self, spiffe_ids: impl IntoIterator<Item = &'a str>) {
        let by_id = self.lock();
        if by_id.is_empty() {
            return;
        }
        for id in spiffe_ids {
            for wait in by_id
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(Weak::upgrade)
            {
                if wait.waiting.swap(false, Ordering::SeqCst) {
                    wait.retry_now.notify_one();
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Weak<HolderWait>>>> {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woken(notify: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(50), notify.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn only_a_waiting_lease_of_the_identity_is_told_to_retry() {
        let waits = HolderWaits::default();
        let (web_retry, db_retry) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let web = waits.register("spiffe://td/web", &web_retry);
        let db = waits.register("spiffe://td/db", &db_retry);

        // Not waiting: a healthy lease is never cut short.
        waits.arrived(["spiffe://td/web"]);
        assert!(!woken(&web_retry).await);

        web.begin();
        db.begin();
        waits.arrived(["spiffe://td/web"]);
        assert!(woken(&web_retry).await);
        assert!(!woken(&db_retry).await, "another identity's lease waits on");

        // Told once: the next arrival finds it no longer waiting.
        waits.arrived(["spiffe://td/web"]);
        assert!(!woken(&web_retry).await);

        db.end();
        waits.arrived(["spiffe://td/db"]);
        assert!(!woken(&db_retry).await, "found a holder itself");
    }

    #[tokio::test]
    async fn a_finished_lease_is_forgotten() {
        let waits = HolderWaits::default();
        let retry = Arc::new(Notify::new());
        drop(waits.register("spiffe://td/web", &retry));
        let _other = waits.register("spiffe://td/db", &retry);
        assert!(!waits.lock().contains_key("spiffe://td/web"));
    }
}
