//! The upstream sides — AWS (`[aws]`, the `aws` cargo feature) and Vault (`[vault]`, the
//! `vault` feature) — as the core sees them. Each side lives in its own folder, compiled
//! only with its feature; this module is the one place that knows which are compiled. It
//! refuses a section enabled in a build without its side, naming both; it starts the
//! enabled sides and hands the core what they offer (envelope resolvers); it says, from
//! their settings alone, what they set for the envelope layer (refresh overrides) and how
//! to enable a provider that is off; and it hands the command line each side's own
//! `doctor` checks ([`doctor`]) and `envelope seal` ([`seal`]). (The names they serve
//! under are claimed with every other producer's in [`crate::store::sources`].)

pub mod doctor;
pub mod seal;

use std::sync::Arc;
use std::time::Duration;

use steeple_plugin_api::{EnvelopeResolver, Provider};
use tokio::task::JoinSet;

pub use crate::side_context::SideContext;

use crate::config::Config;

/// Why a side could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SideError {
    /// The section is enabled, but this binary was built without its side.
    #[error("{section}.enabled: this steeple was built without the `{feature}` cargo feature")]
    NotBuilt {
        /// The configuration section (`aws`, `vault`).
        section: &'static str,
        /// The cargo feature that builds it.
        feature: &'static str,
    },
    /// The AWS side refused its settings or could not listen.
    #[cfg(feature = "aws")]
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsStartError),
    /// The Vault side refused its settings.
    #[cfg(feature = "vault")]
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultStartError),
}

/// What the started sides offer the core.
#[derive(Debug, Default)]
pub struct Started {
    /// Envelope resolvers (`kms_envelope`; `vault_delegate`, `vault_transit`).
    pub resolvers: Vec<Arc<dyn EnvelopeResolver>>,
}

/// The cargo features of the sides compiled into this binary.
pub fn compiled() -> Vec<&'static str> {
    let mut features = Vec::new();
    if cfg!(feature = "aws") {
        features.push("aws");
    }
    if cfg!(feature = "vault") {
        features.push("vault");
    }
    features
}

/// Starts every side `config` enables (their tasks on `tasks`). Nothing starts when one
/// is refused... except the sides started before it, which `context.shutdown` stops.
pub fn start(
    config: &Config,
    context: &SideContext<'_>,
    tasks: &mut JoinSet<()>,
) -> Result<Started, SideError> {
    let mut started = Started::default();
    start_aws(config, context, tasks, &mut started)?;
    start_vault(config, context, tasks, &mut started)?;
    Ok(started)
}

#[cfg(feature = "aws")]
fn start_aws(
    config: &Config,
    context: &SideContext<'_>,
    tasks: &mut JoinSet<()>,
    started: &mut Started,
) -> Result<(), SideError> {
    if let Some(aws) = crate::aws::start(&config.aws, context, tasks)? {
        started.resolvers.push(aws.kms);
    }
    Ok(())
}

#[cfg(not(feature = "aws"))]
fn start_aws(
    config: &Config,
    _: &SideContext<'_>,
    _: &mut JoinSet<()>,
    _: &mut Started,
) -> Result<(), SideError> {
    not_built(config.aws.enabled, "aws")
}

#[cfg(feature = "vault")]
fn start_vault(
    config: &Config,
    context: &SideContext<'_>,
    tasks: &mut JoinSet<()>,
    started: &mut Started,
) -> Result<(), SideError> {
    if let Some(vault) = crate::vault::start(&config.vault, context, tasks)? {
        started.resolvers.extend([vault.kv, vault.transit]);
    }
    Ok(())
}

#[cfg(not(feature = "vault"))]
fn start_vault(
    config: &Config,
    _: &SideContext<'_>,
    _: &mut JoinSet<()>,
    _: &mut Started,
) -> Result<(), SideError> {
    not_built(config.vault.enabled, "vault")
}

/// Refuses an enabled section whose side is not compiled in.
#[cfg(any(not(feature = "aws"), not(feature = "vault")))]
fn not_built(enabled: bool, section: &'static str) -> Result<(), SideError> {
    if enabled {
        return Err(SideError::NotBuilt {
            section,
            feature: section,
        });
    }
    Ok(())
}

/// Envelope refresh intervals the enabled sides set for their providers, instead of
/// `envelopes.refresh_interval` (`vault_delegate` follows `vault.kv_refresh_interval`).
pub fn provider_refresh(config: &Config) -> Vec<(Provider, Duration)> {
    if config.vault.enabled {
        vec![(Provider::VaultDelegate, config.vault.kv_refresh_interval)]
    } else {
        Vec::new()
    }
}

/// The envelope providers a node agent resolves with each workload's own roles: those of
/// the sides whose roles `[[workloads]]` chooses, in delegated mode. The agent's own
/// registry leaves their rows alone (never decrypted with its roles).
pub fn per_workload_providers(config: &Config) -> Vec<Provider> {
    let delegated = matches!(
        config.workload_api.mode,
        crate::config::IdentityMode::Delegated(_)
    );
    let mut providers = Vec::new();
    if !delegated {
        return providers;
    }
    if config.aws.enabled && config.workloads.per_workload_aws() {
        providers.push(Provider::KmsEnvelope);
    }
    if config.vault.enabled && config.workloads.per_workload_vault() {
        providers.extend([Provider::VaultDelegate, Provider::VaultTransit]);
    }
    providers
}

/// How an operator turns `provider` on, for the error a row of a provider that is off
/// gets.
pub fn how_to_enable(provider: Provider) -> &'static str {
    match provider {
        Provider::KmsEnvelope => "set [aws] enabled = true and key_arn_allowlist",
        Provider::Local => "set envelopes.local_master_key_env; dev only",
        _ => "set [vault] enabled = true, addr and role",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::parse(toml, Vec::new()).expect("test config")
    }

    #[test]
    fn the_sides_set_refresh_overrides_from_their_own_settings() {
        let config = config(
            "[aws]\ncredentials_resource_name = \"aws-creds\"\n\
             [vault]\nenabled = true\naddr = \"https://vault.example.org\"\nrole = \"r\"\n\
             token_resource_name = \"vault-token\"\nkv_refresh_interval = \"90s\"\n",
        );
        assert_eq!(
            provider_refresh(&config),
            [(Provider::VaultDelegate, Duration::from_secs(90))]
        );
        assert!(provider_refresh(&self::config("")).is_empty());
    }

    #[test]
    fn a_provider_that_is_off_names_its_section() {
        assert!(how_to_enable(Provider::KmsEnvelope).contains("[aws]"));
        assert!(how_to_enable(Provider::VaultTransit).contains("[vault]"));
        assert!(how_to_enable(Provider::Local).contains("local_master_key_env"));
    }

    #[test]
    fn the_compiled_sides_are_the_features() {
        assert_eq!(compiled().contains(&"aws"), cfg!(feature = "aws"));
        assert_eq!(compiled().contains(&"vault"), cfg!(feature = "vault"));
    }
}
