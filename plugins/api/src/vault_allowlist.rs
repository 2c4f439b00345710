//! Where Vault envelopes may point. An envelope row is input from outside the process (a
//! file, the control plane), and Steeple's token usually reaches more than any one row
//! should: so every KV read and transit decrypt names a (namespace, mount, path) that must
//! match an operator's `[[vault.allow]]` entry before any call is made. Nothing is allowed
//! when the list is empty, and mounts that hold tokens, policy or identity (`auth/`,
//! `sys/`, `identity/`, `cubbyhole/`) are refused whatever the list says.

use std::fmt;

use crate::envelope::check_vault_segments as check_segments;

/// Mounts no envelope may name: Vault's own token, policy and identity endpoints (reading
/// `auth/token/lookup-self` would serve Steeple's own token) and the token's cubbyhole.
pub const RESERVED_VAULT_MOUNTS: [&str; 4] = ["auth", "sys", "identity", "cubbyhole"];

/// One operator entry: a mount in a namespace, and the paths inside it envelopes may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultAllowRule {
    /// The namespace (`""` or `None` for the root namespace).
    pub namespace: Option<String>,
    /// The secrets engine mount, e.g. `secret` or `transit`.
    pub mount: String,
    /// Path prefixes inside the mount, matched by whole segments (`payments` allows
    /// `payments` and `payments/db`, not `payments-old`); for transit, key names. `*` alone
    /// allows the whole mount. At least one.
    pub paths: Vec<String>,
}

/// What an envelope points at, after defaults: the namespace the call goes to, the mount,
/// and the path inside it (a KV secret path, or a transit key name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaultTarget<'a> {
    /// The effective namespace (`None` for the root namespace).
    pub namespace: Option<&'a str>,
    /// The mount.
    pub mount: &'a str,
    /// The path inside the mount.
    pub path: &'a str,
}

impl fmt::Display for VaultTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match normalize(self.namespace) {
            "" => write!(f, "{}/{}", self.mount, self.path),
            namespace => write!(f, "namespace {namespace}: {}/{}", self.mount, self.path),
        }
    }
}

/// The checked form of the `[[vault.allow]]` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultAllowlist {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    namespace: String,
    mount: String,
    /// `None`: the whole mount (`*`).
    paths: Option<Vec<String>>,
}

/// Why a `[[vault.allow]]` entry was refused; the message names the entry's field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {index}: {problem}")]
pub struct AllowlistError {
    /// The entry's position, from 1.
    pub index: usize,
    /// What is wrong with it.
    pub problem: String,
}

impl VaultAllowlist {
    /// Checks and keeps `rules`. An entry must name a mount outside [`RESERVED_VAULT_MOUNTS`] and
    /// at least one path; every namespace, mount and path must be made of plain segments
    /// (no empty, `.` or `..` segment, no whitespace or control characters).
    pub fn new(rules: Vec<VaultAllowRule>) -> Result<Self, AllowlistError> {
        let mut checked = Vec::with_capacity(rules.len());
        for (position, rule) in rules.into_iter().enumerate() {
            let fail = |problem: String| AllowlistError {
                index: position + 1,
                problem,
            };
            let namespace = normalize(rule.namespace.as_deref()).to_owned();
            if !namespace.is_empty() {
                check_segments("namespace", &namespace).map_err(fail)?;
            }
            let mount = check_mount(&rule.mount).map_err(fail)?;
            if rule.paths.is_empty() {
                return Err(fail(
                    "paths is empty (name path prefixes inside the mount, or \"*\" for all of it)"
                        .to_owned(),
                ));
            }
            let paths = if rule.paths.iter().any(|p| p == "*") {
                None
            } else {
                let mut paths = Vec::with_capacity(rule.paths.len());
                for path in &rule.paths {
                    let path = path.trim_matches('/');
                    check_segments("path", path).map_err(fail)?;
                    paths.push(path.to_owned());
                }
                Some(paths)
            };
            checked.push(Rule {
                namespace,
                mount,
                paths,
            });
        }
        Ok(Self { rules: checked })
    }

    /// Whether no entry allows anything.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Allows `target` if its parts are plain segments, its mount is not reserved and an
    /// entry covers it; otherwise says why, naming the target (never a token or value).
    pub fn check(&self, target: &VaultTarget<'_>) -> Result<(), String> {
        let namespace = normalize(target.namespace);
        if !namespace.is_empty() {
            check_segments("namespace", namespace)?;
        }
        let mount = check_mount(target.mount)?;
        check_segments("path", target.path)?;
        let covered = self.rules.iter().any(|rule| {
            rule.namespace == namespace
                && rule.mount == mount
                && rule
                    .paths
                    .as_ref()
                    .is_none_or(|paths| paths.iter().any(|prefix| within(target.path, prefix)))
        });
        if covered {
            Ok(())
        } else if self.rules.is_empty() {
            Err(format!(
                "{target} is not allowed: [[vault.allow]] is empty, so no Vault path is"
            ))
        } else {
            Err(format!("{target} is outside every [[vault.allow]] entry"))
        }
    }
}

/// `path` is `prefix` or lies under it, segment-wise.
fn within(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A namespace without surrounding slashes (`""` for the root namespace).
fn normalize(namespace: Option<&str>) -> &str {
    namespace.map_or("", |n| n.trim_matches('/'))
}

/// A mount without surrounding slashes, checked: plain segments, not reserved.
fn check_mount(mount: &str) -> Result<String, String> {
    let mount = mount.trim_matches('/');
    check_segments("mount", mount)?;
    let first = mount.split('/').next().unwrap_or(mount);
    if RESERVED_VAULT_MOUNTS.contains(&first) {
        return Err(format!(
            "mount {mount:?} is refused: {first}/ holds Vault's tokens, policy or identity, never an envelope's secret"
        ));
    }
    Ok(mount.to_owned())
}

#[cfg(test)]
#[path = "vault_allowlist_tests.rs"]
mod tests;
