//! Steeple's configuration: a TOML file plus `STEEPLE_<SECTION>_<KEY>` environment
//! overrides. Every invalid key is reported, by name, in one go.

mod reader;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reader::Reader;
pub use reader::explain::{KeyOrigin, Origin};

use crate::store::names::{ClaimedNames, IDENTITY_PREFIXES};

/// Every problem found in a configuration, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<KeyError>);

/// One invalid key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct KeyError {
    /// Dotted key path (`sds.socket_mode`) or the environment variable that set it.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Where the SPIFFE Workload API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadApiConfig {
    /// Unix socket of the Workload API. Default: `SPIFFE_ENDPOINT_SOCKET`, else SPIRE
    /// agent's default `/tmp/spire-agent/public/api.sock`.
    pub socket: PathBuf,
    /// Whose identity the agent serves (`mode`). Default: its own.
    pub mode: IdentityMode,
}

/// Whose identity the agent serves over SDS (`workload_api.mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityMode {
    /// `"self"`: its own, from the Workload API (a sidecar: one workload, one agent).
    Own,
    /// `"delegated"`: each local caller its own, through SPIRE agent's Delegated Identity
    /// API (a node agent).
    Delegated(DelegatedConfig),
}

/// How a node agent reaches SPIRE agent's Delegated Identity API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegatedConfig {
    /// SPIRE agent's `admin_socket_path` (`workload_api.admin_socket`, required).
    pub admin_socket: PathBuf,
    /// The hint (a registration entry's `-hint`) of the SVID served as `default` when a
    /// workload has several (`workload_api.default_svid_hint`); otherwise SPIRE's first,
    /// the lowest entry ID.
    pub default_svid_hint: Option<String>,
    /// Most calls making SPIRE agent attest a workload that may be in flight at once
    /// (`workload_api.max_concurrent_attestations`, default 16); the rest queue.
    pub max_concurrent_attestations: usize,
}

/// The SDS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsConfig {
    /// Unix socket path. Default `/run/steeple/sds.sock`.
    pub socket: PathBuf,
    /// Permission bits of the socket. Default `0o600` (owner only).
    pub socket_mode: u32,
    /// Name of the default X.509-SVID's `tls_certificate`. Default `default` (as SPIRE).
    pub default_svid_name: String,
    /// Name of the own trust domain's `validation_context`. Default `ROOTCA` (as SPIRE).
    pub default_bundle_name: String,
    /// Name of the validation context holding every bundle. Default `ALL` (as SPIRE).
    pub default_all_bundles_name: String,
    /// Always send plain `trusted_ca` instead of the SPIFFE certificate validator.
    /// Default false (as SPIRE).
    pub disable_spiffe_cert_validation: bool,
    /// Most resource names one request may carry. Default 1024.
    pub max_resource_names: usize,
    /// Longest resource name accepted, in bytes. Default 2048.
    pub max_resource_name_len: usize,
    /// Largest request message accepted, in bytes. Default 256 KiB.
    pub max_request_bytes: usize,
    /// SDS connections open at once, all callers together. Default 4096.
    pub max_connections: usize,
    /// SDS connections open at once per uid. Default 512.
    pub max_connections_per_uid: usize,
    /// Streams one connection may have open at once. Default 1024 (an Envoy opens one
    /// per SDS secret it watches, over one connection).
    pub max_streams_per_connection: u32,
    /// How long a new connection may stay silent (no HTTP/2 preface) before it is
    /// closed. Default 10 s.
    pub handshake_timeout: Duration,
    /// How long a connection may carry no stream and no request before it is closed.
    /// Default 60 s (an Envoy keeps a stream open on its SDS connection; a client that
    /// only fetches reconnects when it next needs to).
    pub idle_timeout: Duration,
    /// Streams open at once over all connections; a stream past it is refused with
    /// `RESOURCE_EXHAUSTED`. Default 16384.
    pub max_streams: usize,
    /// Refuse callers whose peer credentials carry no pid (a client in another PID
    /// namespace, e.g. another pod): their liveness cannot be checked. Default false
    /// (admitted, with an audit note and `steeple_sds_callers_without_pid_total`).
    pub require_caller_pid: bool,
}

