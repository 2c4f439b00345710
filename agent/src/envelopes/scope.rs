//! Which envelopes a registry resolves. The shared registry resolves every row with the
//! agent's own providers — except, on a node agent with roles per workload, rows of the
//! providers each workload resolves with its own roles. A workload identity's registry
//! resolves only the rows its workloads asked for, with that identity's roles.

use std::collections::BTreeSet;

use steeple_plugin_api::Provider;
use tokio::sync::watch;

/// What a registry resolves.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every row, but those of `per_workload` providers (their rows are left to the
    /// workloads' own registries: never resolved with the agent's credentials).
    Shared {
        /// Providers resolved per workload.
        per_workload: Vec<Provider>,
    },
    /// Only rows whose SDS name is in `names` (those the workloads of `identity` asked
    /// for), resolved with that identity's roles.
    Wanted {
        /// The names asked for.
        names: watch::Receiver<BTreeSet<String>>,
        /// The workload identity (its SPIFFE ID), for logs and audit events.
        identity: String,
    },
}

impl Default for Scope {
    fn default() -> Self {
        Self::Shared {
            per_workload: Vec::new(),
        }
    }
}

impl Scope {
    /// Whether a row of `provider` (its wire name) served as `name` is resolved here.
    pub fn covers(&self, provider: &str, name: &str) -> bool {
        match self {
            Self::Shared { per_workload } => {
                Provider::parse(provider).is_none_or(|p| !per_workload.contains(&p))
            }
            Self::Wanted { names, .. } => names.borrow().contains(name),
        }
    }

    /// The workload identity resolved for (none for the shared registry).
    pub fn identity(&self) -> Option<&str> {
        match self {
            Self::Shared { .. } => None,
            Self::Wanted { identity, .. } => Some(identity),
        }
    }

    /// Whether this is the shared registry (the one the envelope metrics describe).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Shared { .. })
    }

    /// Waits until the wanted names change; never for the shared scope. `Err` once the
    /// set is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        match self {
            Self::Shared { .. } => std::future::pending().await,
            Self::Wanted { names, .. } => names.changed().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_scope_leaves_per_workload_providers_out_and_a_wanted_one_takes_only_its_names() {
        let shared = Scope::Shared {
            per_workload: vec![Provider::KmsEnvelope],
        };
        assert!(!shared.covers("kms_envelope", "payments/db"));
        assert!(shared.covers("local", "payments/db"));
        assert!(
            shared.covers("unknown-provider", "x"),
            "refused later, by the registry"
        );
        let (tx, rx) = watch::channel(BTreeSet::from(["payments/db".to_owned()]));
        let wanted = Scope::Wanted {
            names: rx,
            identity: "spiffe://td/a".into(),
        };
        assert!(wanted.covers("kms_envelope", "payments/db"));
        assert!(!wanted.covers("kms_envelope", "web/session"));
        tx.send_modify(|names| {
            names.insert("web/session".into());
        });
        assert!(wanted.covers("vault_transit", "web/session"));
    }
}
