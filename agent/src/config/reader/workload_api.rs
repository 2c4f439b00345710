//! The `[workload_api]` section: where the Workload API is, and whose identity the agent
//! serves (`mode`: its own, or each caller's through SPIRE's Delegated Identity API).

use std::path::PathBuf;

use super::{KeyError, Reader};
use crate::config::{DelegatedConfig, IdentityMode, WorkloadApiConfig};

/// SPIRE agent's default Workload API socket.
const DEFAULT_WORKLOAD_SOCKET: &str = "/tmp/spire-agent/public/api.sock";
/// Calls attesting a workload in flight at once, by default: enough to keep SPIRE agent
/// busy, few enough that a burst (1,000 workloads starting together) never makes its
/// attestations time out.
const DEFAULT_MAX_CONCURRENT_ATTESTATIONS: usize = 16;

impl Reader {
    pub(super) fn read_workload_api(&mut self) -> WorkloadApiConfig {
        let from_env = self.spiffe_endpoint_socket.clone();
        let default = match from_env.as_deref().map(endpoint_socket_path) {
            Some(Some(path)) => path,
            Some(None) => {
                self.errors.push(KeyError {
                    key: "SPIFFE_ENDPOINT_SOCKET".into(),
                    message: "expected unix:///path/to/socket".into(),
                });
                DEFAULT_WORKLOAD_SOCKET.to_owned()
            }
            None => DEFAULT_WORKLOAD_SOCKET.to_owned(),
        };
        let socket = self.string("workload_api", "socket", &default);
        WorkloadApiConfig {
            socket: PathBuf::from(endpoint_socket_path(&socket).unwrap_or(socket)),
            mode: self.read_identity_mode(),
        }
    }

    fn read_identity_mode(&mut self) -> IdentityMode {
        let s = "workload_api";
        let delegated = self.parsed(s, "mode", false, "\"self\" or \"delegated\"", |v| {
            match v.as_str()? {
                "self" => Some(false),
                "delegated" => Some(true),
                _ => None,
            }
        });
        let admin_socket = self.optional_string(s, "admin_socket");
        let default_svid_hint = self.optional_string(s, "default_svid_hint");
        let concurrency_set = self.value(s, "max_concurrent_attestations").is_some();
        let max_concurrent_attestations = self.count(
            s,
            "max_concurrent_attestations",
            DEFAULT_MAX_CONCURRENT_ATTESTATIONS,
        );
        if !delegated {
            for (key, set) in [
                ("admin_socket", admin_socket.is_some()),
                ("default_svid_hint", default_svid_hint.is_some()),
                ("max_concurrent_attestations", concurrency_set),
            ] {
                if set {
                    self.error(
                        &format!("{s}.{key}"),
                        "only used with mode = \"delegated\" (the default mode is \"self\")",
                    );
                }
            }
            return IdentityMode::Own;
        }
        let Some(admin_socket) = admin_socket else {
            self.error(
                "workload_api.admin_socket",
                "required with mode = \"delegated\": SPIRE agent's admin_socket_path",
            );
            return IdentityMode::Own;
        };
        IdentityMode::Delegated(DelegatedConfig {
            admin_socket: PathBuf::from(
                endpoint_socket_path(&admin_socket).unwrap_or(admin_socket),
            ),
            default_svid_hint,
            max_concurrent_attestations,
        })
    }
}

/// `unix:///path`, `unix:/path` or a bare absolute path → the path.
pub(super) fn endpoint_socket_path(value: &str) -> Option<String> {
    let path = value
        .strip_prefix("unix://")
        .or_else(|| value.strip_prefix("unix:"))
        .unwrap_or(value);
    path.starts_with('/').then(|| path.to_owned())
}
