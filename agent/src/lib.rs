//! Steeple: holds a workload's SPIFFE identity and hands it, with the credentials derived
//! from it, to local workloads over an Envoy SDS stream on a Unix socket.

pub mod admin;
pub mod audit;
pub mod authz;
#[cfg(feature = "aws")]
pub mod aws;
pub mod caller_identity;
pub mod cli;
pub mod config;
pub mod delegated;
pub mod dev;
pub mod doctor_check;
pub mod envelopes;
pub mod exchange;
pub mod hardening;
pub mod http_serve;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod providers;
pub mod readiness;
pub mod redact;
pub mod reload;
pub mod sds;
pub mod seal_request;
pub mod side_context;
pub mod sides;
pub mod small_codec;
pub mod spiffe_ids;
pub mod store;
pub mod supervisor;
pub mod svid;
pub mod systemd_notify;
pub mod uds;
#[cfg(feature = "vault")]
pub mod vault;
pub mod workload_roles;

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    /// Exactly one rustls crypto provider, ring, is compiled into the agent. With a second
    /// one (the AWS SDK's default HTTPS client brings aws-lc-rs) rustls cannot choose a
    /// process default, and every `ClientConfig::builder()` without an explicit provider
    /// panics, in a dependency as much as in our code.
    #[test]
    fn ring_is_the_only_rustls_crypto_provider() {
        let _config = rustls::ClientConfig::builder();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