/// A JWT-SVID kept fresh and served as a `generic_secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvidConfig {
    /// The audience the token is for.
    pub audience: String,
    /// Which of the workload's identities; default the Workload API's first.
    pub spiffe_id: Option<String>,
    /// SDS resource name. Default `jwt-svid:<audience>`.
    pub resource_name: String,
}

/// The embedded dev trust domain used by `steeple dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevSection {
    /// Trust domain name. Default `steeple.dev`.
    pub trust_domain: String,
    /// SPIFFE ID issued to the workload. Default `spiffe://steeple.dev/workload`.
    pub workload_id: String,
    /// X.509-SVID lifetime; reissued at half. Default 60 s.
    pub x509_svid_ttl: Duration,
    /// JWT-SVID lifetime. Default 5 min.
    pub jwt_svid_ttl: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Operational logging (stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing filter directive, e.g. `info` or `steeple=debug`. Default `info`.
    pub level: String,
    /// Default text.
    pub format: LogFormat,
}

/// How strict the agent is about dev-only conveniences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The default: dev-only features are allowed with a WARN.
    Standard,
    /// Dev-only features (the `local` provider), plain-HTTP or loopback AWS endpoints and
    /// a plain-HTTP Vault address are refused unless explicitly allowed.
    Production,
}

/// `[agent]`: agent-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSection {
    /// `standard` (default) or `production`.
    pub profile: Profile,
    /// Lock the agent's memory (`mlockall`) so secrets are never swapped out, when
    /// `RLIMIT_MEMLOCK` allows it (unlimited); a WARN otherwise. Default true.
    pub lock_memory: bool,
}

/// `[envelopes]`: resolving secret envelopes into SDS generic secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopesConfig {
    /// Off by default, like the control plane's `dual_custody_intercept` flag.
    pub enabled: bool,
    /// Files or directories of JSON/YAML envelope rows, hot-reloaded.
    pub paths: Vec<PathBuf>,
    /// How often files are checked for changes. Default 2 s.
    pub poll_interval: Duration,
    /// How often every envelope is resolved again (picks up disabled or rotated keys).
    /// Default 1 h.
    pub refresh_interval: Duration,
    /// Largest decoded ciphertext or data key accepted. Default 64 KiB.
    pub max_ciphertext_bytes: usize,
    /// The environment variable holding the `local` provider's master key; empty
    /// (default) leaves the provider off. Dev only.
    pub local_master_key_env: String,
    /// `[envelope_aliases]`: logical path → SDS resource name (default: the path). No two
    /// paths may map to one name.
    pub aliases: std::collections::BTreeMap<String, String>,
    /// Refuse KMS and transit rows sealed directly without their logical path bound into
    /// the context (rows sealed before `steeple envelope seal` bound it). Default true;
    /// false only while re-sealing such rows.
    pub require_path_binding: bool,
}

/// `[control_plane]`: an HTTP source of envelope rows (metadata only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneConfig {
    /// Base URL; rows come from `{url}/v1/crypto/envelope-secrets`. Empty: no source.
    pub url: String,
    /// A file holding the bearer token (re-read on every poll).
    pub token_file: Option<PathBuf>,
    /// Authenticate with a JWT-SVID for this audience instead of a token file.
    pub jwt_audience: Option<String>,
    /// Poll interval. Default 30 s.
    pub poll_interval: Duration,
    /// Extra PEM CA certificates to trust for the control plane (besides the system's).
    pub ca_file: Option<PathBuf>,
    /// Allow a plain `http://` URL under the production profile. Default false.
    pub allow_insecure: bool,
    /// Logical-path prefixes the control plane's rows must start with; others are
    /// refused. Default none: any path (operator file rows still win on a duplicate).
    pub logical_path_prefixes: Vec<String>,
}

