//! Shared types between Steeple's core and its providers. No I/O lives here.

mod secret;

pub use secret::SecretBytes;
