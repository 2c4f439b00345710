//! The server and agent configuration files (HCL).

use std::path::Path;

use super::SpireOptions;

// KeyManager "disk" on both sides rather than "memory": with in-memory keys a restarted
// server mints a new CA the running agent does not trust (the agent crashes with "x509:
// certificate signed by unknown authority"), and a restarted agent cannot reuse its
// join-token SVID (SPIRE warns it "will need to be manually evicted").
pub(super) fn server(dir: &Path, port: u16, o: &SpireOptions) -> String {
    let dir = dir.display();
    format!(
        r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{dir}/server.sock"
    trust_domain = "{td}"
    data_dir = "{dir}/server-data"
    log_level = "{log_level}"
    default_x509_svid_ttl = "{x509_ttl}"
    default_jwt_svid_ttl = "{jwt_ttl}"
    ca_ttl = "{ca_ttl}"
    # The agent's own SVID lives an hour whatever the workloads' TTL, as in production:
    # an agent whose SVID expires while the server is down exits for good.
    agent_ttl = "1h"
    jwt_key_type = "rsa-2048"
    experimental {{
        # Serve new and changed entries to the agent within a second, not five.
        cache_reload_interval = "1s"
    }}
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{dir}/server-data/datastore.sqlite3"
        }}
    }}
    KeyManager "disk" {{
        plugin_data {{ keys_path = "{dir}/server-data/keys.json" }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
"#,
        td = o.trust_domain,
        log_level = o.log_level,
        x509_ttl = o.default_x509_svid_ttl,
        jwt_ttl = o.default_jwt_svid_ttl,
        ca_ttl = o.ca_ttl,
    )
}

pub(super) fn agent(dir: &Path, port: u16, socket: &Path, o: &SpireOptions) -> String {
    let delegation = if o.authorized_delegates.is_empty() {
        String::new()
    } else {
        let delegates: Vec<String> = o
            .authorized_delegates
            .iter()
            .map(|id| format!("\"{id}\""))
            .collect();
        format!(
            "admin_socket_path = \"{}/admin/admin.sock\"\n    authorized_delegates = [{}]\n    ",
            dir.display(),
            delegates.join(", ")
        )
    };
    let socket = socket.display();
    let dir = dir.display();
    format!(
        r#"agent {{
    data_dir = "{dir}/agent-data"
    log_level = "{log_level}"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{socket}"
    {delegation}trust_bundle_path = "{dir}/bundle.pem"
    trust_domain = "{td}"
    sds {{
        default_svid_name = "default"
        default_bundle_name = "ROOTCA"
        default_all_bundles_name = "ALL"
    }}
    experimental {{
        sync_interval = "1s"
    }}
}}
plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{ directory = "{dir}/agent-data" }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
"#,
        td = o.trust_domain,
        log_level = o.log_level,
    )
}
