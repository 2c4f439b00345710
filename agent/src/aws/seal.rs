//! `steeple envelope seal --provider kms_envelope`: seals with the operator's own AWS
//! identity (the SDK's default credential chain), never the workload's.

use anyhow::Context as _;
use steeple_plugin_api::EnvelopeRow;
use steeple_plugin_aws::{SealOptions, seal_with_kms};

use crate::seal_request::SealRequest;

/// Seals the plaintext under KMS key `--key-id`.
pub fn seal(request: &SealRequest<'_>) -> anyhow::Result<EnvelopeRow> {
    let key_id = request
        .key_id
        .ok_or_else(|| anyhow::anyhow!("--key-id: required with --provider kms_envelope"))?;
    let options = SealOptions {
        endpoint: request.kms_endpoint.map(str::to_owned),
        sdk_config: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(seal_with_kms(
        &options,
        key_id,
        request.logical_path,
        request.context,
        request.plaintext,
    ))?)
}
