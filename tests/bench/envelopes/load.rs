//! A FetchSecrets load: C client tasks spread over HTTP/2 connections, each with one
//! request in flight at a time — back to back (closed loop) or at a fixed pace (open
//! loop); latencies of the requests started in the measured window, and the CPU the agent,
//! this process and the whole machine used meanwhile.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use steeple_e2e::bench_support::cpu_time;
use steeple_e2e::sds_client::{self, SdsClient};
use tokio::task::JoinSet;

/// The shape of one load round.
#[derive(Debug, Clone)]
pub struct LoadSpec<'a> {
    /// The SDS socket.
    pub socket: &'a Path,
    /// The resource every request asks for.
    pub resource: &'a str,
    /// Client tasks (concurrent in-flight requests in a closed loop).
    pub concurrency: usize,
    /// `None`: each task sends back to back. `Some(interval)`: each task sends once per
    /// interval (phases spread evenly); how late each send left is recorded, so a client
    /// falling behind its schedule shows.
    pub pace: Option<Duration>,
    /// Tasks sharing one HTTP/2 connection.
    pub per_connection: usize,
    /// Unmeasured time first (connections, allocator and caches warm up).
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
    /// The agent, whose CPU time is read at both ends of the window.
    pub agent_pid: u32,
}

/// What one round measured.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Latency of every request started inside the window.
    pub latencies: Vec<Duration>,
    /// Paced: how late after its scheduled time each of those requests was sent (the
    /// client's timer and scheduling, not the agent); empty for a closed loop.
    pub lags: Vec<Duration>,
    /// The window's actual length.
    pub window: Duration,
    /// CPU the agent used in the window.
    pub agent_cpu: Duration,
    /// CPU this process (the clients) used in the window.
    pub client_cpu: Duration,
    /// CPU the whole machine used in the window (every process).
    pub machine_cpu: Duration,
}

impl LoadSpec<'_> {
    /// HTTP/2 connections the round opens.
    pub fn connections(&self) -> usize {
        self.concurrency.div_ceil(self.per_connection)
    }

    /// Runs the round. Any failed request fails it.
    pub async fn run(&self) -> anyhow::Result<LoadOutcome> {
        let start = Instant::now() + self.warmup;
        let end = start + self.measure;
        let request = sds_client::request(&[self.resource]);
        let mut tasks = JoinSet::new();
        let mut client: Option<SdsClient> = None;
        for i in 0..self.concurrency {
            let client = match &client {
                Some(c) if i % self.per_connection != 0 => c.clone(),
                _ => client.insert(sds_client::connect(self.socket)).clone(),
            };
            let schedule = Schedule {
                start,
                end,
                pace: self.pace,
                phase: self.pace.map_or(Duration::ZERO, |pace| {
                    pace.mul_f64(i as f64 / self.concurrency as f64)
                }),
            };
            tasks.spawn(requester(client, request.clone(), schedule));
        }
        tokio::time::sleep_until(start.into()).await;
        let before = [cpu_time(self.agent_pid)?, own_cpu()?, machine_cpu()?];
        tokio::time::sleep_until(end.into()).await;
        let after = [cpu_time(self.agent_pid)?, own_cpu()?, machine_cpu()?];
        let window = start.elapsed();
        let [agent_cpu, client_cpu, machine_cpu] =
            std::array::from_fn(|i| after[i].saturating_sub(before[i]));
        let (mut latencies, mut lags) = (Vec::new(), Vec::new());
        while let Some(joined) = tasks.join_next().await {
            let samples = joined.context("a requester panicked")??;
            latencies.extend(samples.latencies);
            lags.extend(samples.lags);
        }
        Ok(LoadOutcome {
            latencies,
            lags,
            window,
            agent_cpu,
            client_cpu,
            machine_cpu,
        })
    }
}

/// When one task sends.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Requests sent from here on count.
    start: Instant,
    /// No request is sent from here on.
    end: Instant,
    /// Interval between sends, or back to back.
    pace: Option<Duration>,
    /// Offset of this task's first send after the warm-up began.
    phase: Duration,
}

/// One task's measurements.
#[derive(Debug, Default)]
struct Samples {
    latencies: Vec<Duration>,
    lags: Vec<Duration>,
}

/// Sends `request` per `schedule` until its end; returns the latencies (and, paced, the
/// send lags) of those sent at or after its start.
async fn requester(
    mut client: SdsClient,
    request: DiscoveryRequest,
    schedule: Schedule,
) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    let mut next = Instant::now() + schedule.phase;
    loop {
        let lag = match schedule.pace {
            Some(interval) => {
                // tokio's timer fires on a 1 ms tick: a send may leave up to ~1 ms late.
                tokio::time::sleep_until(next.into()).await;
                let lag = next.elapsed();
                next += interval;
                Some(lag)
            }
            None => None,
        };
        let sent = Instant::now();
        if sent >= schedule.end {
            return Ok(samples);
        }
        let response = client
            .fetch_secrets(request.clone())
            .await
            .context("FetchSecrets failed under load")?
            .into_inner();
        let took = sent.elapsed();
        anyhow::ensure!(
            response.resources.len() == 1,
            "FetchSecrets returned {} resources, expected 1",
            response.resources.len()
        );
        if sent >= schedule.start {
            samples.latencies.push(took);
            samples.lags.extend(lag);
        }
    }
}

fn own_cpu() -> anyhow::Result<Duration> {
    cpu_time(std::process::id())
}

/// CPU time the whole machine has been busy since boot: every non-idle column of the
/// `cpu` line of `/proc/stat`, in USER_HZ (100 per second on Linux).
fn machine_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice: idle, waiting,
    // stolen by the hypervisor and guest time (already in user) are not this machine's work.
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4 | 7 | 8 | 9))
        .map(|(_, t)| t)
        .sum();
    Ok(Duration::from_millis(busy * 10))
}
