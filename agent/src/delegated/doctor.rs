//! `steeple doctor`'s check of delegated mode: SPIRE agent's admin socket answers, and
//! accepts Steeple as a delegate (its own SPIFFE ID in the agent's `authorized_delegates`).

use super::{DelegatedClient, NOT_A_DELEGATE, explain};
use crate::config::IdentityMode;
use crate::doctor_check::{CALL_TIMEOUT, Check};

const NAME: &str = "workload_api.delegated";

/// `workload_api.delegated`: the first bundle update through the Delegated Identity API
/// (no check in `self` mode).
pub async fn check(mode: &IdentityMode) -> Option<Check> {
    let IdentityMode::Delegated(settings) = mode else {
        return None;
    };
    Some(delegate(settings).await)
}

async fn delegate(settings: &crate::config::DelegatedConfig) -> Check {
    let socket = settings.admin_socket.display().to_string();
    let client = DelegatedClient::new(crate::uds::lazy_channel(&settings.admin_socket), 1);
    let first = async {
        let mut stream = client.subscribe_to_x509_bundles().await?;
        stream.message().await
    };
    let why = match tokio::time::timeout(CALL_TIMEOUT, first).await {
        Ok(Ok(Some(update))) => {
            let detail = format!(
                "{socket}: SPIRE agent accepts this agent as a delegate ({} trust bundle(s))",
                update.ca_certificates.len()
            );
            return Check::ok(NAME, detail);
        }
        Ok(Ok(None)) => "the stream closed without an update".to_owned(),
        Ok(Err(status)) => explain(&status),
        Err(_) => format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
    };
    let fix = if why.contains(NOT_A_DELEGATE) {
        "add this agent's own SPIFFE ID (see workload_api.x509_svid) to the SPIRE agent's authorized_delegates"
    } else {
        "point workload_api.admin_socket at the SPIRE agent's admin_socket_path, and start the agent"
    };
    Check::fail(NAME, format!("{socket}: {why}"), fix)
}
