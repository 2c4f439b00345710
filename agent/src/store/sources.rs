//! Who writes what into the store: every producer publishes under its own [`Source`], its
//! set of entries, replaced whole on each sync. (The SDS names producers serve under are
//! made in [`super::names`] and claimed, from the configuration, by
//! [`crate::config::Config::claimed_names`].)

/// A producer's set of entries in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// X.509-SVIDs and bundles from the Workload API.
    X509Identity,
    /// JWT bundles from the Workload API.
    JwtBundles,
    /// The JWT-SVID served under this name.
    JwtSvid(String),
    /// Resolved secret envelopes.
    Envelopes,
    /// AWS credentials served under this name.
    AwsCredentials(String),
    /// The Vault token served under this name.
    VaultToken(String),
}

impl Source {
    /// Whether the entries are the agent's *own* identity (its SVIDs from the Workload
    /// API): in delegated mode a caller gets its own identity, never the agent's.
    pub fn is_own_identity(&self) -> bool {
        matches!(self, Self::X509Identity | Self::JwtSvid(_))
    }
}
