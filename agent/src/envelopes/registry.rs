//! The registry: keeps one slot per logical path, asks the envelope's provider to resolve
//! it when it is new, changed or due, and writes what resolved into the store.
//!
//! Fail closed, last good wins: a refusal (bad row, allowlist, context mismatch) removes
//! the secret and is reported; an unavailable upstream keeps the last good plaintext and
//! retries with backoff. Other envelopes are never affected.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use steeple_plugin_api::lease::Backoff;
use steeple_plugin_api::{
    EnvelopeResolver, EnvelopeRow, Provider, ResolveError, SecretBytes, check_path_binding,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RowSets;
use super::scope::Scope;
use crate::metrics::metrics;
use crate::store::names::ClaimedNames;
use crate::store::{Secret, SecretStore, Source};

/// The store source the registry writes resolved envelopes under.
pub const SOURCE: Source = Source::Envelopes;
/// Envelopes resolved at once.
const CONCURRENCY: usize = 16;
/// Longest one resolution may take before it counts as unavailable.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the registry behaves.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Re-resolve every envelope this often.
    pub refresh_interval: Duration,
    /// Per-provider overrides of `refresh_interval` (`vault_delegate` follows
    /// `vault.kv_refresh_interval`).
    pub provider_refresh: HashMap<Provider, Duration>,
    /// Largest decoded ciphertext accepted.
    pub max_ciphertext_bytes: usize,
    /// Logical path → SDS name.
    pub aliases: BTreeMap<String, String>,
    /// Names that belong to other producers.
    pub reserved: ClaimedNames,
    /// Refuse direct KMS / transit rows whose logical path is not bound in their context.
    pub require_path_binding: bool,
    /// How an operator turns on a provider that is off (the sides know; the registry
    /// only repeats it in the row's error).
    pub how_to_enable: fn(Provider) -> &'static str,
}

impl RegistrySettings {
    /// How often envelopes of `provider` (the row's wire name) are resolved again.
    pub fn refresh_for(&self, provider: &str) -> Duration {
        Provider::parse(provider)
            .and_then(|p| self.provider_refresh.get(&p).copied())
            .unwrap_or(self.refresh_interval)
    }
}

/// Why an envelope is not served right now (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The row itself is invalid.
    Invalid(String),
    /// No resolver for its provider is configured.
    ProviderOff(Provider),
    /// The provider refused or failed.
    Resolve(ResolveError),
}

#[derive(Debug)]
struct Slot {
    row: EnvelopeRow,
    name: String,
    value: Option<SecretBytes>,
    /// The row changed since `value` was resolved: a failure must not keep it.
    stale: bool,
    due: Option<Instant>,
    backoff: Backoff,
    problem: Option<Problem>,
}

/// Resolves envelopes into the store until `shutdown`.
#[derive(Debug)]
pub struct Registry {
    resolvers: HashMap<Provider, Arc<dyn EnvelopeResolver>>,
    settings: RegistrySettings,
    store: Arc<SecretStore>,
    slots: BTreeMap<String, Slot>,
    scope: Scope,
    /// Where the SDS names of the rows in scope could be are published (a workload
    /// identity's registry: what its workloads may wait for).
    known: Option<watch::Sender<std::collections::BTreeSet<String>>>,
}

impl Registry {
    /// A registry resolving with `resolvers` into `store`.
    pub fn new(
        resolvers: Vec<Arc<dyn EnvelopeResolver>>,
        settings: RegistrySettings,
        store: Arc<SecretStore>,
    ) -> Self {
        Self {
            resolvers: resolvers.into_iter().map(|r| (r.provider(), r)).collect(),
            settings,
            store,
            slots: BTreeMap::new(),
            scope: Scope::default(),
            known: None,
        }
    }

    /// The same registry resolving only what `scope` covers; the SDS names of every row
    /// (whatever its scope) published into `known` when given.
    #[must_use]
    pub fn scoped(
        mut self,
        scope: Scope,
        known: Option<watch::Sender<std::collections::BTreeSet<String>>>,
    ) -> Self {
        self.scope = scope;
        self.known = known;
        self
    }

