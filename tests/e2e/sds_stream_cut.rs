//! Fault: the SDS connection between Envoy and Steeple is severed every few seconds for a
//! long run while SPIRE rotates short-lived X.509-SVIDs — the conditions of a field
//! failure of Envoy with SPIRE (envoy#35216: with nginx in the SDS path closing the
//! connection every 30 min, Envoy at some point stopped reconnecting and kept serving an
//! expired certificate). A fault-injecting proxy (`cutting_proxy`) sits between each of
//! two Envoys doing mTLS and Steeple's SDS socket. Proven: each Envoy re-subscribes after
//! every cut; at every sample the certificate it holds is short of its rotation point (two
//! thirds of its lifetime, where Steeple flags it overdue) and never expired; requests
//! keep succeeding, none failed; and once the cuts stop Steeple holds no more SDS streams
//! than before them (none leaked by a severed connection).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use steeple_e2e::bootstrap::{TlsNames, mtls_client, mtls_server};
use steeple_e2e::cutting_proxy::{CutStats, CuttingProxy};
use steeple_e2e::{Envoy, Suite, free_port, http_get, sds_client, seconds_from_env, wait_for};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";
/// How long the cuts go on unless `STEEPLE_STREAM_CUT_SECONDS` says otherwise.
const DEFAULT_RUN: Duration = Duration::from_secs(60);
/// How often the proxy severs every SDS connection.
const CUT_EVERY: Duration = Duration::from_secs(3);
/// How often a request goes through the mTLS pair; every fifth tick samples `/certs`.
const REQUEST_EVERY: Duration = Duration::from_millis(200);
/// Allowance past the two-thirds point: `/certs` prints whole seconds, and a rotation
/// reaches Envoy through SPIRE's 1 s agent sync, Steeple and a possibly just-cut stream.
const SLACK: Duration = Duration::from_secs(1);
/// The SDS cluster of every harness bootstrap.
const SDS_CX_TOTAL: &str = "cluster.sds.upstream_cx_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_resubscribes_after_every_cut_and_never_holds_a_stale_certificate()
-> anyhow::Result<()> {
    let run_for = seconds_from_env("STEEPLE_STREAM_CUT_SECONDS", DEFAULT_RUN)?;
    anyhow::ensure!(
        run_for >= Duration::from_secs(30),
        "a run shorter than 30 s sees too few rotations through the cuts"
    );
    let admin = free_port()?;
    // 20 s SVIDs: SPIRE rotates them at half-life, several times during the run.
    let suite = Suite::with_spire_config(
        "20s",
        &[SERVER, CLIENT],
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
    )?;
    let sds = suite.steeple.sds_socket();
    sds_client::wait_for(sds, &[SERVER, CLIENT, "ROOTCA"], Duration::from_secs(60)).await?;
    let server_proxy = CuttingProxy::start(&suite.dir().join("cut-server.sock"), sds)?;
    let client_proxy = CuttingProxy::start(&suite.dir().join("cut-client.sock"), sds)?;
    let (server, client, client_port) = mtls_pair_via(&suite, &server_proxy, &client_proxy)?;
    suite.eventually_ok(client_port).await?;
    // Both Envoys hold their secrets, so every SDS stream they open is open now.
    let streams_before = steeple_sds_streams(admin).await?;

    server_proxy.cut_every(CUT_EVERY);
    client_proxy.cut_every(CUT_EVERY);
    let sides = [(&server, SERVER), (&client, CLIENT)];
    let seen = Observed::drive(client_port, sides, run_for).await?;
    server_proxy.stop_cutting();
    client_proxy.stop_cutting();
    // The last cut may have come an instant ago: Envoy must re-subscribe after it too.
    for (proxy, id) in [(&server_proxy, SERVER), (&client_proxy, CLIENT)] {
        wait_for(
            &format!("{id}: Envoy re-subscribed after the last cut"),
            Duration::from_secs(30),
            || async move {
                let stats = proxy.stats();
                anyhow::ensure!(stats.upstream_connected > stats.cuts, "{stats:?}");
                Ok(())
            },
        )
        .await?;
    }

    let (server_cuts, client_cuts) = (server_proxy.stats(), client_proxy.stats());
    println!(
        "sds_stream_cut: {run_for:?}, {} requests, {} failures, worst certificate age \
         {:.0}% of its {:?} lifetime, certificates seen server {} client {}, server proxy \
         {server_cuts:?}, client proxy {client_cuts:?}",
        seen.requests,
        seen.failures,
        seen.worst_age * 100.0,
        seen.lifetime,
        seen.serials[0].len(),
        seen.serials[1].len(),
    );
    assert_eq!(
        seen.failures, 0,
        "{} of {} requests failed; first: {:?}",
        seen.failures, seen.requests, seen.first_failure
    );
    let expected_cuts = (run_for.as_secs() / CUT_EVERY.as_secs()).saturating_sub(1);
    for ((envoy, id), cuts) in sides.iter().zip([server_cuts, client_cuts]) {
        assert_resubscribed(envoy, id, cuts, expected_cuts).await?;
    }
    for (serials, (_, id)) in seen.serials.iter().zip(sides) {
        assert!(
            serials.len() >= 3,
            "{id}: Envoy held {} certificate(s) over {run_for:?}; expected at least two \
             rotations to land through the cuts",
            serials.len()
        );
    }

    // No SDS stream outlives the connection it came on.
    wait_for(
        &format!("Steeple back to {streams_before} SDS stream(s) once the cuts stopped"),
        Duration::from_secs(30),
        || async move {
            let now = steeple_sds_streams(admin).await?;
            anyhow::ensure!(now == streams_before, "{now} open");
            Ok(())
        },
    )
    .await?;
    assert_eq!(suite.eventually_ok(client_port).await?.0, 200);

    // The canary: the keys Steeple serves now never appear in its logs.
    let mut fetcher = sds_client::connect(sds);
    let served = sds_client::fetch(&mut fetcher, &[SERVER, CLIENT]).await?;
    let keys: Vec<Vec<u8>> = served.iter().filter_map(sds_client::secret_bytes).collect();
    assert_eq!(keys.len(), 2);
    sds_client::assert_not_in_logs(&keys, &suite.steeple.logs())?;
    Ok(())
}

