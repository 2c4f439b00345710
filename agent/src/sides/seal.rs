//! `steeple envelope seal` with a side's provider (`kms_envelope` with the AWS side,
//! `vault_transit` with the Vault side); a provider whose side is not compiled in is not
//! offered.

use steeple_plugin_api::EnvelopeRow;

use crate::seal_request::SealRequest;

/// Seals with `provider`'s side; `None` when no compiled side seals with `provider`.
pub fn seal(provider: &str, request: &SealRequest<'_>) -> Option<anyhow::Result<EnvelopeRow>> {
    match provider {
        "kms_envelope" => seal_kms(request),
        "vault_transit" => seal_transit(request),
        _ => None,
    }
}

/// The providers the compiled sides seal with.
pub fn sealable() -> Vec<&'static str> {
    let mut providers = Vec::new();
    if cfg!(feature = "aws") {
        providers.push("kms_envelope");
    }
    if cfg!(feature = "vault") {
        providers.push("vault_transit");
    }
    providers
}

#[cfg(feature = "aws")]
fn seal_kms(request: &SealRequest<'_>) -> Option<anyhow::Result<EnvelopeRow>> {
    Some(crate::aws::seal::seal(request))
}

#[cfg(not(feature = "aws"))]
fn seal_kms(_: &SealRequest<'_>) -> Option<anyhow::Result<EnvelopeRow>> {
    None
}

#[cfg(feature = "vault")]
fn seal_transit(request: &SealRequest<'_>) -> Option<anyhow::Result<EnvelopeRow>> {
    Some(crate::vault::seal::seal(request))
}

#[cfg(not(feature = "vault"))]
fn seal_transit(_: &SealRequest<'_>) -> Option<anyhow::Result<EnvelopeRow>> {
    None
}
