//! Shared types between Steeple's core and its providers: secret bytes that zeroize and
//! redact, the envelope model, the data-key AEAD layer, and the resolver / exchanger
//! traits. No network I/O lives here.

pub mod aead;
mod envelope;
mod provider;
mod secret;
pub mod wall_clock;

pub use envelope::{
    EncryptionContext, EnvelopeError, EnvelopeRow, MAX_LOGICAL_PATH_LEN, Provider, SealedEnvelope,
    format_aad, parse_aad,
};
pub use provider::{
    AwsCredentials, BoxFuture, CredentialExchanger, EnvelopeResolver, ExchangeError,
    ExchangeErrorKind, Expiring, JwtSvidSource, ResolveError, Resolved,
};
pub use secret::SecretBytes;