/// What the run saw through the mTLS pair and both Envoys' `/certs`.
#[derive(Debug, Default)]
struct Observed {
    requests: u64,
    failures: u64,
    first_failure: Option<String>,
    /// Serials each side (server, client) held at some sample.
    serials: [BTreeSet<String>; 2],
    /// The largest fraction of its lifetime a held certificate was at a sample.
    worst_age: f64,
    /// The lifetime of the last certificate sampled.
    lifetime: Duration,
}

impl Observed {
    /// Sends a request to `client_port` every [`REQUEST_EVERY`] for `run_for`, counting
    /// failures rather than stopping at one; every fifth tick checks the certificate each
    /// of `sides` (Envoy, SPIFFE ID) holds, and fails at once on a stale one.
    async fn drive(
        client_port: u16,
        sides: [(&Envoy, &str); 2],
        run_for: Duration,
    ) -> anyhow::Result<Self> {
        let mut seen = Self::default();
        let mut tick = tokio::time::interval(REQUEST_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        while started.elapsed() < run_for {
            tick.tick().await;
            seen.requests += 1;
            match http_get(client_port, "/").await {
                Ok((200, _)) => {}
                outcome => {
                    seen.failures += 1;
                    let at = started.elapsed();
                    seen.first_failure
                        .get_or_insert_with(|| format!("at {at:.1?}: {outcome:?}"));
                }
            }
            if seen.requests % 5 != 0 {
                continue;
            }
            for ((envoy, id), serials) in sides.iter().zip(&mut seen.serials) {
                let held = held_certificate(envoy, id).await?;
                let age = held.check_fresh(id, SystemTime::now())?;
                seen.worst_age = seen.worst_age.max(age);
                seen.lifetime = held.expires.duration_since(held.valid_from)?;
                serials.insert(held.serial);
            }
        }
        Ok(seen)
    }
}

/// An mTLS server and client Envoy whose SDS clusters point at the two cutting proxies
/// rather than at Steeple; returns them and the client's plaintext port.
fn mtls_pair_via(
    suite: &Suite,
    server_proxy: &CuttingProxy,
    client_proxy: &CuttingProxy,
) -> anyhow::Result<(Envoy, Envoy, u16)> {
    let (server_port, client_port) = (suite.port()?, suite.port()?);
    let server_names = TlsNames {
        certificate: SERVER,
        validation: Some("ROOTCA"),
        peer_id: CLIENT,
    };
    let server_yaml = mtls_server(
        suite.port()?,
        server_port,
        server_proxy.socket(),
        &server_names,
        "ok",
    );
    let client_names = TlsNames {
        certificate: CLIENT,
        validation: Some("ROOTCA"),
        peer_id: SERVER,
    };
    let client_yaml = mtls_client(
        suite.port()?,
        client_port,
        server_port,
        client_proxy.socket(),
        &client_names,
    );
    Ok((
        suite.envoy(&server_yaml)?,
        suite.envoy(&client_yaml)?,
        client_port,
    ))
}

/// Every scheduled cut found a connection to sever — so Envoy had re-subscribed within
/// one cut interval each time — and Envoy's own counters saw each reconnection.
async fn assert_resubscribed(
    envoy: &Envoy,
    id: &str,
    cuts: CutStats,
    expected_cuts: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        cuts.cuts >= expected_cuts,
        "{id}: only {} cuts in the run, expected {expected_cuts}: {cuts:?}",
        cuts.cuts
    );
    anyhow::ensure!(
        cuts.idle_cuts == 0,
        "{id}: {} cut(s) found no SDS connection: Envoy had not re-subscribed within \
         {CUT_EVERY:?} of the previous cut: {cuts:?}",
        cuts.idle_cuts
    );
    anyhow::ensure!(
        cuts.upstream_connected > cuts.cuts,
        "{id}: Steeple saw {} SDS connection(s) through the proxy for {} cuts: {cuts:?}",
        cuts.upstream_connected,
        cuts.cuts
    );
    let envoy_total = envoy.counter(SDS_CX_TOTAL).await?;
    anyhow::ensure!(
        envoy_total >= cuts.accepted,
        "{id}: Envoy counts {envoy_total} SDS connections ({SDS_CX_TOTAL}), the proxy \
         accepted {}",
        cuts.accepted
    );
    Ok(())
}

