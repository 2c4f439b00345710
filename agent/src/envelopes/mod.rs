//! Envelopes: metadata-only rows from sources (files, the control plane) are collected
//! into one set, resolved in memory by the provider each names, and written into the
//! store as generic secrets named by logical path.

pub mod control_plane;
pub mod file_source;
pub mod parse;
pub mod per_workload;
pub mod registry;
pub mod scope;

use std::collections::BTreeMap;
use std::sync::Arc;

use steeple_plugin_api::EnvelopeRow;
use tokio::sync::watch;

/// The rows each source last delivered successfully, by source name.
pub type RowSets = BTreeMap<String, Arc<Vec<EnvelopeRow>>>;

/// Where sources publish their rows; the registry subscribes.
#[derive(Debug, Clone)]
pub struct RowSink {
    tx: Arc<watch::Sender<RowSets>>,
}

impl Default for RowSink {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(RowSets::new())),
        }
    }
}

impl RowSink {
    /// Replaces `source`'s rows; subscribers wake only if they changed.
    pub fn publish(&self, source: &str, rows: Vec<EnvelopeRow>) {
        self.tx.send_if_modified(|sets| {
            if sets.get(source).is_some_and(|old| **old == rows) {
                return false;
            }
            sets.insert(source.to_owned(), Arc::new(rows));
            true
        });
    }

    /// Drops the rows of every source not in `sources`.
    pub fn retain(&self, sources: &[&str]) {
        self.tx.send_if_modified(|sets| {
            let before = sets.len();
            sets.retain(|name, _| sources.contains(&name.as_str()));
            sets.len() != before
        });
    }

    /// A receiver of every source's rows.
    pub fn subscribe(&self) -> watch::Receiver<RowSets> {
        self.tx.subscribe()
    }
}

/// The providers envelopes resolve with, as whoever builds them (the sides, the local
/// key) offers them.
pub struct Providers {
    /// One resolver per enabled provider.
    pub resolvers: Vec<Arc<dyn steeple_plugin_api::EnvelopeResolver>>,
    /// Refresh intervals that differ from `envelopes.refresh_interval`, by provider.
    pub refresh: std::collections::HashMap<steeple_plugin_api::Provider, std::time::Duration>,
    /// How an operator turns on a provider that is off.
    pub how_to_enable: fn(steeple_plugin_api::Provider) -> &'static str,
    /// Providers resolved per workload identity instead ([`per_workload`]): their rows
    /// are left alone here.
    pub per_workload: Vec<steeple_plugin_api::Provider>,
}

/// The registry settings of `settings`, with the providers' refresh overrides and how to
/// turn a provider on.
pub fn registry_settings(
    settings: &EnvelopeSettings,
    refresh: std::collections::HashMap<steeple_plugin_api::Provider, std::time::Duration>,
    how_to_enable: fn(steeple_plugin_api::Provider) -> &'static str,
) -> registry::RegistrySettings {
    let envelopes = &settings.envelopes;
    registry::RegistrySettings {
        refresh_interval: envelopes.refresh_interval,
        provider_refresh: refresh,
        max_ciphertext_bytes: envelopes.max_ciphertext_bytes,
        aliases: envelopes.aliases.clone(),
        reserved: settings.claimed.clone(),
        require_path_binding: envelopes.require_path_binding,
        how_to_enable,
    }
}

/// What the envelope layer is built from: its own sections, and the names the other
/// producers claim (no envelope may take them).
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeSettings {
    /// `[envelopes]`.
    pub envelopes: crate::config::EnvelopesConfig,
    /// `[control_plane]`.
    pub control_plane: crate::config::ControlPlaneConfig,
    /// Names served by SVIDs, bundles, JWT-SVIDs and the sides.
    pub claimed: crate::store::names::ClaimedNames,
}

impl EnvelopeSettings {
    /// The envelope layer's part of `config`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            envelopes: config.envelopes.clone(),
            control_plane: config.control_plane.clone(),
            claimed: config.claimed_names(),
        }
    }
}

/// The envelope tasks one configuration asks for, built (everything that can fail has
/// been checked) but not started.
#[derive(Debug)]
pub struct EnvelopeTasks {
    files: Option<(Vec<std::path::PathBuf>, std::time::Duration)>,
    control_plane: Option<(control_plane::ControlPlaneSource, std::time::Duration)>,
    registry: Option<registry::Registry>,
    sink: RowSink,
    store: Arc<crate::store::SecretStore>,
}

