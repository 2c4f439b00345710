//! What the SDS server accepts from a client, and the check applied to every request.

use tonic::Status;

use crate::config::SdsConfig;

/// Settings shared by every SDS stream.
#[derive(Debug, Clone)]
pub struct SdsSettings {
    /// Most resource names one request may carry.
    pub max_resource_names: usize,
    /// Longest resource name accepted, in bytes.
    pub max_resource_name_len: usize,
    /// Largest request message accepted, in bytes (enforced by the gRPC codec).
    pub max_request_bytes: usize,
    /// Never send the SPIFFE certificate validator.
    pub disable_spiffe_cert_validation: bool,
    /// Connections admitted at once, overall and per uid, and their handshake and idle
    /// timeouts.
    pub connections: super::admission::ConnectionLimits,
    /// Streams one connection may have open at once (HTTP/2 `MAX_CONCURRENT_STREAMS`).
    pub max_streams_per_connection: u32,
    /// Streams open at once over all connections.
    pub max_streams: usize,
}

impl From<&SdsConfig> for SdsSettings {
    fn from(c: &SdsConfig) -> Self {
        Self {
            max_resource_names: c.max_resource_names,
            max_resource_name_len: c.max_resource_name_len,
            max_request_bytes: c.max_request_bytes,
            disable_spiffe_cert_validation: c.disable_spiffe_cert_validation,
            connections: super::admission::ConnectionLimits {
                max_connections: c.max_connections,
                max_connections_per_uid: c.max_connections_per_uid,
                handshake_timeout: c.handshake_timeout,
                idle_timeout: c.idle_timeout,
                require_pid: c.require_caller_pid,
            },
            max_streams_per_connection: c.max_streams_per_connection,
            max_streams: c.max_streams,
        }
    }
}

impl SdsSettings {
    /// Refuses a request whose names exceed the limits. The error gives counts and
    /// lengths, never the names themselves (they may be huge).
    pub fn check_names<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), Status> {
        let mut count = 0usize;
        for name in names {
            count += 1;
            if count > self.max_resource_names {
                return Err(Status::invalid_argument(format!(
                    "too many resource names in one request (limit {})",
                    self.max_resource_names
                )));
            }
            if name.len() > self.max_resource_name_len {
                return Err(Status::invalid_argument(format!(
                    "resource name of {} bytes exceeds the limit of {}",
                    name.len(),
                    self.max_resource_name_len
                )));
            }
        }
        Ok(())
    }

    /// Refuses a request for another resource type.
    pub fn check_type_url(type_url: &str) -> Result<(), Status> {
        if type_url.is_empty() || type_url == super::resources::SECRET_TYPE_URL {
            Ok(())
        } else {
            let shown: String = type_url.chars().take(200).collect();
            Err(Status::invalid_argument(format!(
                "unsupported type_url {shown:?}; this server only serves {}",
                super::resources::SECRET_TYPE_URL
            )))
        }
    }
}
