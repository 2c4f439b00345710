//! Waiting on a workload's own store: for SPIRE's first answer about it, and for what a
//! request names of it on demand (JWT-SVIDs, its roles' credentials), started then. SDS
//! requests and the HTTP credential endpoints wait here before answering.

use std::sync::Arc;
use std::time::Duration;

use super::Workload;
use crate::store::{DemandRefused, OnDemand as _, Snapshot, Source};

/// How long a request waits for SPIRE's first answer about its caller (or for what it
/// names on demand) before it is answered from what is known.
const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(5);

impl Workload {
    /// The workload's own store once SPIRE first answered about it (or the wait ran out).
    pub async fn first_answer(&self) -> Arc<Snapshot> {
        self.wait_until(|s| s.has_synced(&Source::X509Identity))
            .await
    }

    /// The workload's own store once what `names` asks of it on demand is there too (or
    /// the wait ran out); it is started now if it was not kept yet.
    pub async fn with_demanded(&self, names: &[&str]) -> Result<Arc<Snapshot>, DemandRefused> {
        self.wanted(names)?;
        let demanded: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| self.serves_on_demand(n))
            .collect();
        Ok(self
            .wait_until(|s| {
                s.has_synced(&Source::X509Identity) && demanded.iter().all(|n| s.get(n).is_some())
            })
            .await)
    }

    async fn wait_until(&self, known: impl FnMut(&Arc<Snapshot>) -> bool) -> Arc<Snapshot> {
        let mut own = self.store().subscribe();
        let _ = tokio::time::timeout(FIRST_ANSWER_WAIT, own.wait_for(known)).await;
        own.borrow().clone()
    }
}
