//! Every key the configuration knows, by section: anything else is an error naming it.

/// `[section]` tables and their keys.
pub(super) const SECTIONS: &[(&str, &[&str])] = &[
    ("agent", &["profile", "lock_memory"]),
    (
        "envelopes",
        &[
            "enabled",
            "paths",
            "poll_interval",
            "refresh_interval",
            "max_ciphertext_bytes",
            "local_master_key_env",
            "require_path_binding",
        ],
    ),
    (
        "control_plane",
        &[
            "url",
            "token_file",
            "jwt_audience",
            "poll_interval",
            "ca_file",
            "allow_insecure",
            "logical_path_prefixes",
        ],
    ),
    (
        "aws",
        &[
            "enabled",
            "role_arn",
            "audience",
            "session_duration",
            "region",
            "sts_endpoint",
            "kms_endpoint",
            "key_arn_allowlist",
            "probe_keys",
            "allow_insecure_endpoints",
            "credentials_resource_name",
            "container_credentials_listen",
            "container_credentials_token_file",
        ],
    ),
    (
        "vault",
        &[
            "enabled",
            "addr",
            "namespace",
            "auth_mount",
            "role",
            "audience",
            "ca_file",
            "ca_spiffe_bundle",
            "spiffe_id",
            "kv_version",
            "transit_mount",
            "kv_refresh_interval",
            "revoke_on_shutdown",
            "token_resource_name",
            "allow_insecure",
            "allow",
        ],
    ),
    (
        "workload_api",
        &["socket", "mode", "admin_socket", "default_svid_hint"],
    ),
    (
        "sds",
        &[
            "socket",
            "socket_mode",
            "default_svid_name",
            "default_bundle_name",
            "default_all_bundles_name",
            "disable_spiffe_cert_validation",
            "max_resource_names",
            "max_resource_name_len",
            "max_request_bytes",
            "max_connections",
            "max_connections_per_uid",
            "max_streams_per_connection",
            "handshake_timeout",
            "idle_timeout",
            "max_streams",
            "require_caller_pid",
        ],
    ),
    (
        "dev",
        &[
            "trust_domain",
            "workload_id",
            "x509_svid_ttl",
            "jwt_svid_ttl",
        ],
    ),
    ("log", &["level", "format"]),
    ("admin", &["listen"]),
    ("audit", &["sink"]),
];
/// `[[name]]` arrays of tables and their keys.
pub(super) const TABLE_ARRAYS: &[(&str, &[&str])] = &[
    ("jwt_svids", &["audience", "spiffe_id", "resource_name"]),
    (
        "callers",
        &["uids", "gids", "exe", "spiffe_ids", "resources"],
    ),
];
