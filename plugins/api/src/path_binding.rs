//! The logical path bound into an envelope's encryption context. With the data-key layer
//! the AES-GCM associated data already binds the path; a directly sealed KMS or transit
//! ciphertext binds only its context, so without this a row copied under another logical
//! path (one a less privileged caller may fetch) would decrypt there too. Sealing adds
//! `steeple_logical_path=<path>` to the context, which KMS and transit authenticate; the
//! registry refuses a row whose bound path is not its own, and — unless told to accept
//! rows sealed before the binding existed — a direct row with no binding at all.

use crate::{EncryptionContext, Provider, SealedEnvelope};

/// The encryption-context key that carries the logical path.
pub const PATH_CONTEXT_KEY: &str = "steeple_logical_path";

/// `context` with `logical_path` bound, for sealing. Refused when the context already
/// binds another path, or the path holds a `,` (the `k=v,k=v` form of `aad` cannot carry
/// it).
pub fn bind_logical_path(
    context: &EncryptionContext,
    logical_path: &str,
) -> Result<EncryptionContext, String> {
    if logical_path.contains(',') {
        return Err(format!(
            "logical path {logical_path:?} has a ',', which the aad text (k=v,k=v) cannot carry"
        ));
    }
    match context.get(PATH_CONTEXT_KEY) {
        Some(bound) if bound != logical_path => Err(format!(
            "the context already binds {PATH_CONTEXT_KEY}={bound}, not {logical_path}"
        )),
        _ => {
            let mut bound = context.clone();
            bound.insert(PATH_CONTEXT_KEY.to_owned(), logical_path.to_owned());
            Ok(bound)
        }
    }
}

/// Checks `envelope`'s binding before it is resolved: a bound path must be the envelope's
/// own; a KMS or transit ciphertext sealed directly (no data-key layer) must be bound when
/// `required`. Other envelopes are bound by the data-key layer or hold no ciphertext.
pub fn check_path_binding(envelope: &SealedEnvelope, required: bool) -> Result<(), String> {
    match envelope.context.get(PATH_CONTEXT_KEY) {
        Some(bound) if *bound == envelope.logical_path => Ok(()),
        Some(bound) => Err(format!(
            "sealed for logical path {bound:?}, not this one: a row copied under another name is refused"
        )),
        None => {
            let direct = envelope.data_key.is_none()
                && matches!(
                    envelope.provider,
                    Provider::KmsEnvelope | Provider::VaultTransit
                );
            if direct && required {
                Err(format!(
                    "sealed without its logical path bound ({PATH_CONTEXT_KEY} is not in aad), so it \
                     would decrypt under any name: re-seal it with `steeple envelope seal`, or set \
                     envelopes.require_path_binding = false while migrating"
                ))
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EnvelopeRow;

    fn sealed(path: &str, provider: &str, aad: &str, data_key: bool) -> SealedEnvelope {
        EnvelopeRow {
            logical_path: path.into(),
            provider: provider.into(),
            key_id: "k".into(),
            ciphertext_ref: if provider == "vault_transit" && !data_key {
                "vault:v1:AAAA".into()
            } else {
                "AQID".into()
            },
            aad: aad.into(),
            data_key_ciphertext: data_key.then(|| {
                if provider == "vault_transit" {
                    "vault:v1:AAAA".into()
                } else {
                    "AQID".into()
                }
            }),
            ..EnvelopeRow::default()
        }
        .validate(1024)
        .unwrap()
    }

    #[test]
    fn binding_adds_the_path_and_refuses_what_aad_cannot_carry() {
        let context = crate::parse_aad("env=prod").unwrap();
        let bound = bind_logical_path(&context, "app/db").unwrap();
        assert_eq!(
            crate::format_aad(&bound),
            "env=prod,steeple_logical_path=app/db"
        );
        assert_eq!(bind_logical_path(&bound, "app/db").unwrap(), bound);
        assert!(bind_logical_path(&bound, "app/other").is_err());
        assert!(bind_logical_path(&context, "a,b").is_err());
    }

    #[test]
    fn a_row_copied_under_another_name_is_refused() {
        let own = sealed(
            "app/db",
            "kms_envelope",
            "steeple_logical_path=app/db",
            false,
        );
        assert!(check_path_binding(&own, true).is_ok());
        let copied = sealed(
            "public/db",
            "kms_envelope",
            "steeple_logical_path=app/db",
            false,
        );
        let err = check_path_binding(&copied, false).unwrap_err();
        assert!(err.contains("\"app/db\""), "{err}");
    }

    #[test]
    fn unbound_direct_rows_are_refused_only_when_required() {
        for provider in ["kms_envelope", "vault_transit"] {
            let unbound = sealed("app/db", provider, "env=prod", false);
            let err = check_path_binding(&unbound, true).unwrap_err();
            assert!(err.contains("require_path_binding"), "{err}");
            assert!(check_path_binding(&unbound, false).is_ok());
            // The data-key layer binds the path in its AES-GCM associated data.
            assert!(check_path_binding(&sealed("app/db", provider, "", true), true).is_ok());
        }
        assert!(check_path_binding(&sealed("app/db", "local", "", false), true).is_ok());
    }
}
