//! The sections for envelopes, the control-plane source and AWS.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml::Value;

use super::Reader;
use crate::authz::Rule;
use crate::config::{
    AdminConfig, AgentSection, AwsConfig, ControlPlaneConfig, EnvelopesConfig, Profile,
};

/// STS accepts 900 s to 12 h; shorter sessions are allowed for tests against STS
/// look-alikes and refused by real STS with a clear error.
const SESSION_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(10)..=Duration::from_secs(12 * 3600);

impl Reader {
    /// A string that may be absent or empty (both mean `None`).
    pub(super) fn optional_string(&mut self, section: &str, key: &str) -> Option<String> {
        match self.value(section, key) {
            None => None,
            Some(Value::String(s)) => (!s.is_empty()).then(|| s.clone()),
            Some(_) => {
                self.error(&format!("{section}.{key}"), "expected a string");
                None
            }
        }
    }

    /// An array of non-empty strings, or (from the environment) a comma-separated list.
    fn strings(&mut self, section: &str, key: &str) -> Vec<String> {
        let parsed = match self.value(section, key) {
            None => return Vec::new(),
            Some(Value::String(s)) => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect::<Option<Vec<_>>>(),
            Some(_) => None,
        };
        parsed.unwrap_or_else(|| {
            self.error(
                &format!("{section}.{key}"),
                "expected an array of non-empty strings",
            );
            Vec::new()
        })
    }

    pub(super) fn read_agent(&mut self) -> AgentSection {
        let profile = self.parsed(
            "agent",
            "profile",
            Profile::Standard,
            "\"standard\" or \"production\"",
            |v| match v.as_str() {
                Some("standard") => Some(Profile::Standard),
                Some("production") => Some(Profile::Production),
                _ => None,
            },
        );
        let lock_memory = self.bool("agent", "lock_memory", true);
        AgentSection {
            profile,
            lock_memory,
        }
    }

    pub(super) fn read_envelopes(&mut self) -> EnvelopesConfig {
        let s = "envelopes";
        let config = EnvelopesConfig {
            enabled: self.bool(s, "enabled", false),
            paths: self
                .strings(s, "paths")
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            poll_interval: self.duration(s, "poll_interval", Duration::from_secs(2)),
            refresh_interval: self.duration(s, "refresh_interval", Duration::from_secs(3600)),
            max_ciphertext_bytes: self.count(s, "max_ciphertext_bytes", 64 * 1024),
            local_master_key_env: self
                .optional_string(s, "local_master_key_env")
                .unwrap_or_default(),
            aliases: self.read_aliases(),
            require_path_binding: self.bool(s, "require_path_binding", true),
        };
        for (key, value) in [
            ("envelopes.poll_interval", config.poll_interval),
            ("envelopes.refresh_interval", config.refresh_interval),
        ] {
            if value < Duration::from_millis(100) {
                self.error(key, "must be at least 100ms");
            }
        }
        config
    }

    fn read_aliases(&mut self) -> BTreeMap<String, String> {
        let Some(table) = self.root.get("envelope_aliases").and_then(Value::as_table) else {
            return BTreeMap::new();
        };
        let aliases: BTreeMap<String, String> = table
            .iter()
            .filter_map(|(path, name)| Some((path.clone(), name.as_str()?.to_owned())))
            .collect();
        let mut by_name: BTreeMap<&str, &str> = BTreeMap::new();
        let mut clashes = Vec::new();
        for (path, name) in &aliases {
            if let Some(first) = by_name.insert(name, path) {
                clashes.push(format!(
                    "{first:?} and {path:?} both map to {name:?}; one SDS name serves one envelope"
                ));
            }
        }
        for clash in clashes {
            self.error("envelope_aliases", clash);
        }
        aliases
    }

    pub(super) fn read_control_plane(&mut self) -> ControlPlaneConfig {
        let s = "control_plane";
        let config = ControlPlaneConfig {
            url: self.optional_string(s, "url").unwrap_or_default(),
            token_file: self.optional_string(s, "token_file").map(PathBuf::from),
            jwt_audience: self.optional_string(s, "jwt_audience"),
            poll_interval: self.duration(s, "poll_interval", Duration::from_secs(30)),
            ca_file: self.optional_string(s, "ca_file").map(PathBuf::from),
            allow_insecure: self.bool(s, "allow_insecure", false),
            logical_path_prefixes: self.strings(s, "logical_path_prefixes"),
        };
        if !config.url.is_empty() {
            if !(config.url.starts_with("https://") || config.url.starts_with("http://")) {
                self.error("control_plane.url", "expected an http:// or https:// URL");
            }
            if config.token_file.is_some() == config.jwt_audience.is_some() {
                self.error(
                    "control_plane.token_file",
                    "set exactly one of token_file and jwt_audience",
                );
            }
        }
        config
    }

