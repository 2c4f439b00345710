//! `steeple envelope seal --provider vault_transit`: encrypts with the operator's own
//! Vault token, read from `VAULT_TOKEN` (never an argument, so it stays out of `ps` and
//! shell history).

use std::path::Path;

use anyhow::Context as _;
use steeple_plugin_api::{EnvelopeRow, SecretBytes};
use steeple_plugin_vault::{VaultClientConfig, seal_with_transit};

use crate::seal_request::SealRequest;

/// The variable the operator's token is read from.
const TOKEN_ENV: &str = "VAULT_TOKEN";

/// Seals the plaintext with transit key `--key-id`.
pub fn seal(request: &SealRequest<'_>) -> anyhow::Result<EnvelopeRow> {
    let key = request
        .key_id
        .ok_or_else(|| anyhow::anyhow!("--key-id: required with --provider vault_transit"))?;
    let addr = request.vault_addr.map(str::to_owned).ok_or_else(|| {
        anyhow::anyhow!("--vault-addr (or VAULT_ADDR): required with --provider vault_transit")
    })?;
    let token = operator_token()?;
    let client = VaultClientConfig {
        addr,
        ca_file: request.vault_ca_file.map(Path::to_path_buf),
        namespace: request.vault_namespace.map(str::to_owned),
        ..VaultClientConfig::default()
    }
    .build()
    .context("--vault-addr")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(seal_with_transit(
        &client,
        &token,
        request.transit_mount,
        key,
        request.logical_path,
        request.context,
        request.plaintext,
    ))?)
}

/// `VAULT_TOKEN`, in a zeroizing buffer.
fn operator_token() -> anyhow::Result<SecretBytes> {
    let mut token = std::env::var(TOKEN_ENV).unwrap_or_default();
    let secret = SecretBytes::copy_from(token.trim().as_bytes());
    zeroize::Zeroize::zeroize(&mut token);
    anyhow::ensure!(
        !secret.is_empty(),
        "{TOKEN_ENV}: required with --provider vault_transit (the operator's Vault token)"
    );
    Ok(secret)
}