/// A leaf certificate as Envoy's `/certs` shows it.
#[derive(Debug)]
struct HeldCertificate {
    serial: String,
    valid_from: SystemTime,
    expires: SystemTime,
}

impl HeldCertificate {
    /// Fails if at `now` this certificate has expired or is past two thirds of its
    /// lifetime (plus [`SLACK`]); else returns how far into its lifetime it is (0..1).
    fn check_fresh(&self, id: &str, now: SystemTime) -> anyhow::Result<f64> {
        let lifetime = self.expires.duration_since(self.valid_from)?;
        let age = now.duration_since(self.valid_from).unwrap_or_default();
        anyhow::ensure!(
            now < self.expires,
            "Envoy holds an expired certificate for {id}: {self:?}, now {now:?}"
        );
        anyhow::ensure!(
            age < lifetime * 2 / 3 + SLACK,
            "Envoy holds a certificate for {id} {age:?} into its {lifetime:?} lifetime, past \
             its rotation point: {self:?}"
        );
        Ok(age.as_secs_f64() / lifetime.as_secs_f64())
    }
}

/// The certificate for `id` Envoy hands out now: of the leaves `/certs` lists with URI
/// SAN `id`, the newest.
async fn held_certificate(envoy: &Envoy, id: &str) -> anyhow::Result<HeldCertificate> {
    let body = envoy.admin_get("/certs").await?;
    let certs: serde_json::Value = serde_json::from_str(&body).context("/certs is not JSON")?;
    let chains = certs["certificates"].as_array().into_iter().flatten();
    let leaves = chains.filter_map(|c| c["cert_chain"].as_array()).flatten();
    let mut held = Vec::new();
    for leaf in leaves {
        let sans = leaf["subject_alt_names"].as_array().into_iter().flatten();
        if !sans.into_iter().any(|san| san["uri"] == id) {
            continue;
        }
        let time = |field: &str| -> anyhow::Result<SystemTime> {
            let text = leaf[field]
                .as_str()
                .with_context(|| format!("no {field}"))?;
            Ok(OffsetDateTime::parse(text, &Rfc3339)
                .with_context(|| format!("{field} {text:?}"))?
                .into())
        };
        held.push(HeldCertificate {
            serial: leaf["serial_number"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            valid_from: time("valid_from")?,
            expires: time("expiration_time")?,
        });
    }
    held.into_iter()
        .max_by_key(|c| c.valid_from)
        .with_context(|| format!("Envoy holds no certificate for {id}: {body}"))
}

/// Open SDS streams, from Steeple's `/metrics` (`steeple_sds_streams`, all protocols).
async fn steeple_sds_streams(admin_port: u16) -> anyhow::Result<u64> {
    let (status, metrics) = http_get(admin_port, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics: {status}");
    let mut total = 0.0;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("steeple_sds_streams{"))
    {
        let value = line.rsplit(' ').next().unwrap_or_default();
        total += value.parse::<f64>().with_context(|| line.to_owned())?;
    }
    Ok(total as u64)
}
