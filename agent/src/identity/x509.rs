//! The X.509 side of identity: follows `FetchX509SVID`, keeps the last good SVIDs and
//! bundles, and publishes them into the store under SPIFFE IDs and SPIRE's default names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use steeple_plugin_api::lease::{Backoff, RepeatFilter};
use steeple_plugin_api::wall_clock;
use steeple_proto::workload::{X509svid, X509svidRequest, X509svidResponse};
use tokio_util::sync::CancellationToken;

use super::{DefaultNames, WorkloadApiClient, request};
use crate::spiffe_ids::trust_domain_of;
use crate::store::{Certificate, Secret, SecretStore, Source, TrustBundle};
use crate::svid::{split_der_certificates, validate_svid};

const SOURCE: Source = Source::X509Identity;

/// The last good X.509 state, as validated.
#[derive(Debug, Default, Clone)]
pub struct X509State {
    /// Valid SVIDs in the Workload API's order (the first is the default).
    svids: Vec<Arc<Certificate>>,
    /// Trust domain name → roots, own and federated.
    bundles: BTreeMap<String, Arc<TrustBundle>>,
    /// The trust domain of the default SVID.
    own_trust_domain: Option<String>,
}

/// The alarm for SVIDs that should have been rotated by now: one WARN per SVID, with the
/// time left before it stops being served (the metric `steeple_svid_rotation_overdue`
/// says the same to scrapers).
fn alarm_overdue(state: &X509State) {
    let now = SystemTime::now();
    for cert in state.overdue(now) {
        let expires_in_s = cert
            .not_after
            .duration_since(now)
            .unwrap_or_default()
            .as_secs();
        tracing::warn!(spiffe_id = %cert.spiffe_id, expires_in_s, "X.509-SVID not rotated past two thirds of its lifetime (is the SPIRE server reachable?); still served until it expires, never after");
    }
}

/// How many SPIFFE IDs of `before` now have a different leaf certificate.
pub(super) fn rotations(before: &[Arc<Certificate>], after: &[Arc<Certificate>]) -> usize {
    after
        .iter()
        .filter(|new| {
            before
                .iter()
                .find(|old| old.spiffe_id == new.spiffe_id)
                .is_some_and(|old| old.chain_der.first() != new.chain_der.first())
        })
        .count()
}

/// Every bundle of a Workload API response — each SVID's own, then the federated ones —
/// keyed by the SPIFFE ID or trust-domain ID it came with, as DER.
pub fn bundle_sources(response: &X509svidResponse) -> impl Iterator<Item = (&str, &Vec<u8>)> {
    let own = response
        .svids
        .iter()
        .map(|s| (s.spiffe_id.as_str(), &s.bundle));
    let federated = response
        .federated_bundles
        .iter()
        .map(|(k, v)| (k.as_str(), v));
    own.chain(federated)
}

impl X509State {
    /// The bundles of `response` that parse; a malformed one keeps its last good value.
    fn parse_bundles(&self, response: &X509svidResponse) -> BTreeMap<String, Arc<TrustBundle>> {
        let mut bundles = BTreeMap::new();
        for (id, der) in bundle_sources(response) {
            let Some(td) = trust_domain_of(id) else {
                tracing::error!(id, "bundle keyed by an invalid trust domain; ignored");
                continue;
            };
            if let Some(bundle) = parse_bundle(td.as_str(), der, self.bundles.get(td.as_str())) {
                bundles.insert(td.to_string(), bundle);
            }
        }
        bundles
    }

    /// Folds one Workload API response in: what validates replaces what we had, what
    /// does not is logged and the last good value for it stays. A response with no SVID
    /// at all withdraws everything.
    pub fn apply(&mut self, response: X509svidResponse, now: SystemTime) {
        let bundles = self.parse_bundles(&response);
        self.apply_parsed(&response.svids, bundles, now);
    }

