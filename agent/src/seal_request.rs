//! What `steeple envelope seal` hands a side to seal with (`kms_envelope`,
//! `vault_transit`): below both the command line that reads the arguments and the sides
//! that seal, as [`crate::side_context`] is for starting them.

use std::fmt;
use std::path::Path;

use steeple_plugin_api::EncryptionContext;

/// One plaintext to seal, and the operator's settings for the side that seals it.
pub struct SealRequest<'a> {
    /// The envelope's logical path (its SDS resource name).
    pub logical_path: &'a str,
    /// The encryption context the row is bound to.
    pub context: &'a EncryptionContext,
    /// What to seal; never printed.
    pub plaintext: &'a [u8],
    /// `kms_envelope`: the full KMS key or alias ARN; `vault_transit`: the transit key name.
    pub key_id: Option<&'a str>,
    /// `kms_envelope`: a KMS endpoint override (VPC endpoint, test server).
    pub kms_endpoint: Option<&'a str>,
    /// `vault_transit`: Vault's address.
    pub vault_addr: Option<&'a str>,
    /// `vault_transit`: the namespace of the transit mount.
    pub vault_namespace: Option<&'a str>,
    /// `vault_transit`: extra PEM CAs for Vault's TLS certificate.
    pub vault_ca_file: Option<&'a Path>,
    /// `vault_transit`: the transit mount.
    pub transit_mount: &'a str,
}

impl fmt::Debug for SealRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealRequest")
            .field("logical_path", &self.logical_path)
            .field("context", &self.context)
            .field("plaintext_len", &self.plaintext.len())
            .field("key_id", &self.key_id)
            .field("kms_endpoint", &self.kms_endpoint)
            .field("vault_addr", &self.vault_addr)
            .field("vault_namespace", &self.vault_namespace)
            .field("vault_ca_file", &self.vault_ca_file)
            .field("transit_mount", &self.transit_mount)
            .finish()
    }
}
