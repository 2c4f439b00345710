//! The `[vault]` section: JWT-SVID login to Vault / OpenBao and its envelope providers.

use std::path::PathBuf;
use std::time::Duration;

use steeple_plugin_api::{VaultAllowRule, VaultAllowlist};
use toml::Value;

use super::Reader;
use crate::config::VaultConfig;
use crate::store::names::IDENTITY_PREFIXES;

impl Reader {
    pub(super) fn read_vault(&mut self) -> VaultConfig {
        let s = "vault";
        let config = VaultConfig {
            enabled: self.bool(s, "enabled", false),
            addr: self.optional_string(s, "addr").unwrap_or_default(),
            namespace: self.optional_string(s, "namespace"),
            auth_mount: self.string(s, "auth_mount", "jwt"),
            role: self.optional_string(s, "role").unwrap_or_default(),
            audience: self.string(s, "audience", "vault"),
            ca_file: self.optional_string(s, "ca_file").map(PathBuf::from),
            ca_spiffe_bundle: self.trust_domain(s, "ca_spiffe_bundle"),
            spiffe_id: self.optional_string(s, "spiffe_id"),
            kv_version: self.parsed(s, "kv_version", 2, "1 or 2", |v| {
                let n = match v {
                    Value::Integer(i) => u8::try_from(*i).ok(),
                    Value::String(text) => text.parse().ok(),
                    _ => None,
                };
                n.filter(|n| matches!(n, 1 | 2))
            }),
            transit_mount: self.string(s, "transit_mount", "transit"),
            kv_refresh_interval: self.duration(s, "kv_refresh_interval", Duration::from_secs(60)),
            revoke_on_shutdown: self.bool(s, "revoke_on_shutdown", true),
            token_resource_name: self.optional_string(s, "token_resource_name"),
            allow_insecure: self.bool(s, "allow_insecure", false),
            allow: Vec::new(),
        };
        let default_namespace = config.namespace.clone();
        let config = VaultConfig {
            allow: self.read_vault_allow(default_namespace.as_deref()),
            ..config
        };
        if config.kv_refresh_interval < Duration::from_millis(100) {
            self.error("vault.kv_refresh_interval", "must be at least 100ms");
        }
        let reserved = |name: &String| IDENTITY_PREFIXES.iter().any(|p| name.starts_with(p));
        if config.token_resource_name.as_ref().is_some_and(reserved) {
            self.error(
                "vault.token_resource_name",
                "must not start with spiffe://, jwt-svid: or jwt-bundle: (names of SVIDs and bundles)",
            );
        }
        self.check_vault_spiffe_id(&config);
        if config.enabled {
            self.check_enabled_vault(&config);
        }
        config
    }

    /// `[[vault.allow]]` entries (`namespace`, `mount`, `paths`), checked as the Vault
    /// provider will check them; an entry without `namespace` is in `default_namespace`.
    fn read_vault_allow(&mut self, default_namespace: Option<&str>) -> Vec<VaultAllowRule> {
        let Some(value) = self.value("vault", "allow").cloned() else {
            return Vec::new();
        };
        let Some(items) = value.as_array() else {
            self.error(
                "vault.allow",
                "expected [[vault.allow]] tables with mount and paths",
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.read_vault_allow_rule(i, item, default_namespace))
            .collect()
    }

    /// `[[vault.allow]]` entry `i`, or `None` with its errors recorded.
    fn read_vault_allow_rule(
        &mut self,
        i: usize,
        item: &Value,
        default_namespace: Option<&str>,
    ) -> Option<VaultAllowRule> {
        const KEYS: [&str; 3] = ["namespace", "mount", "paths"];
        let key = |k: &str| format!("vault.allow[{i}].{k}");
        let Some(table) = item.as_table() else {
            self.error(
                &format!("vault.allow[{i}]"),
                "expected a table with mount and paths",
            );
            return None;
        };
        for unknown in table.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            self.error(&key(unknown), "unknown key");
        }
        let text = |k: &str| table.get(k).and_then(Value::as_str).map(str::to_owned);
        let Some(mount) = text("mount") else {
            self.error(
                &key("mount"),
                "required: the secrets engine mount, e.g. secret",
            );
            return None;
        };
        let paths: Option<Vec<String>> = table.get("paths").and_then(|v| {
            v.as_array()?
                .iter()
                .map(|p| p.as_str().map(str::to_owned))
                .collect()
        });
        let Some(paths) = paths else {
            self.error(
                &key("paths"),
                "required: an array of path prefixes inside the mount, or [\"*\"]",
            );
            return None;
        };
        if table.contains_key("namespace") && text("namespace").is_none() {
            self.error(&key("namespace"), "expected a string");
            return None;
        }
        let rule = VaultAllowRule {
            namespace: text("namespace").or_else(|| default_namespace.map(str::to_owned)),
            mount,
            paths,
        };
        match VaultAllowlist::new(vec![rule.clone()]) {
            Ok(_) => Some(rule),
            Err(e) => {
                self.error(&format!("vault.allow[{i}]"), e.problem);
                None
            }
        }
    }

    /// An optional trust domain, as `example.org` or `spiffe://example.org` (the SPIFFE
    /// ID specification's names; a trust-domain ID has no path).
    fn trust_domain(&mut self, section: &str, key: &str) -> Option<String> {
        let text = self.optional_string(section, key)?;
        if let Some(trust_domain) = crate::spiffe_ids::trust_domain(&text) {
            Some(trust_domain.to_string())
        } else {
            self.error(
                &format!("{section}.{key}"),
                "expected a trust domain such as example.org or spiffe://example.org",
            );
            None
        }
    }

    /// `vault.spiffe_id` pins an SVID of the `ca_spiffe_bundle` trust domain.
    fn check_vault_spiffe_id(&mut self, config: &VaultConfig) {
        let Some(id) = &config.spiffe_id else {
            return;
        };
        let problem = match &config.ca_spiffe_bundle {
            None => Some(
                "needs vault.ca_spiffe_bundle (the pin is checked on SVIDs of that bundle)"
                    .to_owned(),
            ),
            Some(td) => {
                let of_td = crate::spiffe_ids::spiffe_id(id)
                    .is_some_and(|id| id.trust_domain().as_str() == td && !id.path().is_empty());
                (!of_td).then(|| format!("expected a SPIFFE ID of {td}, e.g. spiffe://{td}/vault"))
            }
        };
        if let Some(problem) = problem {
            self.error("vault.spiffe_id", problem);
        }
    }

    fn check_enabled_vault(&mut self, config: &VaultConfig) {
        let addr = config.addr.as_str();
        if addr.is_empty() {
            self.error(
                "vault.addr",
                "required when vault.enabled: Vault's address, e.g. https://vault.example.org:8200",
            );
        } else if !(addr.starts_with("https://") || addr.starts_with("http://")) {
            self.error(
                "vault.addr",
                "expected an http:// or https:// URL, e.g. https://vault.example.org:8200",
            );
        }
    }

    /// Under the production profile a plain-HTTP Vault address would send tokens and
    /// plaintext in the clear.
    pub(super) fn check_vault_profile(&mut self, config: &VaultConfig) {
        if config.enabled && !config.allow_insecure && config.addr.starts_with("http://") {
            self.error(
                "vault.addr",
                "plain-HTTP Vault addresses are refused under the production profile \
                 (use https://, or set vault.allow_insecure = true to allow)",
            );
        }
    }
}