/// `[aws]`: STS web-identity exchange and KMS envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// Exchange JWT-SVIDs for AWS credentials. Default false.
    pub enabled: bool,
    /// The role to assume.
    pub role_arn: String,
    /// JWT-SVID audience. Default `sts.amazonaws.com`.
    pub audience: String,
    /// Requested session duration. Default 1 h (STS allows 900 s to 12 h).
    pub session_duration: Duration,
    /// STS region. Default: the AWS SDK's (`AWS_REGION`, `AWS_DEFAULT_REGION`, the
    /// profile's), else `us-east-1`.
    pub region: Option<String>,
    /// STS endpoint override (VPC endpoint, test server). Default: the AWS SDK's
    /// (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, the profile's), else the regional one.
    pub sts_endpoint: Option<String>,
    /// KMS endpoint override. Default: the AWS SDK's (`AWS_ENDPOINT_URL_KMS`, …), else
    /// the key's region's.
    pub kms_endpoint: Option<String>,
    /// Key ARN prefixes KMS envelopes may use; anything else is refused before any call.
    pub key_arn_allowlist: Vec<String>,
    /// DescribeKey every envelope key at start and report failures by ARN.
    pub probe_keys: bool,
    /// Allow plain-HTTP or loopback endpoints under the production profile.
    pub allow_insecure_endpoints: bool,
    /// SDS generic secret carrying the credentials (credential_process JSON).
    /// Default `aws-credentials`.
    pub credentials_resource_name: String,
    /// Loopback address of the container-credentials endpoint; empty: off.
    pub container_credentials_listen: Option<std::net::SocketAddr>,
    /// File holding the token callers must send as `Authorization` (re-read per request).
    pub container_credentials_token_file: Option<PathBuf>,
    /// Address of the IMDSv2 emulation (`AWS_EC2_METADATA_SERVICE_ENDPOINT`): loopback or
    /// a link-local 169.254.x.x address assigned to this host; empty: off.
    pub imds_listen: Option<std::net::SocketAddr>,
}

/// `[vault]`: JWT-SVID login to Vault / OpenBao, `vault_delegate` (KV) and
/// `vault_transit` envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// Log in to Vault with JWT-SVIDs and resolve Vault envelopes. Default false.
    pub enabled: bool,
    /// Vault's address, scheme included (`https://vault.example.org:8200`). Required
    /// when enabled.
    pub addr: String,
    /// The namespace (`X-Vault-Namespace`) of the login and of every envelope that names
    /// none itself. Default none (the root namespace).
    pub namespace: Option<String>,
    /// The JWT auth method's mount. Default `jwt`.
    pub auth_mount: String,
    /// The JWT auth role to log in as. Required when enabled.
    pub role: String,
    /// The audience of the JWT-SVIDs fetched for the login (the role's
    /// `bound_audiences`). Default `vault`.
    pub audience: String,
    /// PEM CA certificates trusted for Vault's TLS certificate, on top of the system
    /// roots (e.g. the SPIFFE bundle written to a file). Default none.
    pub ca_file: Option<PathBuf>,
    /// Trust Vault's TLS certificate by the X.509 bundle of this trust domain (name
    /// without `spiffe://`; own or federated), followed live from the Workload API — the
    /// system roots are then not trusted, `ca_file` still is. Default none.
    pub ca_spiffe_bundle: Option<String>,
    /// With `ca_spiffe_bundle`: the SPIFFE ID Vault's certificate must carry (its URI
    /// SAN), so no other workload of the trust domain holding an SVID with Vault's DNS
    /// name is trusted. Default none (any SVID of the bundle with the DNS name).
    pub spiffe_id: Option<String>,
    /// The KV secrets engine version `vault_delegate` envelopes read: 1 or 2. Default 2.
    pub kv_version: u8,
    /// The transit mount of `vault_transit` envelopes that name none. Default `transit`.
    pub transit_mount: String,
    /// How often `vault_delegate` envelopes are read again (a changed value is pushed as
    /// a new SDS version); other envelopes follow `envelopes.refresh_interval`.
    /// Default 60 s.
    pub kv_refresh_interval: Duration,
    /// Revoke the token (`revoke-self`) when the agent stops. Default true.
    pub revoke_on_shutdown: bool,
    /// Serve the Vault token itself as this SDS generic secret, for workloads that talk
    /// to Vault directly. Default none (not served).
    pub token_resource_name: Option<String>,
    /// Allow a plain `http://` address under the production profile. Default false.
    pub allow_insecure: bool,
    /// `[[vault.allow]]`: the (namespace, mount, path prefixes) envelope rows may name;
    /// an entry without `namespace` is in `namespace`'s. Default none: no Vault envelope
    /// resolves.
    pub allow: Vec<steeple_plugin_api::VaultAllowRule>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[agent]`.
    pub agent: AgentSection,
    /// `[envelopes]` and `[envelope_aliases]`.
    pub envelopes: EnvelopesConfig,
    /// `[control_plane]`.
    pub control_plane: ControlPlaneConfig,
    /// `[aws]`.
    pub aws: AwsConfig,
    /// `[vault]`.
    pub vault: VaultConfig,
    /// `[workload_api]`.
    pub workload_api: WorkloadApiConfig,
    /// `[sds]`.
    pub sds: SdsConfig,
    /// `[[jwt_svids]]`.
    pub jwt_svids: Vec<JwtSvidConfig>,
    /// `[[callers]]`: per-caller authorization rules for the local endpoints; none means
    /// only the agent's own uid, to everything.
    pub callers: Vec<crate::authz::Rule>,
    /// `[[workloads]]`: AWS and Vault roles by workload SPIFFE ID; none means one role per
    /// side (`[aws] role_arn`, `[vault] role`) for every caller.
    pub workloads: crate::workload_roles::WorkloadRoles,
    /// `[dev]`.
    pub dev: DevSection,
    /// `[log]`.
    pub log: LogConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[audit] sink`: where audit events go. Default stderr.
    pub audit: crate::audit::AuditSink,
}

