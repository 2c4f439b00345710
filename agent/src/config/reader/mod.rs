//! Turns a TOML table (with environment overrides folded in) into a [`Config`], keeping
//! every error instead of stopping at the first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

pub(super) mod explain;
mod keys;

/// The Vault CLI's environment, taken as defaults for `[vault]` as Vault Agent and the
/// Vault SDKs take it: the file and `STEEPLE_VAULT_*` win.
const VAULT_ENV_DEFAULTS: [(&str, &str); 3] = [
    ("VAULT_ADDR", "addr"),
    ("VAULT_NAMESPACE", "namespace"),
    ("VAULT_CACERT", "ca_file"),
];
mod sections;
mod vault;
mod workload_api;
mod workloads;

use keys::{SECTIONS, TABLE_ARRAYS};

use super::{
    Config, ConfigErrors, DevSection, JwtSvidConfig, KeyError, LogConfig, LogFormat, SdsConfig,
};
use crate::store::names::jwt_svid_name;

/// The AWS SDK's variables that choose the STS and KMS endpoints.
const AWS_ENDPOINT_VARS: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_KMS",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
];

pub(super) struct Reader {
    root: Table,
    /// `section.key` → the environment variable that set it, for error messages.
    from_env: HashMap<String, String>,
    spiffe_endpoint_socket: Option<String>,
    /// The AWS SDK's endpoint variables (`AWS_ENDPOINT_URL`, …), for the production
    /// profile's endpoint check: the SDK applies them when `[aws]` names no endpoint.
    aws_endpoint_env: HashMap<String, String>,
    errors: Vec<KeyError>,
}

