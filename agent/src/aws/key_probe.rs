//! `[aws] probe_keys`: `DescribeKey` on every KMS key the envelopes name, as soon as
//! credentials exist. Keys that fail in the first round stop the agent with every failing
//! key named (fail fast, before anything depends on them); a key that appears later and
//! fails is an ERROR event, and its envelopes report their own errors when resolved.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use steeple_plugin_api::{AwsCredentials, Provider};
use steeple_plugin_aws::KmsEnvelopeResolver;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::envelopes::RowSets;
use crate::exchange::CredentialWatch;
use crate::lifecycle::FatalSignal;

/// Probes keys until `shutdown` (see the module docs).
pub async fn run(
    kms: Arc<KmsEnvelopeResolver>,
    mut credentials: CredentialWatch<AwsCredentials>,
    mut rows: watch::Receiver<RowSets>,
    fatal: FatalSignal,
    shutdown: CancellationToken,
) {
    while credentials.borrow_and_update().is_none() {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = credentials.changed() => if changed.is_err() { return },
        }
    }
    let mut probed: HashSet<String> = HashSet::new();
    let mut first_round = true;
    loop {
        let keys = kms_keys(&rows.borrow_and_update());
        let mut failures = Vec::new();
        for key in &keys {
            if !probed.insert(key.clone()) {
                continue;
            }
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = kms.describe_key(key) => outcome,
            };
            match outcome {
                Ok(key_arn) => {
                    tracing::info!(key = %key, key_arn = %key_arn, "KMS key probe passed")
                }
                Err(e) => {
                    tracing::error!(key = %key, error = %e, "KMS key probe failed");
                    failures.push(format!("KMS key {key}: {e}"));
                }
            }
        }
        if first_round && !failures.is_empty() {
            fatal.raise(format!("aws.probe_keys: {}", failures.join("; ")));
            return;
        }
        first_round &= keys.is_empty();
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = rows.changed() => if changed.is_err() { return },
        }
    }
}

/// The distinct key ids of every `kms_envelope` row.
pub fn kms_keys(sets: &RowSets) -> BTreeSet<String> {
    sets.values()
        .flat_map(|rows| rows.iter())
        .filter(|row| row.provider == Provider::KmsEnvelope.as_str())
        .map(|row| row.key_id.clone())
        .collect()
}