impl EnvelopeTasks {
    /// Builds the configured envelope sources, publishing into `sink`, and the registry
    /// (when `[envelopes]` is enabled), resolving with `providers` into `store`.
    pub fn prepare(
        settings: &EnvelopeSettings,
        sink: RowSink,
        providers: Providers,
        jwt: Arc<dyn steeple_plugin_api::JwtSvidSource>,
        store: Arc<crate::store::SecretStore>,
    ) -> Result<Self, control_plane::PollError> {
        let envelopes = &settings.envelopes;
        let mut tasks = Self {
            files: None,
            control_plane: None,
            registry: None,
            sink,
            store: store.clone(),
        };
        if !envelopes.enabled {
            return Ok(tasks);
        }
        if !envelopes.paths.is_empty() {
            tasks.files = Some((envelopes.paths.clone(), envelopes.poll_interval));
        }
        let plane = &settings.control_plane;
        if !plane.url.is_empty() {
            let credential = match (&plane.token_file, &plane.jwt_audience) {
                (Some(file), _) => control_plane::Credential::TokenFile(file.clone()),
                (None, Some(audience)) => control_plane::Credential::JwtSvid(jwt, audience.clone()),
                (None, None) => {
                    return Err(control_plane::PollError::Token(
                        "set control_plane.token_file or control_plane.jwt_audience".into(),
                    ));
                }
            };
            let source = control_plane::ControlPlaneSource::new(plane, credential)?;
            tasks.control_plane = Some((source, plane.poll_interval));
        }
        let registry = registry_settings(settings, providers.refresh, providers.how_to_enable);
        let scope = scope::Scope::Shared {
            per_workload: providers.per_workload.clone(),
        };
        let resolvers = providers.resolvers;
        let names: Vec<_> = resolvers.iter().map(|r| r.provider().as_str()).collect();
        let per_workload: Vec<_> = providers.per_workload.iter().map(|p| p.as_str()).collect();
        tracing::info!(providers = ?names, per_workload = ?per_workload, files = envelopes.paths.len(), "envelope resolution enabled");
        tasks.registry =
            Some(registry::Registry::new(resolvers, registry, store).scoped(scope, None));
        Ok(tasks)
    }

    /// Starts what was prepared; it runs until `shutdown`. Row sets of sources this
    /// configuration no longer has are dropped first, so a reload that removes a source
    /// removes its envelopes.
    pub fn spawn(
        self,
        shutdown: &tokio_util::sync::CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        let mut live = Vec::new();
        if let Some((paths, every)) = self.files {
            live.push(file_source::SOURCE);
            tasks.spawn(file_source::run(
                paths,
                every,
                self.sink.clone(),
                shutdown.clone(),
            ));
        }
        if let Some((source, every)) = self.control_plane {
            live.push(control_plane::SOURCE);
            tasks.spawn(control_plane::run(
                source,
                every,
                self.sink.clone(),
                shutdown.clone(),
            ));
        }
        self.sink.retain(&live);
        match self.registry {
            Some(registry) => {
                tasks.spawn(registry.run(self.sink.subscribe(), shutdown.clone()));
            }
            None => {
                // Envelopes are off (perhaps since a reload): none stay served.
                self.store.sync_source(&registry::SOURCE, Vec::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use steeple_plugin_api::SecretBytes;

    use super::*;
    use crate::store::{Secret, SecretStore};

    fn prepare(toml: &str, sink: &RowSink, store: &Arc<SecretStore>) -> EnvelopeTasks {
        let config = crate::config::Config::parse(toml, Vec::new()).expect("test config");
        let jwt = Arc::new(crate::test_support::NoWorkloadApi);
        let providers = Providers {
            resolvers: Vec::new(),
            refresh: std::collections::HashMap::new(),
            how_to_enable: |_| "enable it",
            per_workload: Vec::new(),
        };
        let settings = EnvelopeSettings::from_config(&config);
        EnvelopeTasks::prepare(&settings, sink.clone(), providers, jwt, store.clone())
            .expect("prepared")
    }

    #[tokio::test]
    async fn a_reload_that_turns_envelopes_off_stops_serving_them() {
        let store = Arc::new(SecretStore::new());
        let served = Secret::Generic(SecretBytes::copy_from(b"v"));
        store.sync_source(&registry::SOURCE, vec![("app/token".into(), served)]);
        let sink = RowSink::default();
        sink.publish(file_source::SOURCE, Vec::new());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        prepare("", &sink, &store).spawn(&shutdown, &mut tasks);
        assert!(store.snapshot().get("app/token").is_none());
        assert!(
            sink.subscribe().borrow().is_empty(),
            "rows of a gone source"
        );
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn a_reload_keeps_the_rows_of_sources_still_configured() {
        let store = Arc::new(SecretStore::new());
        let sink = RowSink::default();
        sink.publish(file_source::SOURCE, Vec::new());
        sink.publish(control_plane::SOURCE, Vec::new());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let toml = "[envelopes]\nenabled = true\npaths = [\"/nonexistent\"]\n";
        prepare(toml, &sink, &store).spawn(&shutdown, &mut tasks);
        let sources: Vec<String> = sink.subscribe().borrow().keys().cloned().collect();
        assert_eq!(sources, [file_source::SOURCE]);
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
    }
}