    /// Runs until `shutdown`, following `rows` (and the wanted names of its scope).
    pub async fn run(mut self, mut rows: watch::Receiver<RowSets>, shutdown: CancellationToken) {
        // Its own receiver: it marks each change of the wanted names seen as it wakes.
        let mut scope = self.scope.clone();
        loop {
            let sets = rows.borrow_and_update().clone();
            self.sync_rows(&sets);
            self.publish_known();
            self.resolve_due().await;
            self.publish();
            let next_due = self
                .slots
                .values()
                .filter(|s| self.in_scope(s))
                .filter_map(|s| s.due)
                .min();
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = rows.changed() => if changed.is_err() { return },
                changed = scope.changed() => if changed.is_err() { return },
                () = sleep_until(next_due) => {}
            }
        }
    }

    fn in_scope(&self, slot: &Slot) -> bool {
        self.scope.covers(&slot.row.provider, &slot.name)
    }

    /// Makes the slots match the rows: new and changed rows become due now.
    ///
    /// Sources are taken in [`SOURCE_PRECEDENCE`] order, so on a duplicate logical path
    /// the operator's file row wins over a control-plane row (which could otherwise roll a
    /// secret back or withdraw it), with an ERROR naming both sources. A row whose logical
    /// path is the SDS name an alias maps another path to is refused: it would take that
    /// name over.
    pub fn sync_rows(&mut self, sets: &RowSets) {
        let mut wanted: BTreeMap<String, (&str, &EnvelopeRow)> = BTreeMap::new();
        for (source, rows) in by_precedence(sets) {
            for row in rows.iter() {
                let path = &row.logical_path;
                if let Some((first, _)) = wanted.get(path) {
                    tracing::error!(logical_path = %path, used = first, ignored = source, "duplicate logical_path; the row of the first source is used");
                    continue;
                }
                if !self.settings.aliases.contains_key(path)
                    && let Some((aliased, _)) =
                        self.settings.aliases.iter().find(|(_, name)| *name == path)
                {
                    tracing::error!(logical_path = %path, source, alias_of = %aliased, "envelope refused; not served: its logical_path is the SDS name [envelope_aliases] gives another path");
                    continue;
                }
                wanted.insert(path.clone(), (source, row));
            }
        }
        let wanted: BTreeMap<String, &EnvelopeRow> =
            wanted.into_iter().map(|(p, (_, row))| (p, row)).collect();
        self.slots.retain(|path, _| wanted.contains_key(path));
        for (path, row) in wanted {
            let name = self
                .settings
                .aliases
                .get(&path)
                .cloned()
                .unwrap_or_else(|| path.clone());
            match self.slots.get_mut(&path) {
                Some(slot) if slot.row == *row && slot.name == name => {}
                Some(slot) => {
                    slot.row = row.clone();
                    slot.name = name;
                    slot.stale = true;
                    slot.due = Some(Instant::now());
                    slot.backoff.reset();
                }
                None => {
                    let slot = Slot {
                        row: row.clone(),
                        name,
                        value: None,
                        stale: false,
                        due: Some(Instant::now()),
                        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
                        problem: None,
                    };
                    self.slots.insert(path, slot);
                }
            }
        }
    }

    /// Takes `sets` in before the registry runs, publishing the names it knows.
    pub fn prime(&mut self, sets: &RowSets) {
        self.sync_rows(sets);
        self.publish_known();
    }

    /// Publishes the SDS names of the rows (for a workload identity's registry).
    fn publish_known(&self) {
        if let Some(known) = &self.known {
            let names = self.slots.values().map(|s| s.name.clone()).collect();
            known.send_if_modified(|current| {
                let changed = *current != names;
                *current = names;
                changed
            });
        }
    }

    /// Resolves every slot that is due.
    pub async fn resolve_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, EnvelopeRow, String)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.due.is_some_and(|d| d <= now) && self.in_scope(s))
            .map(|(p, s)| (p.clone(), s.row.clone(), s.name.clone()))
            .collect();
        let this = &*self;
        let outcomes: Vec<(String, Result<SecretBytes, Problem>)> = futures::stream::iter(due)
            .map(|(path, row, name)| async move { (path, this.resolve_one(&row, &name).await) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let identity = self.scope.identity();
        for (path, outcome) in outcomes {
            if let Some(slot) = self.slots.get_mut(&path) {
                let refresh = self.settings.refresh_for(&slot.row.provider);
                let how_to_enable = self.settings.how_to_enable;
                apply(slot, outcome, refresh, how_to_enable, identity);
            }
        }
    }

    async fn resolve_one(&self, row: &EnvelopeRow, name: &str) -> Result<SecretBytes, Problem> {
        if self.settings.reserved.contains(name) {
            return Err(Problem::Invalid(format!(
                "SDS name {name:?} is reserved for SVIDs, bundles or credentials"
            )));
        }
        let sealed = row
            .validate(self.settings.max_ciphertext_bytes)
            .map_err(|e| Problem::Invalid(e.problem))?;
        check_path_binding(&sealed, self.settings.require_path_binding)
            .map_err(Problem::Invalid)?;
        let resolver = self
            .resolvers
            .get(&sealed.provider)
            .ok_or(Problem::ProviderOff(sealed.provider))?;
        let started = Instant::now();
        let outcome = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(&sealed)).await;
        let label = match &outcome {
            Ok(Ok(_)) => "ok",
            Ok(Err(e)) => resolve_error_kind(e),
            Err(_) => "timeout",
        };
        metrics().envelope_resolved(&row.provider, label, started.elapsed());
        let spiffe_id = self.scope.identity().unwrap_or("");
        tracing::info!(target: crate::audit::TARGET, logical_path = %row.logical_path, provider = %row.provider, key_id = %row.key_id, spiffe_id, outcome = label, "resolve");
        match outcome {
            Ok(Ok(resolved)) => {
                tracing::info!(logical_path = %sealed.logical_path, provider = %sealed.provider, key_id = %resolved.key_id, bytes = resolved.plaintext.len(), "envelope resolved");
                Ok(resolved.plaintext)
            }
            Ok(Err(e)) => Err(Problem::Resolve(e)),
            Err(_) => Err(Problem::Resolve(ResolveError::Unavailable(format!(
                "no answer within {}s",
                RESOLVE_TIMEOUT.as_secs()
            )))),
        }
    }

    /// Writes every resolved envelope into the store.
    pub fn publish(&self) {
        let entries: Vec<_> = self
            .slots
            .values()
            .filter_map(|s| Some((s.name.clone(), Secret::Generic(s.value.clone()?))))
            .collect();
        if self.scope.is_shared() {
            let in_scope = self.slots.values().filter(|s| self.in_scope(s)).count();
            metrics().set_envelopes(entries.len(), in_scope.saturating_sub(entries.len()));
        }
        self.store.sync_source(&SOURCE, entries);
    }

    /// The current problem of `logical_path`, if any.
    pub fn problem(&self, logical_path: &str) -> Option<&Problem> {
        self.slots.get(logical_path)?.problem.as_ref()
    }
}

