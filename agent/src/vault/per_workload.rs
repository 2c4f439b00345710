//! Vault roles per workload (`[[workloads]] vault_role`): each workload logs in to Vault
//! with its own JWT-SVID as its own JWT auth role (Vault's audit log names its SPIFFE ID,
//! the role's `bound_subject` can pin it), one lease per (identity, role), and gets the
//! token served into its own store as `vault.token_resource_name`.

use std::collections::HashMap;
use std::sync::Arc;

use steeple_plugin_vault::{VaultClient, VaultJwtLogin, VaultToken};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::login_config;
use crate::caller_identity::CallerIdentities;
use crate::config::VaultConfig;
use crate::exchange::roles::RoleExchanges;
use crate::store::{Secret, SecretStore, Source};
use crate::workload_roles::resource::no_role;
use crate::workload_roles::{WorkloadResource, WorkloadRoles};

/// The Vault side's per-workload roles.
#[derive(Debug)]
pub struct PerWorkloadVault {
    exchanges: RoleExchanges<VaultJwtLogin>,
    roles: WorkloadRoles,
    resource_name: String,
}

impl PerWorkloadVault {
    /// One login per role `roles` names, with `[vault]`'s other settings, served under
    /// `resource_name`; JWT-SVIDs of each identity from `identities`.
    pub fn new(
        config: &VaultConfig,
        client: &VaultClient,
        roles: &WorkloadRoles,
        identities: &CallerIdentities,
        resource_name: String,
        shutdown: &CancellationToken,
    ) -> Self {
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
            resource_name,
        }
    }
}

impl WorkloadResource for PerWorkloadVault {
    fn name(&self) -> &str {
        &self.resource_name
    }

    fn start(
        &self,
        spiffe_id: &str,
        store: Arc<SecretStore>,
        stop: CancellationToken,
    ) -> Result<(), String> {
        let role = self
            .roles
            .vault_role(spiffe_id)
            .ok_or_else(|| no_role("Vault", &self.resource_name, spiffe_id))?;
        let lease = self
            .exchanges
            .acquire(spiffe_id, role)
            .ok_or_else(|| format!("Vault role {role} is not configured"))?;
        let tokens = lease.credential().clone();
        let name = self.resource_name.clone();
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
