//! Every trust bundle SPIRE agent tracks, followed through `SubscribeToX509Bundles` and
//! shared by all workloads' views; the last good set stays while the stream is down.

use std::sync::Arc;
use std::time::Duration;

use steeple_plugin_api::lease::{Backoff, RepeatFilter};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::DelegatedClient;
use super::convert::{BundleMap, bundle_map};

/// How long opening the stream may take before it is retried.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Follows the bundle stream until `shutdown`, publishing each full set on `tx`.
pub async fn follow(
    client: DelegatedClient,
    tx: watch::Sender<Arc<BundleMap>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut errors = RepeatFilter::default();
    loop {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(OPEN_TIMEOUT, client.subscribe_to_x509_bundles()) => r,
        };
        let why = match opened {
            Ok(Ok(mut stream)) => loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    m = stream.message() => m,
                };
                match message {
                    Ok(Some(update)) => {
                        errors.recovered("SubscribeToX509Bundles");
                        backoff.reset();
                        let bundles = bundle_map(update.ca_certificates, &tx.borrow());
                        tracing::info!(bundles = bundles.len(), "delegated: trust bundles updated");
                        tx.send_replace(Arc::new(bundles));
                    }
                    Ok(None) => break "stream closed by SPIRE agent".to_owned(),
                    Err(status) => break super::explain(&status),
                }
            },
            Ok(Err(status)) => super::explain(&status),
            Err(_) => format!("no answer within {}s", OPEN_TIMEOUT.as_secs()),
        };
        super::log_failure(&mut errors, "SubscribeToX509Bundles", &why);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
