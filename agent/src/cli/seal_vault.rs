//! `steeple envelope seal --provider vault_transit`: encrypts with the operator's own
//! Vault token, read from `VAULT_TOKEN` (never an argument, so it stays out of `ps` and
//! shell history).

use anyhow::Context as _;
use steeple_plugin_api::{EncryptionContext, EnvelopeRow, SecretBytes};
use steeple_plugin_vault::{VaultClientConfig, seal_with_transit};

use super::SealArgs;

/// The variable the operator's token is read from.
const TOKEN_ENV: &str = "VAULT_TOKEN";

/// Seals `plaintext` with transit key `--key-id`.
pub(super) fn seal(
    args: &SealArgs,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> anyhow::Result<EnvelopeRow> {
    let key = args
        .key_id
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--key-id: required with --provider vault_transit"))?;
    let addr = args.vault_addr.clone().ok_or_else(|| {
        anyhow::anyhow!("--vault-addr (or VAULT_ADDR): required with --provider vault_transit")
    })?;
    let token = operator_token()?;
    let client = VaultClientConfig {
        addr,
        ca_file: args.vault_ca_file.clone(),
        namespace: args.vault_namespace.clone(),
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
        &args.transit_mount,
        key,
        &args.logical_path,
        context,
        plaintext,
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