    pub(super) fn read_aws(&mut self) -> AwsConfig {
        let s = "aws";
        let config = AwsConfig {
            enabled: self.bool(s, "enabled", false),
            role_arn: self.optional_string(s, "role_arn").unwrap_or_default(),
            audience: self.string(s, "audience", "sts.amazonaws.com"),
            session_duration: self.duration(s, "session_duration", Duration::from_secs(3600)),
            region: self.optional_string(s, "region"),
            sts_endpoint: self.optional_string(s, "sts_endpoint"),
            kms_endpoint: self.optional_string(s, "kms_endpoint"),
            key_arn_allowlist: self.strings(s, "key_arn_allowlist"),
            probe_keys: self.bool(s, "probe_keys", false),
            allow_insecure_endpoints: self.bool(s, "allow_insecure_endpoints", false),
            credentials_resource_name: self.string(
                s,
                "credentials_resource_name",
                "aws-credentials",
            ),
            container_credentials_listen: self.listen_address(
                s,
                "container_credentials_listen",
                "a loopback address such as \"127.0.0.1:9911\"",
                |ip| ip.is_loopback(),
            ),
            container_credentials_token_file: self
                .optional_string(s, "container_credentials_token_file")
                .map(PathBuf::from),
            imds_listen: self.listen_address(
                s,
                "imds_listen",
                "a loopback address such as \"127.0.0.1:1338\", or a link-local \
                 169.254.x.x address assigned to this host",
                is_imds_address,
            ),
        };
        if config.enabled && !SESSION_RANGE.contains(&config.session_duration) {
            self.error("aws.session_duration", "must be between 10s and 12h");
        }
        if config.container_credentials_listen.is_some()
            && config.container_credentials_token_file.is_none()
        {
            self.error(
                "aws.container_credentials_token_file",
                "required when container_credentials_listen is set",
            );
        }
        config
    }
}

impl Reader {
    /// An optional listen address `section.key` whose IP passes `allowed`; empty: off.
    fn listen_address(
        &mut self,
        section: &str,
        key: &str,
        expected: &str,
        allowed: fn(IpAddr) -> bool,
    ) -> Option<SocketAddr> {
        self.parsed(section, key, None, expected, |v| match v.as_str() {
            Some("") => Some(None),
            Some(text) => text
                .parse::<SocketAddr>()
                .ok()
                .filter(|a| allowed(a.ip()))
                .map(Some),
            None => None,
        })
    }

    /// `[[callers]]`: who may fetch which resources from the local endpoints.
    pub(super) fn read_callers(&mut self) -> Vec<Rule> {
        let items = match self.root.get("callers").and_then(Value::as_array) {
            Some(items) => items.clone(),
            None => return Vec::new(),
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.read_caller(i, item))
            .collect()
    }