    /// [`X509State::apply`] of SVIDs whose bundles (own and federated, by trust domain
    /// name) are parsed already.
    pub fn apply_parsed(
        &mut self,
        response_svids: &[X509svid],
        bundles: BTreeMap<String, Arc<TrustBundle>>,
        now: SystemTime,
    ) {
        let mut svids = Vec::with_capacity(response_svids.len());
        for svid in response_svids {
            let td = trust_domain_of(&svid.spiffe_id);
            let bundle = td.as_ref().and_then(|td| bundles.get(td.as_str()));
            let roots_kept = bundle == td.as_ref().and_then(|td| self.bundles.get(td.as_str()));
            if roots_kept && let Some(known) = self.validated(svid) {
                // The same SVID under the same roots: already checked (most updates
                // change a bundle or one SVID, not every SVID).
                svids.push(known.clone());
                continue;
            }
            let roots = bundle.map(|b| b.roots_der.as_slice()).unwrap_or_default();
            match validate_svid(
                &svid.spiffe_id,
                &svid.x509_svid,
                &svid.x509_svid_key,
                roots,
                now,
            ) {
                Ok(cert) => svids.push(Arc::new(cert)),
                Err(e) => {
                    tracing::error!(spiffe_id = %svid.spiffe_id, error = %e, "X.509-SVID refused; keeping the last good one");
                    if let Some(old) = self.svids.iter().find(|c| c.spiffe_id == svid.spiffe_id) {
                        svids.push(old.clone());
                    }
                }
            }
        }
        if response_svids.is_empty() {
            // SPIRE's word that the workload has no identity (its entries deleted, or
            // none yet): nothing of it is served any more.
            *self = Self::default();
            return;
        }
        if svids.is_empty() && !self.svids.is_empty() {
            tracing::warn!(
                "Workload API update carried no usable X.509-SVID; keeping the last good ones"
            );
            return;
        }
        self.own_trust_domain = svids
            .first()
            .and_then(|c| trust_domain_of(&c.spiffe_id))
            .map(|td| td.to_string());
        self.svids = svids;
        self.bundles = bundles;
    }

    /// The SVID held already that `svid` is exactly (ID, chain and key), if any.
    fn validated(&self, svid: &X509svid) -> Option<&Arc<Certificate>> {
        self.svids.iter().find(|c| {
            c.spiffe_id == svid.spiffe_id
                && c.key_pkcs8.expose() == svid.x509_svid_key.as_slice()
                && c.chain_der.iter().map(Vec::len).sum::<usize>() == svid.x509_svid.len()
                && c.chain_der.iter().flatten().eq(svid.x509_svid.iter())
        })
    }

    /// The store entries this state stands for at `now`: expired SVIDs are left out.
    pub fn entries(&self, names: &DefaultNames, now: SystemTime) -> Vec<(String, Secret)> {
        let mut out = Vec::new();
        for (i, cert) in self
            .svids
            .iter()
            .enumerate()
            .filter(|(_, c)| c.not_after > now)
        {
            if i == 0 {
                out.push((names.svid.clone(), Secret::Certificate(cert.clone())));
            }
            out.push((cert.spiffe_id.clone(), Secret::Certificate(cert.clone())));
        }
        for (td, bundle) in &self.bundles {
            if self.own_trust_domain.as_deref() == Some(td.as_str()) {
                out.push((names.bundle.clone(), Secret::TrustBundle(bundle.clone())));
            }
            out.push((
                format!("spiffe://{td}"),
                Secret::TrustBundle(bundle.clone()),
            ));
        }
        if !self.bundles.is_empty() {
            let all = self.bundles.values().cloned().collect();
            out.push((names.all_bundles.clone(), Secret::BundleSet(all)));
        }
        out
    }

    /// The served SVIDs past their rotation point (see
    /// [`Certificate::rotation_overdue_at`]) and not yet expired at `now`.
    pub fn overdue(&self, now: SystemTime) -> Vec<&Certificate> {
        self.svids
            .iter()
            .filter(|c| c.rotation_overdue_at() <= now && now < c.not_after)
            .map(|c| &**c)
            .collect()
    }

    /// The next rotation point still ahead of `now`, if any.
    pub fn next_overdue(&self, now: SystemTime) -> Option<SystemTime> {
        self.svids
            .iter()
            .map(|c| c.rotation_overdue_at())
            .filter(|t| *t > now)
            .min()
    }

    /// When the next served SVID expires, if any is still valid.
    pub fn next_expiry(&self, now: SystemTime) -> Option<SystemTime> {
        self.svids
            .iter()
            .map(|c| c.not_after)
            .filter(|t| *t > now)
            .min()
    }

    /// Whether any SVID held has expired by `now`.
    fn any_expired(&self, now: SystemTime) -> bool {
        self.svids.iter().any(|c| c.not_after <= now)
    }

