//! Steeple's Vault / OpenBao provider: logs in with JWT-SVIDs (JWT auth), keeps the token
//! alive, and resolves `vault_delegate` (KV v1/v2) and `vault_transit` envelopes in memory.
//!
//! Built on the workspace's `reqwest` (rustls) rather than `vaultrs`: the handful of
//! endpoints used here need a per-request namespace (each envelope may name its own),
//! Vault's status and error strings for retry decisions, and tokens and plaintext kept in
//! zeroizing buffers — all simpler over plain HTTP, and without a second TLS root store.
//!
//! Pieces: [`VaultClientConfig`] builds the [`VaultClient`]; [`VaultJwtLogin`] is the
//! [`CredentialExchanger`](steeple_plugin_api::CredentialExchanger) trading a JWT-SVID
//! for a [`VaultToken`]; [`VaultTokenKeeper`] renews it and publishes it in a `watch`
//! channel; [`VaultKvResolver`] and [`VaultTransitResolver`] read it through a
//! [`TokenSource`] ([`KeptToken`] in the agent) and report a token Vault denied back to
//! the keeper, which checks it and logs in again at once if it is dead
//! ([`TokenVerdict`]); [`seal_with_transit`] makes transit envelopes. Every envelope's
//! (namespace, mount, path) must pass the operator's [`VaultAllowlist`](steeple_plugin_api::VaultAllowlist) before any call.

mod client;
mod denial;
mod keeper;
mod kv;
mod live_roots;
mod login;
mod token;
mod transit;

pub use client::{ClientBuildError, DEFAULT_TIMEOUT, VaultClient, VaultClientConfig, VaultError};
pub use denial::{KeptToken, MIN_CHECK_INTERVAL, TokenDenials, VERDICT_WAIT};
pub use keeper::{FATAL_RETRY, TokenAction, VaultTokenKeeper, keep_token, next_action};
pub use kv::{KvPath, KvVersion, VaultKvResolver};
pub use live_roots::{LiveRoots, RootsError};
pub use login::{RenewError, VaultJwtLogin, VaultJwtLoginConfig, login_error};
pub use token::{NO_TTL_LEASE, StaticToken, TokenSource, TokenVerdict, VaultToken};
pub use transit::{
    DEFAULT_TRANSIT_MOUNT, TRANSIT_DIRECT_MAX, VaultTransitResolver, seal_with_transit,
    transit_context,
};

/// Overwrites every string in a parsed answer (secret values, tokens) before it is freed.
fn zeroize_json(value: &mut serde_json::Value) {
    use zeroize::Zeroize as _;
    match value {
        serde_json::Value::String(text) => text.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(zeroize_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(zeroize_json),
        _ => {}
    }
}
