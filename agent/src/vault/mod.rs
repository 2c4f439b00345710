//! The agent's Vault side (`[vault]`): one token keeper logging in with JWT-SVIDs from the
//! Workload API and keeping the token alive, the `vault_delegate` (KV) and
//! `vault_transit` resolvers reading it (and reporting a token Vault denies back to the
//! keeper, which logs in again at once if it was revoked), and — when asked — the token
//! itself served as an SDS generic secret.

pub mod doctor;
pub mod per_workload;
pub mod seal;

use std::sync::Arc;

use steeple_plugin_api::{EnvelopeResolver, VaultAllowlist};
use steeple_plugin_vault::{
    ClientBuildError, KvVersion, LiveRoots, TokenSource, VaultClient, VaultClientConfig,
    VaultJwtLogin, VaultJwtLoginConfig, VaultKvResolver, VaultToken, VaultTokenKeeper,
    VaultTransitResolver,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::VaultConfig;
use crate::side_context::SideContext;
use crate::store::{Secret, Snapshot};

/// Why the Vault side could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultStartError {
    /// A `[vault]` setting was refused (named by config key).
    #[error("vault.{key}: {problem}")]
    Config {
        /// The `[vault]` key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// What the running Vault side offers the rest of the agent.
#[derive(Debug)]
pub struct VaultRuntime {
    /// The current token (`None` before the first login and after expiry).
    pub tokens: watch::Receiver<Option<VaultToken>>,
    /// Resolves `vault_delegate` envelopes.
    pub kv: Arc<dyn EnvelopeResolver>,
    /// Resolves `vault_transit` envelopes.
    pub transit: Arc<dyn EnvelopeResolver>,
}

/// Starts the token keeper of the agent's own role (`[vault] role`, when set), the
/// per-workload logins (`[[workloads]] vault_role`), and builds the resolvers when
/// `[vault] enabled`.
pub fn start(
    config: &VaultConfig,
    context: &SideContext<'_>,
    tasks: &mut JoinSet<()>,
) -> Result<Option<VaultRuntime>, VaultStartError> {
    if !config.enabled {
        return Ok(None);
    }
    let kv_version = KvVersion::from_number(config.kv_version).ok_or(VaultStartError::Config {
        key: "kv_version",
        problem: format!("{} is not 1 or 2", config.kv_version),
    })?;
    let allowlist = Arc::new(VaultAllowlist::new(config.allow.clone()).map_err(|e| {
        VaultStartError::Config {
            key: "allow",
            problem: e.to_string(),
        }
    })?);
    let client = client(config, context, tasks)?;
    let (tokens, source) = own_token(config, context, &client, tasks);
    if context.roles.per_workload_vault() {
        let access = per_workload::EnvelopeAccess {
            client: client.clone(),
            kv_version,
            allowlist: allowlist.clone(),
            transit_mount: config.transit_mount.clone(),
        };
        offer_per_workload(config, context, access, tasks);
    } else if let Some(name) = &config.token_resource_name {
        tasks.spawn(per_workload::publish_token(
            name.clone(),
            tokens.clone(),
            context.store.clone(),
            context.shutdown.clone(),
        ));
    }
    let kv = Arc::new(VaultKvResolver::new(
        client.clone(),
        source.clone(),
        kv_version,
        allowlist.clone(),
    ));
    let transit = Arc::new(
        VaultTransitResolver::new(client, source, allowlist)
            .with_default_mount(&config.transit_mount),
    );
    log_started(config, context.envelopes.is_some());
    Ok(Some(VaultRuntime {
        tokens,
        kv,
        transit,
    }))
}

/// The agent's own token, kept by a keeper when `[vault] role` is set (never any
/// otherwise), and the source resolvers read it from.
fn own_token(
    config: &VaultConfig,
    context: &SideContext<'_>,
    client: &VaultClient,
    tasks: &mut JoinSet<()>,
) -> (watch::Receiver<Option<VaultToken>>, Arc<dyn TokenSource>) {
    if config.role.is_empty() {
        let none = watch::channel(None).1;
        return (none.clone(), Arc::new(none));
    }
    let login = VaultJwtLogin::new(client.clone(), login_config(config));
    let kept = VaultTokenKeeper::new(Arc::new(login), context.jwt.clone())
        .revoke_on_shutdown(config.revoke_on_shutdown)
        .spawn(context.shutdown.clone(), tasks);
    let tokens = kept.channel().clone();
    context.readiness.require("Vault token", tokens.clone());
    tasks.spawn(audit_tokens(
        tokens.clone(),
        config.role.clone(),
        context.shutdown.clone(),
    ));
    (tokens, kept.shared())
}

/// Each workload's own token — served under `vault.token_resource_name` (when set) to
/// the workloads `[[workloads]]` gives a Vault role — and its Vault envelopes read with it
/// (a node agent resolving envelopes).
fn offer_per_workload(
    config: &VaultConfig,
    context: &SideContext<'_>,
    access: per_workload::EnvelopeAccess,
    tasks: &mut JoinSet<()>,
) {
    let per_workload = Arc::new(per_workload::PerWorkloadVault::new(
        config,
        access,
        &context.roles,
        &context.identities,
        context.shutdown,
    ));
    if per_workload.serves_tokens() {
        context
            .identities
            .offer(per_workload.clone(), context.shutdown, tasks);
    }
    match &context.envelopes {
        Some(envelopes) => envelopes.provide(per_workload),
        None if !per_workload.serves_tokens() => tracing::warn!(
            "vault_role in [[workloads]] has no effect: set vault.token_resource_name to serve each workload its token, or run as a node agent (workload_api.mode = \"delegated\") to read its envelopes with it"
        ),
        None => {}
    }
}

/// The Vault client `[vault]` asks for; with `ca_spiffe_bundle`, trusting the live SPIFFE
/// bundle of that trust domain (followed by a task on `tasks`).
fn client(
    config: &VaultConfig,
    context: &SideContext<'_>,
    tasks: &mut JoinSet<()>,
) -> Result<VaultClient, VaultStartError> {
    let Some(trust_domain) = &config.ca_spiffe_bundle else {
        return client_config(config).build().map_err(client_error);
    };
    let origin = format!("the SPIFFE bundle of {trust_domain}");
    let (client, roots) = client_config(config)
        .build_with_live_roots(&origin, config.spiffe_id.as_deref())
        .map_err(client_error)?;
    tasks.spawn(follow_bundle(
        format!("spiffe://{trust_domain}"),
        roots,
        context.store.subscribe(),
        context.shutdown.clone(),
    ));
    Ok(client)
}

/// The start event, and a warning when no envelope may reach Vault.
fn log_started(config: &VaultConfig, envelopes_per_workload: bool) {
    tracing::info!(
        addr = %config.addr,
        namespace = config.namespace.as_deref().unwrap_or(""),
        ca_spiffe_bundle = config.ca_spiffe_bundle.as_deref().unwrap_or(""),
        auth_mount = %config.auth_mount,
        role = %config.role,
        audience = %config.audience,
        allow_entries = config.allow.len(),
        "Vault JWT login enabled"
    );
    if config.role.is_empty() && !envelopes_per_workload {
        tracing::warn!(
            "vault.role is not set: the agent does not log in to Vault itself, so vault_delegate and vault_transit envelopes (read with the agent's token) cannot be resolved; each workload [[workloads]] maps logs in as its own role"
        );
    }
    if config.allow.is_empty() {
        tracing::warn!(
            "no [[vault.allow]] entries: every vault_delegate and vault_transit envelope is refused (the token alone is still kept and served if asked)"
        );
    }
}

/// The Vault client settings `[vault]` stands for.
pub fn client_config(config: &VaultConfig) -> VaultClientConfig {
    VaultClientConfig {
        addr: config.addr.clone(),
        ca_file: config.ca_file.clone(),
        namespace: config.namespace.clone(),
        ..VaultClientConfig::default()
    }
}

/// The JWT login settings `[vault]` stands for.
pub fn login_config(config: &VaultConfig) -> VaultJwtLoginConfig {
    VaultJwtLoginConfig {
        auth_mount: config.auth_mount.clone(),
        role: config.role.clone(),
        audience: config.audience.clone(),
        namespace: None,
    }
}

/// A client that could not be built, named by the `[vault]` key at fault.
pub fn client_error(e: ClientBuildError) -> VaultStartError {
    let key = match &e {
        ClientBuildError::CaFile { .. } => "ca_file",
        _ => "addr",
    };
    VaultStartError::Config {
        key,
        problem: e.to_string(),
    }
}

/// Keeps `roots` equal to the X.509 bundle stored under `bundle_name` (a trust-domain
/// ID), so new connections to Vault trust what the Workload API trusts now. A bundle
/// that goes away keeps its last roots (SPIRE never withdraws its own trust domain; a
/// federated one disappearing is logged).
async fn follow_bundle(
    bundle_name: String,
    roots: LiveRoots,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    let mut applied: Option<u64> = None;
    loop {
        let entry = snapshots.borrow_and_update().get(&bundle_name).cloned();
        match entry {
            Some(entry) if applied != Some(entry.version) => {
                applied = Some(entry.version);
                if let Secret::TrustBundle(bundle) = &entry.secret {
                    match roots.replace(&bundle.roots_der) {
                        Ok(()) => tracing::info!(
                            bundle = %bundle_name,
                            roots = bundle.roots_der.len(),
                            "Vault TLS trusts the current SPIFFE bundle"
                        ),
                        Err(e) => {
                            tracing::error!(error = %e, "SPIFFE bundle refused for Vault TLS; keeping the previous roots")
                        }
                    }
                }
            }
            None if applied.take().is_some() => tracing::warn!(
                bundle = %bundle_name,
                "SPIFFE bundle for Vault TLS withdrawn; keeping its last roots"
            ),
            _ => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
    }
}

/// One audit event per Vault token obtained (login or renewal): role, accessor, expiry —
/// never the token.
async fn audit_tokens(
    mut tokens: watch::Receiver<Option<VaultToken>>,
    role: String,
    shutdown: CancellationToken,
) {
    let mut last: Option<(String, std::time::SystemTime)> = None;
    loop {
        let current = tokens
            .borrow_and_update()
            .as_ref()
            .map(|t| (t.accessor.clone(), t.expires_at));
        if let Some((accessor, expires_at)) = current.as_ref().filter(|_| current != last) {
            let expires_at = expires_at
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            tracing::info!(target: crate::audit::TARGET, exchange = "vault", role = %role, accessor = %accessor, outcome = "ok", expires_at, "exchange");
        }
        last = current;
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = tokens.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests;
