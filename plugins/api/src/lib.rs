//! Shared types between Steeple's core and its providers: secret bytes that zeroize and
//! redact, the envelope model, the data-key AEAD layer, the resolver / exchanger traits,
//! and the Vault path allowlist (policy shared by the config reader and the Vault
//! provider). No network I/O lives here.

pub mod aead;
mod envelope;
pub mod lease;
mod path_binding;
mod provider;
mod secret;
mod vault_allowlist;
pub mod wall_clock;

pub use envelope::{
    EncryptionContext, EnvelopeError, EnvelopeRow, MAX_LOGICAL_PATH_LEN, Provider, SealedEnvelope,
    check_vault_segments, format_aad, parse_aad,
};
pub use path_binding::{PATH_CONTEXT_KEY, bind_logical_path, check_path_binding};
pub use provider::{
    AwsCredentials, BoxFuture, CredentialExchanger, EnvelopeResolver, ExchangeError,
    ExchangeErrorKind, Expiring, JwtSvidSource, ResolveError, Resolved,
};
pub use secret::SecretBytes;
pub use vault_allowlist::{
    AllowlistError, RESERVED_VAULT_MOUNTS, VaultAllowRule, VaultAllowlist, VaultTarget,
};