    /// `[[callers]]` entry `i`, or `None` with its errors recorded.
    fn read_caller(&mut self, i: usize, item: &Value) -> Option<Rule> {
        let key = |k: &str| format!("callers[{i}].{k}");
        let ids = |k: &str| -> Option<Vec<u32>> {
            match item.get(k) {
                None => Some(Vec::new()),
                Some(Value::Array(values)) => values
                    .iter()
                    .map(|v| v.as_integer().and_then(|n| u32::try_from(n).ok()))
                    .collect(),
                Some(_) => None,
            }
        };
        let (uids, gids) = (ids("uids"), ids("gids"));
        if uids.is_none() {
            self.error(&key("uids"), "expected an array of numeric uids");
        }
        if gids.is_none() {
            self.error(&key("gids"), "expected an array of numeric gids");
        }
        let exe = item.get("exe").and_then(Value::as_str).map(str::to_owned);
        let spiffe_ids = self.spiffe_id_globs(&key("spiffe_ids"), item.get("spiffe_ids"));
        let resources: Option<Vec<String>> = item.get("resources").and_then(|v| {
            v.as_array()?
                .iter()
                .map(|r| r.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect()
        });
        let Some(resources) = resources.filter(|r| !r.is_empty()) else {
            self.error(
                &key("resources"),
                "required: an array of resource-name globs",
            );
            return None;
        };
        let (uids, gids) = (uids?, gids?);
        // gid and executable are what a caller can spoof (a forked child holding the
        // socket, an exec racing the accept); the uid is the kernel's peer credential.
        // So every rule names its uids, and gids and exe only narrow it.
        if uids.is_empty() {
            self.error(
                &key("uids"),
                "required: every rule names the uids it grants (gids and exe only narrow a rule: a caller can fake them, see README \"Security controls\")",
            );
            return None;
        }
        Some(Rule {
            uids,
            gids,
            exe,
            spiffe_ids: spiffe_ids?,
            resources,
        })
    }

    /// A rule's `spiffe_ids`: absent (any identity), or an array of `spiffe://` globs.
    fn spiffe_id_globs(&mut self, key: &str, value: Option<&Value>) -> Option<Vec<String>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let globs: Option<Vec<String>> = value.as_array().and_then(|items| {
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| s.starts_with("spiffe://"))
                        .map(str::to_owned)
                })
                .collect()
        });
        match globs.filter(|g| !g.is_empty()) {
            Some(globs) => Some(globs),
            None => {
                self.error(
                    key,
                    "expected a non-empty array of SPIFFE ID globs (\"spiffe://example.org/payments/*\")",
                );
                None
            }
        }
    }

    /// Cross-section rules of the production profile.
    pub(super) fn check_profile(&mut self, config: &crate::config::Config) {
        if config.agent.profile != Profile::Production {
            return;
        }
        if !config.envelopes.local_master_key_env.is_empty() {
            self.error(
                "envelopes.local_master_key_env",
                "the local provider is dev-only and refused under agent.profile = \"production\"",
            );
        }
        self.check_vault_profile(&config.vault);
        let plane = &config.control_plane;
        if !plane.allow_insecure && plane.url.starts_with("http://") {
            self.error(
                "control_plane.url",
                "plain-HTTP control planes are refused under the production profile: the bearer \
                 token or JWT-SVID would cross the network in clear, and anyone on the path could \
                 inject envelope rows (use https://, or set control_plane.allow_insecure = true to allow)",
            );
        }
        if config.aws.allow_insecure_endpoints {
            return;
        }
        for (key, endpoint, service_var) in [
            (
                "aws.sts_endpoint",
                &config.aws.sts_endpoint,
                "AWS_ENDPOINT_URL_STS",
            ),
            (
                "aws.kms_endpoint",
                &config.aws.kms_endpoint,
                "AWS_ENDPOINT_URL_KMS",
            ),
        ] {
            let (key, endpoint) = match endpoint {
                Some(endpoint) => (key, endpoint.clone()),
                None if config.aws.enabled => match self.sdk_endpoint(service_var) {
                    Some(found) => found,
                    None => continue,
                },
                None => continue,
            };
            if is_insecure_endpoint(&endpoint) {
                self.error(
                    key,
                    "plain-HTTP or loopback endpoints are refused under the production profile \
                     (set aws.allow_insecure_endpoints = true to allow)",
                );
            }
        }
    }

    /// The endpoint the AWS SDK takes from the environment when `[aws]` names none:
    /// `service_var` (`AWS_ENDPOINT_URL_STS`, …), else `AWS_ENDPOINT_URL`, with the
    /// variable that set it.
    fn sdk_endpoint(&self, service_var: &'static str) -> Option<(&'static str, String)> {
        let env = &self.aws_endpoint_env;
        if env
            .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return None;
        }
        [service_var, "AWS_ENDPOINT_URL"]
            .into_iter()
            .find_map(|var| {
                env.get(var)
                    .filter(|url| !url.is_empty())
                    .map(|url| (var, url.clone()))
            })
    }
}

/// Where the IMDS emulation may listen: loopback, or an IPv4 link-local address (the
/// range EC2's own 169.254.169.254 is in), which routers never forward.
fn is_imds_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// `http://…`, or a host that is loopback (`localhost`, 127.0.0.0/8, `::1`).
fn is_insecure_endpoint(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return true;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Reader {
    pub(super) fn read_admin(&mut self) -> AdminConfig {
        let listen = self.parsed(
            "admin",
            "listen",
            None,
            "an address such as \"127.0.0.1:9464\" (empty: no admin listener)",
            |v| match v.as_str() {
                Some("") => Some(None),
                Some(text) => text.parse::<std::net::SocketAddr>().ok().map(Some),
                None => None,
            },
        );
        AdminConfig { listen }
    }
}

#[cfg(test)]
mod tests {
    use super::is_insecure_endpoint;

    #[test]
    fn insecure_endpoints_are_plain_http_or_loopback() {
        for url in [
            "http://kms.example.com",
            "https://127.0.0.1:4566",
            "https://localhost",
            "https://[::1]:443/",
        ] {
            assert!(is_insecure_endpoint(url), "{url}");
        }
        assert!(!is_insecure_endpoint(
            "https://vpce-1.kms.us-east-1.vpce.amazonaws.com"
        ));
        assert!(!is_insecure_endpoint("https://10.0.0.5:443"));
    }
}