impl Reader {
    pub(super) fn new(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let root: Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigErrors(vec![KeyError {
                key: "<file>".into(),
                message: format!("not valid TOML: {}", e.message()),
            }])
        })?;
        let mut reader = Self {
            root,
            from_env: HashMap::new(),
            spiffe_endpoint_socket: None,
            aws_endpoint_env: HashMap::new(),
            errors: Vec::new(),
        };
        reader.check_unknown_keys();
        let mut vault_defaults = Vec::new();
        for (name, value) in env {
            match VAULT_ENV_DEFAULTS.iter().find(|(var, _)| *var == name) {
                Some((_, key)) => vault_defaults.push((name, *key, value)),
                None => reader.apply_env(name, value),
            }
        }
        for (name, key, value) in vault_defaults {
            reader.apply_default("vault", key, name, value);
        }
        Ok(reader)
    }

    pub(super) fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    fn error(&mut self, key: &str, message: impl Into<String>) {
        let key = self
            .from_env
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_owned());
        self.errors.push(KeyError {
            key,
            message: message.into(),
        });
    }

    fn check_unknown_keys(&mut self) {
        let mut unknown = Vec::new();
        for (name, value) in &self.root {
            if let Some((_, keys)) = TABLE_ARRAYS.iter().find(|(n, _)| n == name) {
                let Some(items) = value.as_array() else {
                    unknown.push((name.clone(), "must be an array of tables ([[name]])"));
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    for key in item.as_table().into_iter().flat_map(|t| t.keys()) {
                        if !keys.contains(&key.as_str()) {
                            unknown.push((format!("{name}[{i}].{key}"), "unknown key"));
                        }
                    }
                }
                continue;
            }
            if name == "envelope_aliases" {
                let valid = value.as_table().is_some_and(|t| {
                    t.values()
                        .all(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                });
                if !valid {
                    unknown.push((
                        name.clone(),
                        "must map logical paths to non-empty resource names",
                    ));
                }
                continue;
            }
            let Some((_, keys)) = SECTIONS.iter().find(|(s, _)| s == name) else {
                unknown.push((name.clone(), "unknown section"));
                continue;
            };
            let Some(table) = value.as_table() else {
                unknown.push((name.clone(), "must be a table"));
                continue;
            };
            for key in table.keys().filter(|k| !keys.contains(&k.as_str())) {
                unknown.push((format!("{name}.{key}"), "unknown key"));
            }
        }
        for (key, message) in unknown {
            self.error(&key, message);
        }
    }

    /// Sets `section.key` to `value` from the environment variable `name`, unless the
    /// file or a `STEEPLE_` variable set it.
    fn apply_default(&mut self, section: &str, key: &str, name: String, value: String) {
        if self.value(section, key).is_some() {
            return;
        }
        let table = self
            .root
            .entry(section.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = table {
            t.insert(key.to_owned(), Value::String(value));
            self.from_env.insert(format!("{section}.{key}"), name);
        }
    }

    /// `STEEPLE_SDS_SOCKET=/x` sets `sds.socket`; variables whose prefix names no section
    /// are not Steeple's config and are left alone.
    fn apply_env(&mut self, name: String, value: String) {
        if name == "SPIFFE_ENDPOINT_SOCKET" {
            self.spiffe_endpoint_socket = Some(value);
            return;
        }
        if AWS_ENDPOINT_VARS.contains(&name.as_str()) {
            self.aws_endpoint_env.insert(name, value);
            return;
        }
        let Some(rest) = name.strip_prefix("STEEPLE_") else {
            return;
        };
        let Some((section, keys)) = SECTIONS.iter().find(|(s, _)| {
            rest.strip_prefix(&s.to_ascii_uppercase())
                .is_some_and(|r| r.starts_with('_'))
        }) else {
            return;
        };
        let key = rest[section.len() + 1..].to_ascii_lowercase();
        let dotted = format!("{section}.{key}");
        if !keys.contains(&key.as_str()) {
            self.errors.push(KeyError {
                key: name,
                message: format!("unknown key {dotted}"),
            });
            return;
        }
        let table = self
            .root
            .entry(section.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = table {
            t.insert(key, Value::String(value));
            self.from_env.insert(dotted, name);
        }
    }

    fn value(&self, section: &str, key: &str) -> Option<&Value> {
        self.root.get(section)?.as_table()?.get(key)
    }

    fn string(&mut self, section: &str, key: &str, default: &str) -> String {
        match self.value(section, key) {
            None => default.to_owned(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                self.error(&format!("{section}.{key}"), "expected a non-empty string");
                default.to_owned()
            }
        }
    }

    fn parsed<T>(
        &mut self,
        section: &str,
        key: &str,
        default: T,
        expected: &str,
        parse: impl Fn(&Value) -> Option<T>,
    ) -> T {
        match self.value(section, key).map(&parse) {
            None => default,
            Some(Some(v)) => v,
            Some(None) => {
                self.error(&format!("{section}.{key}"), format!("expected {expected}"));
                default
            }
        }
    }

    fn bool(&mut self, section: &str, key: &str, default: bool) -> bool {
        self.parsed(section, key, default, "true or false", |v| match v {
            Value::Boolean(b) => Some(*b),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
    }

    fn count(&mut self, section: &str, key: &str, default: usize) -> usize {
        self.parsed(section, key, default, "a positive integer", |v| {
            let n = match v {
                Value::Integer(i) => usize::try_from(*i).ok(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            n.filter(|n| *n > 0)
        })
    }

    fn duration(&mut self, section: &str, key: &str, default: Duration) -> Duration {
        self.parsed(
            section,
            key,
            default,
            "a duration such as \"30s\", \"5m\", \"1h\"",
            |v| match v {
                Value::String(s) => parse_duration(s),
                _ => None,
            },
        )
    }

    fn mode(&mut self, section: &str, key: &str, default: u32) -> u32 {
        self.parsed(
            section,
            key,
            default,
            "octal permission bits such as \"0600\"",
            |v| {
                let mode = match v {
                    Value::Integer(i) => u32::try_from(*i).ok(),
                    Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
                    _ => None,
                };
                mode.filter(|m| *m <= 0o777)
            },
        )
    }

    pub(super) fn read_config(&mut self) -> Config {
        let config = self.read_sections();
        self.check_single_roles(&config.aws, &config.vault, &config.workloads);
        self.check_profile(&config);
        config
    }

    fn read_sections(&mut self) -> Config {
        let (agent, envelopes) = (self.read_agent(), self.read_envelopes());
        let control_plane = self.read_control_plane();
        let (aws, vault) = (self.read_aws(), self.read_vault());
        let workloads = self.read_workloads(aws.enabled, vault.enabled);
        Config {
            agent,
            envelopes,
            control_plane,
            aws,
            vault,
            workload_api: self.read_workload_api(),
            sds: self.read_sds(),
            jwt_svids: self.read_jwt_svids(),
            callers: self.read_callers(),
            workloads,
            dev: self.read_dev(),
            log: self.read_log(),
            admin: self.read_admin(),
            audit: self.parsed(
                "audit",
                "sink",
                crate::audit::AuditSink::default(),
                "\"off\", \"stdout\", \"stderr\", \"syslog\" or \"file:/absolute/path\"",
                |v| v.as_str().and_then(crate::audit::AuditSink::parse),
            ),
        }
    }

    fn read_sds(&mut self) -> SdsConfig {
        let s = "sds";
        let config = SdsConfig {
            socket: PathBuf::from(self.string(s, "socket", "/run/steeple/sds.sock")),
            socket_mode: self.mode(s, "socket_mode", 0o600),
            default_svid_name: self.string(s, "default_svid_name", "default"),
            default_bundle_name: self.string(s, "default_bundle_name", "ROOTCA"),
            default_all_bundles_name: self.string(s, "default_all_bundles_name", "ALL"),
            disable_spiffe_cert_validation: self.bool(s, "disable_spiffe_cert_validation", false),
            max_resource_names: self.count(s, "max_resource_names", 1024),
            max_resource_name_len: self.count(s, "max_resource_name_len", 2048),
            max_request_bytes: self.count(s, "max_request_bytes", 256 * 1024),
            max_connections: self.count(s, "max_connections", 4096),
            max_connections_per_uid: self.count(s, "max_connections_per_uid", 512),
            max_streams_per_connection: u32::try_from(self.count(
                s,
                "max_streams_per_connection",
                1024,
            ))
            .unwrap_or(u32::MAX),
            handshake_timeout: self.duration(s, "handshake_timeout", Duration::from_secs(10)),
            idle_timeout: self.duration(s, "idle_timeout", Duration::from_secs(60)),
            max_streams: self.count(s, "max_streams", 16 * 1024),
            require_caller_pid: self.bool(s, "require_caller_pid", false),
        };
        if config.idle_timeout.is_zero() {
            self.error(
                "sds.idle_timeout",
                "must be more than 0 (it is how long an unused connection may stay)",
            );
        }

        let names = [
            &config.default_svid_name,
            &config.default_bundle_name,
            &config.default_all_bundles_name,
        ];
        if names[0] == names[1] || names[1] == names[2] || names[0] == names[2] {
            self.error(
                "sds.default_svid_name",
                "the three default names must differ",
            );
        }
        config
    }

    fn read_jwt_svids(&mut self) -> Vec<JwtSvidConfig> {
        let items = match self.root.get("jwt_svids").and_then(Value::as_array) {
            Some(items) => items.clone(),
            None => return Vec::new(),
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_owned);
            let Some(audience) = field("audience").filter(|a| !a.is_empty()) else {
                self.error(
                    &format!("jwt_svids[{i}].audience"),
                    "required, a non-empty string",
                );
                continue;
            };
            let spiffe_id = field("spiffe_id");
            if spiffe_id
                .as_deref()
                .is_some_and(|id| crate::spiffe_ids::spiffe_id(id).is_none())
            {
                self.error(
                    &format!("jwt_svids[{i}].spiffe_id"),
                    "expected spiffe://trust-domain/path",
                );
            }
            let resource_name = field("resource_name").unwrap_or_else(|| jwt_svid_name(&audience));
            out.push(JwtSvidConfig {
                audience,
                spiffe_id,
                resource_name,
            });
        }
        out
    }

    fn read_dev(&mut self) -> DevSection {
        let trust_domain = self.string("dev", "trust_domain", "steeple.dev");
        let default_id = format!("spiffe://{trust_domain}/workload");
        let workload_id = self.string("dev", "workload_id", &default_id);
        if !workload_id.starts_with(&format!("spiffe://{trust_domain}/")) {
            self.error("dev.workload_id", "must be a SPIFFE ID in dev.trust_domain");
        }
        let x509_svid_ttl = self.duration("dev", "x509_svid_ttl", Duration::from_secs(60));
        let jwt_svid_ttl = self.duration("dev", "jwt_svid_ttl", Duration::from_secs(300));
        // The dev CA issues lifetimes between 2 s (so rotation at half life is
        // observable) and 24 h.
        let range = Duration::from_secs(2)..=Duration::from_secs(24 * 3600);
        for (key, ttl) in [
            ("dev.x509_svid_ttl", x509_svid_ttl),
            ("dev.jwt_svid_ttl", jwt_svid_ttl),
        ] {
            if !range.contains(&ttl) {
                self.error(key, "must be between 2s and 24h");
            }
        }
        DevSection {
            trust_domain,
            workload_id,
            x509_svid_ttl,
            jwt_svid_ttl,
        }
    }

    fn read_log(&mut self) -> LogConfig {
        let level = self.string("log", "level", "info");
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.error(
                "log.level",
                "expected a tracing filter such as \"info\" or \"steeple=debug\"",
            );
        }
        let format = self.parsed(
            "log",
            "format",
            LogFormat::Text,
            "\"text\" or \"json\"",
            |v| match v.as_str() {
                Some("text") => Some(LogFormat::Text),
                Some("json") => Some(LogFormat::Json),
                _ => None,
            },
        );
        LogConfig { level, format }
    }
}

/// `250ms`, `30s`, `5m`, `2h`.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}