/// `[admin]`: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminConfig {
    /// Where to listen, e.g. `127.0.0.1:9464`. Default none (no admin listener). A
    /// non-loopback address (for Kubernetes probes on the pod IP) is allowed with a WARN.
    pub listen: Option<std::net::SocketAddr>,
}

impl Config {
    /// Reads `path` (if any) and applies `STEEPLE_*` overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        Self::parse(&read_file(path)?, env)
    }

    /// Every key of the configuration at `path` with `env` applied: the `STEEPLE_*`
    /// variable that overrides it and where its value came from (`check-config
    /// --explain`, rendered by [`render_explained`]).
    pub fn explain(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<KeyOrigin>, ConfigErrors> {
        Ok(reader::explain::explain(&read_file(path)?, env))
    }

    /// Parses TOML `text` and applies `STEEPLE_*` overrides from `env`.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let mut reader = Reader::new(text, env)?;
        let config = reader.read_config();
        reader.finish().map(|()| config)
    }

    /// The SDS names this configuration's producers serve under, other than envelopes:
    /// the SVID and bundle defaults, every prefix the identity side uses, the JWT-SVIDs,
    /// and what the sides serve (credentials, the Vault token). No envelope may take them.
    pub fn claimed_names(&self) -> ClaimedNames {
        let sds = &self.sds;
        let mut exact = vec![
            sds.default_svid_name.clone(),
            sds.default_bundle_name.clone(),
            sds.default_all_bundles_name.clone(),
        ];
        exact.extend(self.jwt_svids.iter().map(|j| j.resource_name.clone()));
        exact.push(self.aws.credentials_resource_name.clone());
        exact.extend(self.vault.token_resource_name.clone());
        ClaimedNames {
            exact,
            prefixes: IDENTITY_PREFIXES.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

/// The `--explain` table: one line per key (key, variable(s), origin).
pub fn render_explained(keys: &[KeyOrigin]) -> String {
    reader::explain::render(keys)
}

/// The text of the file at `path`; empty without one.
fn read_file(path: Option<&Path>) -> Result<String, ConfigErrors> {
    let Some(path) = path else {
        return Ok(String::new());
    };
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![KeyError {
            key: path.display().to_string(),
            message: format!("cannot read config file: {e}"),
        }])
    })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