    /// Whether `other` holds the very same SVIDs and bundles (the same shared values, not
    /// equal copies): an update that re-validated nothing and parsed no bundle anew.
    pub(super) fn holds_same_values(&self, other: &X509State) -> bool {
        self.own_trust_domain == other.own_trust_domain
            && self.svids.len() == other.svids.len()
            && self
                .svids
                .iter()
                .zip(&other.svids)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && self.bundles.len() == other.bundles.len()
            && self
                .bundles
                .iter()
                .zip(&other.bundles)
                .all(|((ta, a), (tb, b))| ta == tb && Arc::ptr_eq(a, b))
    }
}

/// How long opening the X.509 stream may take before it is retried.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Follows the X.509 stream until `shutdown`, reconnecting with backoff, and keeps the
/// store in step with [`X509State`].
pub async fn run(
    mut client: WorkloadApiClient,
    store: Arc<SecretStore>,
    names: DefaultNames,
    shutdown: CancellationToken,
) {
    let mut follower = Follower::new(store, names, "FetchX509SVID");
    loop {
        // Bounded, so a Workload API that accepts but never answers cannot hold the
        // loop below (which withdraws expired SVIDs) off for long.
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(OPEN_TIMEOUT, client.fetch_x509svid(request(X509svidRequest {}))) => r,
        };
        let mut stream = follower.opened(opened);
        let mut retry_at = tokio::time::Instant::now();
        if stream.is_none() {
            retry_at += follower.backoff.next_delay();
        }
        let mut overdue_at = follower.state.next_overdue(SystemTime::now());
        loop {
            // Whichever branch woke the loop — a message, a nap, or the host waking from
            // a suspend — what expired meanwhile is withdrawn before anything else.
            let now = SystemTime::now();
            let next = follower.withdraw_expired(&mut overdue_at, now);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wall_clock::nap_towards(next)) => {}
                message = next_message(&mut stream), if stream.is_some() => match message {
                    Ok(Some(response)) => overdue_at = follower.apply(response),
                    Ok(None) | Err(_) => {
                        if let Err(status) = &message
                            && status.code() == tonic::Code::PermissionDenied
                        {
                            follower.revoke(status.message());
                        }
                        let why = message.err().map_or("stream closed by the Workload API".to_owned(), |s| s.message().to_owned());
                        follower.errors.warn("FetchX509SVID", &why);
                        stream = None;
                        retry_at = tokio::time::Instant::now() + follower.backoff.next_delay();
                    }
                },
                () = tokio::time::sleep_until(retry_at), if stream.is_none() => break,
            }
        }
    }
}

/// An X.509 stream's follower: what it holds, and its retry pacing. The agent's own
/// stream has one, and so has each workload's in delegated mode.
pub(crate) struct Follower {
    store: Arc<SecretStore>,
    names: DefaultNames,
    state: X509State,
    /// The state the store was last synced with (its values held, so compared by
    /// identity); `None` before the first sync.
    published: Option<X509State>,
    /// Pacing of reconnects.
    pub(crate) backoff: Backoff,
    /// Repeated failures logged once.
    pub(crate) errors: RepeatFilter,
    /// The call followed, as logs name it.
    what: &'static str,
}

type Opened = Result<
    Result<tonic::Response<tonic::Streaming<X509svidResponse>>, tonic::Status>,
    tokio::time::error::Elapsed,
>;

impl Follower {
    /// Keeps `store` in step with one identity (followed through the call `what`),
    /// published under `names`.
    pub(crate) fn new(store: Arc<SecretStore>, names: DefaultNames, what: &'static str) -> Self {
        Self {
            store,
            names,
            state: X509State::default(),
            published: None,
            backoff: Backoff::default(),
            errors: RepeatFilter::default(),
            what,
        }
    }

    /// The stream, if opening it worked (the failure logged otherwise).
    fn opened(&mut self, opened: Opened) -> Option<tonic::Streaming<X509svidResponse>> {
        match opened {
            Ok(Ok(response)) => Some(response.into_inner()),
            Ok(Err(status)) => {
                self.errors.warn("FetchX509SVID", status.message());
                None
            }
            Err(_) => {
                let why = format!("no answer within {}s", OPEN_TIMEOUT.as_secs());
                self.errors.warn("FetchX509SVID", &why);
                None
            }
        }
    }

