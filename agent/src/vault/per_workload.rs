//! Vault roles per workload (`[[workloads]] vault_role`): each workload logs in to Vault
//! with its own JWT-SVID as its own JWT auth role (Vault's audit log names its SPIFFE ID,
//! the role's `bound_subject` can pin it), one lease per (identity, role). Its token is
//! served into its own store as `vault.token_resource_name` (when set), and its
//! `vault_delegate` / `vault_transit` envelopes are read with it.

use std::collections::HashMap;
use std::sync::Arc;

use steeple_plugin_api::VaultAllowlist;
use steeple_plugin_vault::{
    KvVersion, VaultClient, VaultJwtLogin, VaultKvResolver, VaultToken, VaultTransitResolver,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::login_config;
use crate::caller_identity::CallerIdentities;
use crate::config::VaultConfig;
use crate::envelopes::per_workload::{IdentityProviders, IdentityResolvers};
use crate::exchange::roles::RoleExchanges;
use crate::store::{Secret, SecretStore, Source};
use crate::workload_roles::{WorkloadResource, WorkloadRoles};

/// The Vault side's per-workload roles.
#[derive(Debug)]
pub struct PerWorkloadVault {
    exchanges: RoleExchanges<VaultJwtLogin>,
    roles: WorkloadRoles,
    /// `vault.token_resource_name`: where each workload's token is served, if anywhere.
    resource_name: Option<String>,
    /// How its envelopes are read.
    envelopes: EnvelopeAccess,
}

/// What the Vault resolvers of a workload need besides its token.
#[derive(Debug)]
pub struct EnvelopeAccess {
    /// The Vault client.
    pub client: VaultClient,
    /// `vault.kv_version`.
    pub kv_version: KvVersion,
    /// `[[vault.allow]]`.
    pub allowlist: Arc<VaultAllowlist>,
    /// `vault.transit_mount`.
    pub transit_mount: String,
}

impl PerWorkloadVault {
    /// One login per role `roles` names, with `[vault]`'s other settings; JWT-SVIDs of
    /// each identity from `identities`.
    pub fn new(
        config: &VaultConfig,
        envelopes: EnvelopeAccess,
        roles: &WorkloadRoles,
        identities: &CallerIdentities,
        shutdown: &CancellationToken,
    ) -> Self {
        let client = &envelopes.client;
        let logins: HashMap<String, Arc<VaultJwtLogin>> = roles
            .vault_roles()
            .into_iter()
            .map(|role| {
                let settings = steeple_plugin_vault::VaultJwtLoginConfig {
                    role: role.to_owned(),
                    ..login_config(config)
                };
                let login = VaultJwtLogin::new(client.clone(), settings);
                (role.to_owned(), Arc::new(login))
            })
            .collect();
        Self {
            exchanges: RoleExchanges::new("vault", logins, identities.jwt_by_id(), shutdown),
            roles: roles.clone(),
            resource_name: config.token_resource_name.clone(),
            envelopes,
        }
    }

    /// Whether each workload's token is served (`vault.token_resource_name` set).
    pub fn serves_tokens(&self) -> bool {
        self.resource_name.is_some()
    }
}

impl IdentityResolvers for PerWorkloadVault {
    /// `vault_delegate` and `vault_transit` read with `spiffe_id`'s own token.
    fn for_identity(&self, spiffe_id: &str) -> IdentityProviders {
        let lease = self
            .roles
            .vault_role(spiffe_id)
            .and_then(|role| self.exchanges.acquire(spiffe_id, role));
        let Some(lease) = lease else {
            return IdentityProviders::default();
        };
        let access = &self.envelopes;
        let tokens = Arc::new(lease.credential().clone());
        let kv = VaultKvResolver::new(
            access.client.clone(),
            tokens.clone(),
            access.kv_version,
            access.allowlist.clone(),
        );
        let transit =
            VaultTransitResolver::new(access.client.clone(), tokens, access.allowlist.clone())
                .with_default_mount(&access.transit_mount);
        IdentityProviders {
            resolvers: vec![Arc::new(kv), Arc::new(transit)],
            holds: vec![Box::new(lease)],
        }
    }
}

impl WorkloadResource for PerWorkloadVault {
    fn name(&self) -> &str {
        self.resource_name.as_deref().unwrap_or_default()
    }

    fn start(
        &self,
        spiffe_id: &str,
        store: Arc<SecretStore>,
        stop: CancellationToken,
    ) -> Result<(), String> {
        let role = self.roles.vault_role(spiffe_id);
        let lease = self
            .exchanges
            .lease_for("Vault", spiffe_id, role, self.name())?;
        let tokens = lease.credential().clone();
        let name = self.name().to_owned();
        tokio::spawn(async move {
            publish_token(name, tokens, store, stop).await;
            drop(lease);
        });
        Ok(())
    }
}

/// Mirrors the current token into `store` as the generic secret `name`; removes it
/// while no valid token is held.
pub async fn publish_token(
    name: String,
    mut tokens: watch::Receiver<Option<VaultToken>>,
    store: Arc<SecretStore>,
    shutdown: CancellationToken,
) {
    let source = Source::VaultToken(name.clone());
    loop {
        let desired = tokens
            .borrow_and_update()
            .as_ref()
            .filter(|t| t.is_valid_at(std::time::SystemTime::now()))
            .map(|t| vec![(name.clone(), Secret::Generic(t.token.clone()))])
            .unwrap_or_default();
        store.sync_source(&source, desired);
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = tokens.changed() => if changed.is_err() { return },
        }
    }
}
