//! Envelopes: metadata-only rows from sources (files, the control plane) are collected
//! into one set, resolved in memory by the provider each names, and written into the
//! store as generic secrets named by logical path.

pub mod control_plane;
pub mod file_source;
pub mod parse;
pub mod registry;

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

    /// A receiver of every source's rows.
    pub fn subscribe(&self) -> watch::Receiver<RowSets> {
        self.tx.subscribe()
    }
}

/// Starts the configured envelope sources, publishing into `sink`, and the registry
/// (when `[envelopes]` is enabled), resolving with `resolvers`.
pub fn spawn(
    config: &crate::config::Config,
    sink: RowSink,
    resolvers: Vec<Arc<dyn steeple_plugin_api::EnvelopeResolver>>,
    jwt: Arc<dyn steeple_plugin_api::JwtSvidSource>,
    store: Arc<crate::store::SecretStore>,
    shutdown: &tokio_util::sync::CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(), control_plane::PollError> {
    let envelopes = &config.envelopes;
    if !envelopes.enabled {
        return Ok(());
    }
    if !envelopes.paths.is_empty() {
        tasks.spawn(file_source::run(
            envelopes.paths.clone(),
            envelopes.poll_interval,
            sink.clone(),
            shutdown.clone(),
        ));
    }
    let plane = &config.control_plane;
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
        tasks.spawn(control_plane::run(
            source,
            plane.poll_interval,
            sink.clone(),
            shutdown.clone(),
        ));
    }
    let settings = registry::RegistrySettings {
        refresh_interval: envelopes.refresh_interval,
        provider_refresh: provider_refresh(config),
        max_ciphertext_bytes: envelopes.max_ciphertext_bytes,
        aliases: envelopes.aliases.clone(),
        reserved: reserved_names(config),
    };
    let providers: Vec<_> = resolvers.iter().map(|r| r.provider().as_str()).collect();
    tracing::info!(providers = ?providers, files = envelopes.paths.len(), "envelope resolution enabled");
    let registry = registry::Registry::new(resolvers, settings, store);
    tasks.spawn(registry.run(sink.subscribe(), shutdown.clone()));
    Ok(())
}

/// Refresh intervals that differ from `envelopes.refresh_interval`, by provider.
fn provider_refresh(
    config: &crate::config::Config,
) -> std::collections::HashMap<steeple_plugin_api::Provider, std::time::Duration> {
    let mut refresh = std::collections::HashMap::new();
    if config.vault.enabled {
        refresh.insert(
            steeple_plugin_api::Provider::VaultDelegate,
            config.vault.kv_refresh_interval,
        );
    }
    refresh
}

/// The store names other producers own: SVIDs, bundles, JWT-SVIDs, credentials, the
/// Vault token.
fn reserved_names(config: &crate::config::Config) -> registry::ReservedNames {
    let sds = &config.sds;
    let mut exact = vec![
        sds.default_svid_name.clone(),
        sds.default_bundle_name.clone(),
        sds.default_all_bundles_name.clone(),
        config.aws.credentials_resource_name.clone(),
    ];
    exact.extend(config.jwt_svids.iter().map(|j| j.resource_name.clone()));
    exact.extend(config.vault.token_resource_name.clone());
    registry::ReservedNames {
        exact,
        prefixes: vec!["spiffe://".into(), "jwt-svid:".into(), "jwt-bundle:".into()],
    }
}
