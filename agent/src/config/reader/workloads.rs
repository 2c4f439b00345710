//! `[[workloads]]`: AWS and Vault roles by workload SPIFFE ID, and how they sit with the
//! single roles of `[aws]` and `[vault]`.

use toml::Value;

use super::Reader;
use crate::config::{AwsConfig, VaultConfig};
use crate::workload_roles::{WorkloadRole, WorkloadRoles};

impl Reader {
    /// The entries; a role of a side that is off (`aws_enabled`, `vault_enabled`) is an
    /// error.
    pub(super) fn read_workloads(
        &mut self,
        aws_enabled: bool,
        vault_enabled: bool,
    ) -> WorkloadRoles {
        let items = match self.root.get("workloads").and_then(Value::as_array) {
            Some(items) => items.clone(),
            None => return WorkloadRoles::default(),
        };
        let entries = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let entry = self.read_workload(i, item)?;
                if entry.aws_role_arn.is_some() && !aws_enabled {
                    self.error(
                        &format!("workloads[{i}].aws_role_arn"),
                        "needs aws.enabled = true",
                    );
                }
                if entry.vault_role.is_some() && !vault_enabled {
                    self.error(
                        &format!("workloads[{i}].vault_role"),
                        "needs vault.enabled = true",
                    );
                }
                Some(entry)
            })
            .collect();
        WorkloadRoles::new(entries)
    }

    /// `[[workloads]]` entry `i`, or `None` with its errors recorded.
    fn read_workload(&mut self, i: usize, item: &Value) -> Option<WorkloadRole> {
        let key = |k: &str| format!("workloads[{i}].{k}");
        let text = |k: &str| item.get(k).map(|v| v.as_str().filter(|s| !s.is_empty()));
        let mut valid = true;
        let spiffe_id = match text("spiffe_id") {
            Some(Some(id)) if id.starts_with("spiffe://") => Some(id.to_owned()),
            _ => None,
        };
        if spiffe_id.is_none() {
            self.error(
                &key("spiffe_id"),
                "required: a SPIFFE ID glob (\"spiffe://example.org/payments/*\")",
            );
            valid = false;
        }
        let aws_role_arn = match text("aws_role_arn") {
            None => None,
            Some(Some(arn)) if arn.starts_with("arn:") => Some(arn.to_owned()),
            Some(_) => {
                self.error(
                    &key("aws_role_arn"),
                    "expected an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
                );
                valid = false;
                None
            }
        };
        let vault_role = match text("vault_role") {
            None => None,
            Some(Some(role)) => Some(role.to_owned()),
            Some(None) => {
                self.error(
                    &key("vault_role"),
                    "expected the name of a Vault JWT auth role",
                );
                valid = false;
                None
            }
        };
        if valid && aws_role_arn.is_none() && vault_role.is_none() {
            self.error(
                &key("spiffe_id"),
                "the entry names no role: set aws_role_arn, vault_role or both",
            );
            valid = false;
        }
        valid.then(|| WorkloadRole {
            spiffe_id: spiffe_id.unwrap_or_default(),
            aws_role_arn,
            vault_role,
        })
    }

    /// `[aws] role_arn` and `[vault] role` are required when the side is on, unless
    /// `[[workloads]]` names that side's roles.
    pub(super) fn check_single_roles(
        &mut self,
        aws: &AwsConfig,
        vault: &VaultConfig,
        roles: &WorkloadRoles,
    ) {
        if aws.enabled && !roles.per_workload_aws() && !aws.role_arn.starts_with("arn:") {
            self.error(
                "aws.role_arn",
                "required when aws.enabled (or aws_role_arn in [[workloads]]): an IAM role ARN",
            );
        }
        if !aws.role_arn.is_empty() && !aws.role_arn.starts_with("arn:") {
            self.error("aws.role_arn", "expected an IAM role ARN");
        }
        if vault.enabled && !roles.per_workload_vault() && vault.role.is_empty() {
            self.error(
                "vault.role",
                "required when vault.enabled (or vault_role in [[workloads]]): the JWT auth role to log in as",
            );
        }
    }
}
