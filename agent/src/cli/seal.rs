//! `steeple envelope seal`: turns plaintext (from a file or stdin, never an argument)
//! into an envelope row, so operators and tests never hand-write base64. `kms_envelope`
//! seals with the operator's own AWS identity (the SDK's default credential chain), and
//! `vault_transit` with the operator's own Vault token (`VAULT_TOKEN`), never the
//! workload's; each is sealed by its side, through [`crate::sides::seal`].

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use steeple_plugin_api::{EnvelopeRow, parse_aad};
use steeple_plugin_local::LocalKey;
use zeroize::Zeroize as _;

use crate::seal_request::SealRequest;

/// Largest plaintext `seal` reads.
const MAX_PLAINTEXT: u64 = 16 * 1024 * 1024;

/// Arguments of `steeple envelope seal`.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// `kms_envelope`, `vault_transit`, or `local` (dev only).
    #[arg(long)]
    provider: String,
    /// The envelope's logical path (its SDS resource name).
    #[arg(long)]
    logical_path: String,
    /// Encryption context as `k=v,k=v`.
    #[arg(long, default_value = "")]
    aad: String,
    /// Read the plaintext from this file instead of stdin.
    #[arg(long = "in")]
    input: Option<PathBuf>,
    /// For `local`: the environment variable holding the base64 master key.
    #[arg(long, default_value = "STEEPLE_LOCAL_MASTER_KEY")]
    master_key_env: String,
    /// For `kms_envelope`: the full KMS key or alias ARN to seal under; for
    /// `vault_transit`: the transit key name.
    #[arg(long)]
    key_id: Option<String>,
    /// For `kms_envelope`: a KMS endpoint override (VPC endpoint, test server).
    #[arg(long)]
    kms_endpoint: Option<String>,
    /// For `vault_transit`: Vault's address (the token comes from `VAULT_TOKEN` only).
    #[arg(long, env = "VAULT_ADDR")]
    vault_addr: Option<String>,
    /// For `vault_transit`: the namespace of the transit mount.
    #[arg(long, env = "VAULT_NAMESPACE")]
    vault_namespace: Option<String>,
    /// For `vault_transit`: extra PEM CAs for Vault's TLS certificate.
    #[arg(long, env = "VAULT_CACERT")]
    vault_ca_file: Option<PathBuf>,
    /// For `vault_transit`: the transit mount.
    #[arg(long, default_value = "transit")]
    transit_mount: String,
}

/// Seals and prints the envelope row as JSON on stdout.
pub fn run(args: &SealArgs) -> anyhow::Result<()> {
    let context = parse_aad(&args.aad).map_err(|e| anyhow::anyhow!("--aad: {e}"))?;
    let mut plaintext = read_plaintext(args.input.as_ref())?;
    let row = seal(args, &context, &plaintext);
    plaintext.zeroize();
    let row = row?;
    row.validate(usize::MAX)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", serde_json::to_string_pretty(&row)?);
    Ok(())
}

fn seal(
    args: &SealArgs,
    context: &steeple_plugin_api::EncryptionContext,
    plaintext: &[u8],
) -> anyhow::Result<EnvelopeRow> {
    if args.provider == "local" {
        let key = LocalKey::from_env(&args.master_key_env)?;
        return Ok(key.seal(&args.logical_path, context, plaintext)?);
    }
    let request = SealRequest {
        logical_path: &args.logical_path,
        context,
        plaintext,
        key_id: args.key_id.as_deref(),
        kms_endpoint: args.kms_endpoint.as_deref(),
        vault_addr: args.vault_addr.as_deref(),
        vault_namespace: args.vault_namespace.as_deref(),
        vault_ca_file: args.vault_ca_file.as_deref(),
        transit_mount: &args.transit_mount,
    };
    match crate::sides::seal::seal(&args.provider, &request) {
        Some(sealed) => sealed,
        None => anyhow::bail!(
            "--provider {:?}: seal supports {}",
            args.provider,
            sealable()
        ),
    }
}

/// The providers this build can seal with: the compiled sides', then `local`.
fn sealable() -> String {
    let mut providers = crate::sides::seal::sealable();
    providers.push("local");
    providers.join(", ")
}

fn read_plaintext(input: Option<&PathBuf>) -> anyhow::Result<Vec<u8>> {
    let mut plaintext = Vec::new();
    let read = match input {
        Some(path) => std::fs::File::open(path)
            .with_context(|| format!("--in {}", path.display()))?
            .take(MAX_PLAINTEXT + 1)
            .read_to_end(&mut plaintext),
        None => std::io::stdin()
            .take(MAX_PLAINTEXT + 1)
            .read_to_end(&mut plaintext),
    };
    if let Err(e) = read {
        plaintext.zeroize();
        return Err(e).context("reading the plaintext");
    }
    if plaintext.len() as u64 > MAX_PLAINTEXT {
        plaintext.zeroize();
        anyhow::bail!("the plaintext is larger than {MAX_PLAINTEXT} bytes");
    }
    Ok(plaintext)
}
