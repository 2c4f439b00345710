//! `[[workloads]]`: which AWS role and which Vault JWT role each workload gets, by its
//! SPIFFE ID. Without entries the agent holds one role per side (`[aws] role_arn`,
//! `[vault] role`) for every caller, as before; with them, each caller gets the role of
//! the first entry its SPIFFE ID matches, exchanged with its *own* JWT-SVID, and a caller
//! no entry names gets nothing.

pub mod resource;

use crate::authz::glob_matches;
pub use resource::WorkloadResource;

/// One `[[workloads]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRole {
    /// A SPIFFE ID glob (`spiffe://example.org/payments/*`; `*` matches any run of
    /// characters).
    pub spiffe_id: String,
    /// The IAM role its JWT-SVIDs are exchanged for (`aws_role_arn`); none: no AWS
    /// credentials for it.
    pub aws_role_arn: Option<String>,
    /// The Vault JWT auth role it logs in as (`vault_role`); none: no Vault token for it.
    pub vault_role: Option<String>,
}

/// The `[[workloads]]` entries, in the order they were written (the first match wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadRoles {
    entries: Vec<WorkloadRole>,
}

impl WorkloadRoles {
    /// The roles of `entries`, matched in order.
    pub fn new(entries: Vec<WorkloadRole>) -> Self {
        Self { entries }
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[WorkloadRole] {
        &self.entries
    }

    /// The first entry matching `spiffe_id`: it alone decides that workload's roles.
    pub fn for_id(&self, spiffe_id: &str) -> Option<&WorkloadRole> {
        self.entries
            .iter()
            .find(|e| glob_matches(&e.spiffe_id, spiffe_id))
    }

    /// The AWS role of `spiffe_id`, if its entry names one.
    pub fn aws_role(&self, spiffe_id: &str) -> Option<&str> {
        self.for_id(spiffe_id)?.aws_role_arn.as_deref()
    }

    /// The Vault role of `spiffe_id`, if its entry names one.
    pub fn vault_role(&self, spiffe_id: &str) -> Option<&str> {
        self.for_id(spiffe_id)?.vault_role.as_deref()
    }

    /// Whether AWS roles are chosen per workload (some entry names one).
    pub fn per_workload_aws(&self) -> bool {
        self.entries.iter().any(|e| e.aws_role_arn.is_some())
    }

    /// Whether Vault roles are chosen per workload (some entry names one).
    pub fn per_workload_vault(&self) -> bool {
        self.entries.iter().any(|e| e.vault_role.is_some())
    }

    /// Every distinct AWS role named, in order of first mention.
    pub fn aws_roles(&self) -> Vec<&str> {
        distinct(
            self.entries
                .iter()
                .filter_map(|e| e.aws_role_arn.as_deref()),
        )
    }

    /// Every distinct Vault role named, in order of first mention.
    pub fn vault_roles(&self) -> Vec<&str> {
        distinct(self.entries.iter().filter_map(|e| e.vault_role.as_deref()))
    }
}

fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, aws: Option<&str>, vault: Option<&str>) -> WorkloadRole {
        WorkloadRole {
            spiffe_id: id.into(),
            aws_role_arn: aws.map(Into::into),
            vault_role: vault.map(Into::into),
        }
    }

    fn roles() -> WorkloadRoles {
        WorkloadRoles::new(vec![
            entry("spiffe://td/payments/admin", None, Some("payments-admin")),
            entry(
                "spiffe://td/payments/*",
                Some("arn:aws:iam::1:role/payments"),
                Some("payments"),
            ),
            entry("spiffe://td/*", Some("arn:aws:iam::1:role/everyone"), None),
        ])
    }

    #[test]
    fn the_first_matching_entry_alone_decides() {
        let roles = roles();
        assert_eq!(
            roles.aws_role("spiffe://td/payments/api"),
            Some("arn:aws:iam::1:role/payments")
        );
        assert_eq!(
            roles.vault_role("spiffe://td/payments/api"),
            Some("payments")
        );
        // The admin entry names no AWS role: the later catch-all does not lend its own.
        assert_eq!(roles.aws_role("spiffe://td/payments/admin"), None);
        assert_eq!(
            roles.vault_role("spiffe://td/payments/admin"),
            Some("payments-admin")
        );
        assert_eq!(
            roles.aws_role("spiffe://td/web"),
            Some("arn:aws:iam::1:role/everyone")
        );
        assert_eq!(roles.vault_role("spiffe://td/web"), None);
        assert!(roles.for_id("spiffe://other/payments/api").is_none());
    }

    #[test]
    fn sides_are_per_workload_only_when_an_entry_names_their_role() {
        let roles = roles();
        assert!(roles.per_workload_aws() && roles.per_workload_vault());
        assert_eq!(
            roles.aws_roles(),
            [
                "arn:aws:iam::1:role/payments",
                "arn:aws:iam::1:role/everyone"
            ]
        );
        let aws_only = WorkloadRoles::new(vec![entry("spiffe://td/*", Some("arn:x"), None)]);
        assert!(aws_only.per_workload_aws() && !aws_only.per_workload_vault());
        assert!(!WorkloadRoles::default().per_workload_aws());
    }
}
