//! `steeple doctor`'s `vault.login` and `vault.revoke`: one JWT login with a fresh
//! JWT-SVID, built as the agent builds it (same client, TLS trust and login settings), then
//! `revoke-self` on the token it got so the check leaves nothing behind. Only the accessor
//! is ever shown.

use steeple_plugin_api::{ExchangeErrorKind, JwtSvidSource};
use steeple_plugin_vault::{VaultClient, VaultJwtLogin, VaultToken};

use super::{VaultStartError, client_config, client_error, login_config};
use crate::config::VaultConfig;
use crate::doctor_check::{CALL_TIMEOUT, Check, Issued, expiry, span};

const LOGIN: &str = "vault.login";
const REVOKE: &str = "vault.revoke";

/// Logs in once and revokes the token again.
pub async fn checks(config: &VaultConfig, jwt: &dyn JwtSvidSource, issued: &Issued) -> Vec<Check> {
    let client = match client(config, issued) {
        Ok(client) => client,
        Err(fail) => return vec![fail, no_token()],
    };
    let login = VaultJwtLogin::new(client, login_config(config));
    let audience = &login.config().audience;
    let outcome = tokio::time::timeout(CALL_TIMEOUT, async {
        let token = jwt.fetch(audience).await?;
        login.login(&token).await
    })
    .await;
    let token = match outcome {
        Err(_) => {
            let detail = format!(
                "no answer from Vault at {} within {CALL_TIMEOUT:?}",
                shown(config)
            );
            return vec![
                Check::fail(
                    LOGIN,
                    detail,
                    "check vault.addr and that Vault is up and unsealed",
                ),
                no_token(),
            ];
        }
        Ok(Err(e)) => {
            let fix = login_fix(config, e.kind, &e.code, issued);
            return vec![
                Check::fail(LOGIN, format!("{}: {}", e.code, e.message), fix),
                no_token(),
            ];
        }
        Ok(Ok(token)) => token,
    };
    let login_ok = Check::ok(
        LOGIN,
        format!(
            "logged in as role {} at {}: token accessor {}, lease {} (expires {}){}",
            config.role,
            shown(config),
            token.accessor,
            span(token.lease),
            expiry(token.expires_at),
            if token.renewable {
                ""
            } else {
                ", not renewable"
            }
        ),
    );
    vec![login_ok, revoke(&login, &token).await]
}

/// `revoke-self` on the token the check got, so it leaves nothing behind.
async fn revoke(login: &VaultJwtLogin, token: &VaultToken) -> Check {
    match tokio::time::timeout(CALL_TIMEOUT, login.revoke_self(token)).await {
        Ok(Ok(())) => Check::ok(REVOKE, format!("token accessor {} revoked", token.accessor)),
        Ok(Err(e)) => Check::fail(
            REVOKE,
            format!("revoke-self of accessor {} refused: {e}", token.accessor),
            format!(
                "let the role's policies allow auth/token/revoke-self (Vault's default policy does); revoke it now: vault token revoke -accessor {}",
                token.accessor
            ),
        ),
        Err(_) => Check::fail(
            REVOKE,
            format!("no answer to revoke-self within {CALL_TIMEOUT:?}"),
            format!("revoke it: vault token revoke -accessor {}", token.accessor),
        ),
    }
}

/// The client as the agent builds it; with `ca_spiffe_bundle`, trusting the bundle the
/// Workload API just handed out.
fn client(config: &VaultConfig, issued: &Issued) -> Result<VaultClient, Check> {
    let refused =
        |e: VaultStartError| Check::fail(LOGIN, e.to_string(), "correct the [vault] key named");
    let Some(trust_domain) = &config.ca_spiffe_bundle else {
        return client_config(config)
            .build()
            .map_err(|e| refused(client_error(e)));
    };
    let origin = format!("the SPIFFE bundle of {trust_domain}");
    let (client, roots) = client_config(config)
        .build_with_live_roots(&origin, config.spiffe_id.as_deref())
        .map_err(|e| refused(client_error(e)))?;
    let Some(bundle) = issued.bundles.get(trust_domain) else {
        return Err(Check::fail(
            LOGIN,
            format!(
                "the Workload API handed out no bundle for {trust_domain} (vault.ca_spiffe_bundle)"
            ),
            "set vault.ca_spiffe_bundle to the workload's own trust domain or one it federates with",
        ));
    };
    roots.replace(bundle).map_err(|e| {
        Check::fail(
            LOGIN,
            format!("{origin}: {e}"),
            "check the SPIRE server's CA",
        )
    })?;
    Ok(client)
}

fn no_token() -> Check {
    Check::skipped(REVOKE, "no token to revoke (vault.login did not pass)")
}

fn shown(config: &VaultConfig) -> String {
    crate::redact::display_url(&config.addr)
}

/// What to change after a refused login, by how it was refused.
fn login_fix(config: &VaultConfig, kind: ExchangeErrorKind, code: &str, issued: &Issued) -> String {
    let id = issued
        .spiffe_ids
        .first()
        .map_or("<SPIFFE ID>", String::as_str);
    match (kind, code) {
        (_, "WorkloadApiUnavailable") => {
            "the JWT-SVID could not be fetched: see workload_api.x509_svid".to_owned()
        }
        (ExchangeErrorKind::Transient, "VaultUnreachable") => format!(
            "check vault.addr ({}) and TLS trust (vault.ca_file / vault.ca_spiffe_bundle)",
            shown(config)
        ),
        (ExchangeErrorKind::Transient, _) => {
            "Vault is unavailable (sealed, overloaded or rate-limiting): check its status"
                .to_owned()
        }
        (ExchangeErrorKind::TokenRejected, _) => format!(
            "Vault cannot verify SPIRE's JWT-SVIDs: point auth/{}/config at SPIRE's OIDC discovery provider or JWT keys (deploy/vault/)",
            config.auth_mount
        ),
        (ExchangeErrorKind::Fatal, _) => format!(
            "check the role: vault read auth/{}/role/{} must exist with bound_audiences {} and bound_subject {id}; or set vault.role to an existing role",
            config.auth_mount, config.role, config.audience
        ),
    }
}
