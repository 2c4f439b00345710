//! JWT bundles: follows `FetchJWTBundles` and publishes each trust domain's JWKS (own and
//! federated) as a `generic_secret` named `jwt-bundle:<trust-domain ID>`, so a local
//! workload can validate the JWT-SVIDs it receives without its own Workload API client.

use std::collections::BTreeMap;
use std::sync::Arc;

use steeple_plugin_api::SecretBytes;
use steeple_plugin_api::lease::{Backoff, RepeatFilter};
use steeple_proto::workload::{JwtBundlesRequest, JwtBundlesResponse};
use tokio_util::sync::CancellationToken;

use super::{WorkloadApiClient, request};
use crate::spiffe_ids::trust_domain_of;
use crate::store::names::jwt_bundle_name;
use crate::store::{Secret, SecretStore, Source};

const SOURCE: Source = Source::JwtBundles;
const WHAT: &str = "FetchJWTBundles";

/// The last good JWKS per trust domain name.
#[derive(Debug, Default)]
pub struct JwtBundleState {
    bundles: BTreeMap<String, SecretBytes>,
}

impl JwtBundleState {
    /// Folds one response in: every trust domain it lists with a well-formed JWKS
    /// replaces ours; a malformed one is logged and our last good one for it stays; a
    /// trust domain it no longer lists is dropped (federation ended).
    pub fn apply(&mut self, response: JwtBundlesResponse) {
        let mut next = BTreeMap::new();
        for (id, jwks) in response.bundles {
            let Some(td) = trust_domain_of(&id) else {
                tracing::error!(id, "JWT bundle keyed by an invalid trust domain; ignored");
                continue;
            };
            match check_jwks(&jwks) {
                Ok(()) => {
                    next.insert(td.to_string(), SecretBytes::new(jwks));
                }
                Err(reason) => {
                    tracing::error!(
                        trust_domain = %td,
                        reason,
                        "malformed JWT bundle refused; keeping the last good one"
                    );
                    if let Some(old) = self.bundles.get(td.as_str()) {
                        next.insert(td.to_string(), old.clone());
                    }
                }
            }
        }
        self.bundles = next;
    }

    /// What the store should hold.
    pub fn entries(&self) -> Vec<(String, Secret)> {
        self.bundles
            .iter()
            .map(|(td, jwks)| (jwt_bundle_name(td), Secret::Generic(jwks.clone())))
            .collect()
    }
}

/// A JWKS is a JSON object whose `keys` is an array of objects.
fn check_jwks(bytes: &[u8]) -> Result<(), &'static str> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| "not JSON")?;
    let keys = value
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("no \"keys\" array")?;
    if keys.iter().all(serde_json::Value::is_object) {
        Ok(())
    } else {
        Err("a key is not a JSON object")
    }
}

/// Keeps the JWT bundles in the store until `shutdown`, reconnecting with backoff.
pub async fn run(
    mut client: WorkloadApiClient,
    store: Arc<SecretStore>,
    shutdown: CancellationToken,
) {
    let mut state = JwtBundleState::default();
    let mut backoff = Backoff::default();
    let mut errors = RepeatFilter::default();
    loop {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            r = client.fetch_jwt_bundles(request(JwtBundlesRequest {})) => r,
        };
        match opened {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    let message = tokio::select! {
                        () = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    match message {
                        Ok(Some(response)) => {
                            errors.recovered(WHAT);
                            backoff.reset();
                            state.apply(response);
                            if store.sync_source(&SOURCE, state.entries()) {
                                tracing::info!(
                                    bundles = state.bundles.len(),
                                    "JWT bundles updated"
                                );
                            }
                        }
                        Ok(None) => {
                            errors.warn(WHAT, "stream closed by the Workload API");
                            break;
                        }
                        Err(status) => {
                            errors.warn(WHAT, status.message());
                            break;
                        }
                    }
                }
            }
            Err(status) => errors.warn(WHAT, status.message()),
        }
        // JWT bundles carry no expiry: the last good set stays served while we reconnect.
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(bundles: &[(&str, &str)]) -> JwtBundlesResponse {
        JwtBundlesResponse {
            bundles: bundles
                .iter()
                .map(|(id, jwks)| ((*id).to_owned(), jwks.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn names(state: &JwtBundleState) -> Vec<String> {
        state.entries().into_iter().map(|(n, _)| n).collect()
    }

    const JWKS: &str = r#"{"keys":[{"kty":"EC","kid":"a"}]}"#;

    #[test]
    fn publishes_own_and_federated_bundles_by_trust_domain_id() {
        let mut state = JwtBundleState::default();
        state.apply(response(&[
            ("spiffe://example.org", JWKS),
            ("spiffe://partner.org", r#"{"keys":[]}"#),
        ]));
        assert_eq!(
            names(&state),
            [
                "jwt-bundle:spiffe://example.org",
                "jwt-bundle:spiffe://partner.org"
            ]
        );
        let (_, Secret::Generic(bytes)) = &state.entries()[0] else {
            panic!("not generic");
        };
        assert_eq!(bytes.expose(), JWKS.as_bytes());
    }

    #[test]
    fn malformed_bundle_keeps_the_last_good_one_and_dropped_domains_go() {
        let mut state = JwtBundleState::default();
        state.apply(response(&[
            ("spiffe://example.org", JWKS),
            ("spiffe://partner.org", JWKS),
        ]));
        state.apply(response(&[("spiffe://example.org", "{not json")]));
        assert_eq!(names(&state), ["jwt-bundle:spiffe://example.org"]);
        let (_, Secret::Generic(bytes)) = &state.entries()[0] else {
            panic!("not generic");
        };
        assert_eq!(bytes.expose(), JWKS.as_bytes());
        for bad in [r#"{"keys":5}"#, r#"{"keys":[1]}"#, "[]"] {
            assert!(check_jwks(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_malformed_new_domain_is_not_published() {
        let mut state = JwtBundleState::default();
        state.apply(response(&[("spiffe://new.org", "nope"), ("", JWKS)]));
        assert!(state.entries().is_empty());
    }
}