/// Row sources, the most trusted first: the operator's files, then the control plane.
pub const SOURCE_PRECEDENCE: [&str; 2] = [super::file_source::SOURCE, super::control_plane::SOURCE];

/// `sets` in [`SOURCE_PRECEDENCE`] order, any other source after them by name.
fn by_precedence(sets: &RowSets) -> Vec<(&str, &Arc<Vec<EnvelopeRow>>)> {
    let rank = |name: &str| {
        SOURCE_PRECEDENCE
            .iter()
            .position(|s| *s == name)
            .unwrap_or(SOURCE_PRECEDENCE.len())
    };
    let mut ordered: Vec<_> = sets.iter().map(|(n, r)| (n.as_str(), r)).collect();
    ordered.sort_by_key(|(name, _)| (rank(name), *name));
    ordered
}

/// Folds one outcome into its slot (resolved for workload `identity`, if any) and
/// schedules the next attempt.
fn apply(
    slot: &mut Slot,
    outcome: Result<SecretBytes, Problem>,
    refresh: Duration,
    how_to_enable: fn(Provider) -> &'static str,
    identity: Option<&str>,
) {
    let now = Instant::now();
    let path = &slot.row.logical_path;
    let spiffe_id = identity.unwrap_or("");
    match outcome {
        Ok(value) => {
            if slot.value.as_ref() == Some(&value) {
                metrics().envelope_unchanged();
            }
            slot.value = Some(value);
            slot.stale = false;
            slot.problem = None;
            slot.backoff.reset();
            slot.due = Some(now + refresh);
        }
        Err(Problem::Resolve(e)) if e.is_retryable() => {
            if slot.stale {
                slot.value = None;
            }
            let delay = slot.backoff.next_delay();
            if slot.problem.as_ref() != Some(&Problem::Resolve(e.clone())) {
                tracing::warn!(logical_path = %path, spiffe_id, provider = %slot.row.provider, error = %e, retry_in_ms = delay.as_millis() as u64, serving_last_good = slot.value.is_some(), "envelope not resolved; will retry");
            }
            slot.problem = Some(Problem::Resolve(e));
            slot.due = Some(now + delay);
        }
        Err(problem) => {
            slot.value = None;
            slot.stale = false;
            if slot.problem.as_ref() != Some(&problem) {
                let error = describe(&problem, how_to_enable);
                tracing::error!(logical_path = %path, spiffe_id, provider = %slot.row.provider, key_id = %slot.row.key_id, %error, "envelope refused; not served");
            }
            // A bad row waits for its next change; a provider refusal is retried slowly
            // in case the key or policy is fixed upstream.
            slot.due = match problem {
                Problem::Resolve(_) => Some(now + refresh),
                _ => None,
            };
            slot.problem = Some(problem);
        }
    }
}

/// The metrics label of a resolver error.
fn resolve_error_kind(e: &ResolveError) -> &'static str {
    match e {
        ResolveError::Refused(_) => "refused",
        ResolveError::Undecryptable(_) => "undecryptable",
        ResolveError::Upstream(_) => "upstream",
        ResolveError::Unavailable(_) => "unavailable",
        _ => "other",
    }
}

fn describe(problem: &Problem, how_to_enable: fn(Provider) -> &'static str) -> String {
    match problem {
        Problem::Invalid(why) => why.clone(),
        Problem::ProviderOff(p) => format!("provider {p} is not enabled ({})", how_to_enable(*p)),
        Problem::Resolve(e) => e.to_string(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