    /// SPIRE ended a stream that was serving SVIDs with `PermissionDenied` — its answer
    /// once the workload's entries are deleted: the identity is withdrawn at once (not
    /// kept until it expires), audited, and the stream retried, so a re-created entry is
    /// picked up. (Refused at *open*, as while an agent restarts, nothing is withdrawn.)
    fn revoke(&mut self, why: &str) {
        if self.state.svids.is_empty() {
            return;
        }
        let ids: Vec<&str> = self
            .state
            .svids
            .iter()
            .map(|c| c.spiffe_id.as_str())
            .collect();
        let ids = ids.join(",");
        tracing::warn!(target: crate::audit::TARGET, spiffe_ids = %ids, reason = %why, decision = "revoked", "identity");
        tracing::warn!(spiffe_ids = %ids, reason = %why, "the Workload API revoked this identity; its SVIDs are no longer served");
        self.state = X509State::default();
        self.publish(SystemTime::now());
    }

    /// Withdraws what expired by `now`, raises the overdue alarm when due (and moves
    /// `overdue_at` on); returns when to look again.
    pub(crate) fn withdraw_expired(
        &mut self,
        overdue_at: &mut Option<SystemTime>,
        now: SystemTime,
    ) -> Option<SystemTime> {
        // The store holds what the state held at its last sync, minus what had expired
        // then: only a newly expired SVID (or no sync yet) can make it differ.
        let stale = self.published.is_none() || self.state.any_expired(now);
        if stale && self.publish(now) {
            tracing::warn!("an X.509-SVID expired before it was rotated; no longer served");
        }
        if overdue_at.is_some_and(|at| at <= now) {
            alarm_overdue(&self.state);
            *overdue_at = self.state.next_overdue(now);
        }
        [self.state.next_expiry(now), *overdue_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Applies one stream message; returns when the next SVID becomes overdue.
    pub(crate) fn apply(&mut self, response: X509svidResponse) -> Option<SystemTime> {
        self.fold(|state, now| state.apply(response, now))
    }

    /// Applies SVIDs whose bundles are parsed already (see [`X509State::apply_parsed`]);
    /// returns when the next SVID becomes overdue.
    pub(crate) fn apply_parsed(
        &mut self,
        svids: &[X509svid],
        bundles: BTreeMap<String, Arc<TrustBundle>>,
    ) -> Option<SystemTime> {
        self.fold(|state, now| state.apply_parsed(svids, bundles, now))
    }

    /// Folds an update in with `fold` and publishes the result.
    fn fold(&mut self, fold: impl FnOnce(&mut X509State, SystemTime)) -> Option<SystemTime> {
        self.errors.recovered(self.what);
        self.backoff.reset();
        let before = self.state.svids.clone();
        fold(&mut self.state, SystemTime::now());
        for _ in 0..rotations(&before, &self.state.svids) {
            crate::metrics::metrics().svid_rotated();
        }
        let now = SystemTime::now();
        let unchanged = self
            .published
            .as_ref()
            .is_some_and(|published| published.holds_same_values(&self.state));
        // Unchanged values make the same entries (what expired since is withdraw_expired's).
        if !unchanged && self.publish(now) {
            let (svids, bundles) = (self.state.svids.len(), self.state.bundles.len());
            tracing::info!(svids, bundles, "X.509 identity updated");
        }
        self.state.next_overdue(now)
    }

    /// Syncs the store with the state's entries at `now`; whether the store changed.
    fn publish(&mut self, now: SystemTime) -> bool {
        let changed = self
            .store
            .sync_source(&SOURCE, self.state.entries(&self.names, now));
        self.published = Some(self.state.clone());
        changed
    }
}

async fn next_message(
    stream: &mut Option<tonic::Streaming<X509svidResponse>>,
) -> Result<Option<X509svidResponse>, tonic::Status> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

/// The roots of trust domain `td` in `der` (concatenated certificates): `last` itself if
/// they did not change, else parsed; a malformed bundle is logged and `last` kept.
pub fn parse_bundle(
    td: &str,
    der: &[u8],
    last: Option<&Arc<TrustBundle>>,
) -> Option<Arc<TrustBundle>> {
    if let Some(last) = last.filter(|b| b.is_concatenation(der)) {
        return Some(last.clone());
    }
    match split_der_certificates(der) {
        Ok(roots) if !roots.is_empty() => Some(Arc::new(TrustBundle {
            trust_domain: td.to_owned(),
            roots_der: roots,
        })),
        result => {
            let reason = result.err().map_or("empty".to_owned(), |e| e.to_string());
            tracing::error!(trust_domain = %td, %reason, "malformed bundle refused; keeping the last good one");
            last.cloned()
        }
    }
}
