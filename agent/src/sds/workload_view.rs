//! Delegated mode's side of an SDS request: the caller's own store, once SPIRE first
//! answered about it, and the JWT-SVIDs the request names, started on demand.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use crate::delegated::Workload;
use crate::store::names::JWT_SVID_PREFIX;
use crate::store::{OnDemand as _, Snapshot, Source};

/// How long a request waits for SPIRE's first answer about its caller (or for a JWT-SVID
/// it names) before it is answered from what is known.
const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The workload's own store once SPIRE first answered about it (or the wait ran out).
pub async fn first_answer(workload: &Workload) -> Arc<Snapshot> {
    wait_until(workload, |s| s.has_synced(&Source::X509Identity)).await
}

/// The workload's own store once the JWT-SVIDs among `names` are there too (or the wait
/// ran out); they are started now if they were not kept yet.
pub async fn with_jwts(workload: &Workload, names: &[&str]) -> Result<Arc<Snapshot>, Status> {
    workload.wanted(names).map_err(Status::resource_exhausted)?;
    let jwts: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with(JWT_SVID_PREFIX))
        .collect();
    Ok(wait_until(workload, |s| {
        s.has_synced(&Source::X509Identity) && jwts.iter().all(|n| s.get(n).is_some())
    })
    .await)
}

async fn wait_until(
    workload: &Workload,
    known: impl FnMut(&Arc<Snapshot>) -> bool,
) -> Arc<Snapshot> {
    let mut own = workload.store().subscribe();
    let _ = tokio::time::timeout(FIRST_ANSWER_WAIT, own.wait_for(known)).await;
    own.borrow().clone()
}
