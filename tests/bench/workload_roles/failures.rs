//! Why exchanges failed in a round: the lease's WARN and ERROR lines in Steeple's log
//! (the first of each repeated error; repeats are DEBUG), counted by error code and
//! message. A round with failures keeps Steeple's audit trail and logs under
//! `target/workload_roles/`, since the round's directory goes with the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::world::NodeAgent;

/// Most distinct causes reported per round.
const MAX_CAUSES: usize = 5;

/// Distinct `code=… error=…` of the lease failures `log` holds, most frequent first, each
/// with its count.
pub fn causes(log: &str) -> Vec<(String, usize)> {
    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    let failures = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| l.contains(" lease="));
    for line in failures {
        let Some(from) = line.find("code=") else {
            continue;
        };
        let cause = &line[from..];
        let cause = cause
            .find(" retry_in_ms=")
            .map_or(cause, |end| &cause[..end]);
        *counted.entry(cause.to_owned()).or_default() += 1;
    }
    let mut causes: Vec<_> = counted.into_iter().collect();
    causes.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    causes.truncate(MAX_CAUSES);
    causes
}

/// Copies `agent`'s audit trail and logs to `target/workload_roles/<round>/`; returns
/// where, or `None` if nothing could be copied.
pub fn keep(agent: &NodeAgent, round: &str) -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let dir = target.join("workload_roles").join(round);
    std::fs::create_dir_all(&dir).ok()?;
    let audit = std::fs::copy(&agent.audit, dir.join("audit.jsonl")).is_ok();
    let logs = std::fs::write(dir.join("steeple.log"), agent.steeple.logs()).is_ok();
    let kept = audit || logs;
    kept.then_some(dir)
}
