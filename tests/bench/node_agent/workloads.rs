//! W workload processes (`sds-workload`), each connecting to one SDS socket as an Envoy
//! would, and what they report: when each stream got which response.

use std::ops::Range;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use steeple_e2e::bench_support::{cpu_time, monotonic};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::partner::PARTNER_TRUST_DOMAIN;

/// The streams of a workload, in the order of their bits in [`Want`].
pub const STREAMS: [&str; 3] = ["default", "ROOTCA", "ALL"];
/// How long the processes may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a long wait reports how many workloads are still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// A wait in which no workload made progress for this long has stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(30);

/// One line a workload printed.
#[derive(Debug)]
struct Event {
    workload: usize,
    /// Index in [`STREAMS`].
    stream: usize,
    at: Duration,
    served: bool,
    bundle: Option<u64>,
    error: Option<String>,
}

/// What a wait needs from each workload's streams.
#[derive(Debug, Clone, Copy)]
pub enum Want {
    /// Every stream served its resource, `ALL` with this partner.org bundle.
    Established(u64),
    /// `ALL` carried this partner.org bundle.
    Bundle(u64),
}

impl Want {
    /// Which stream `event` satisfies, if any.
    fn satisfied(self, event: &Event) -> Option<usize> {
        let all = event.stream == 2;
        let ok = match self {
            Self::Established(fp) => event.served && (!all || event.bundle == Some(fp)),
            Self::Bundle(fp) => all && event.bundle == Some(fp),
        };
        ok.then_some(event.stream)
    }

    fn mask(self) -> u8 {
        match self {
            Self::Established(_) => 0b111,
            Self::Bundle(_) => 0b100,
        }
    }
}

/// What a wait saw: when each workload got what was wanted, and how many other
/// responses came meanwhile.
#[derive(Debug)]
pub struct Arrivals {
    /// Per workload, the instant its last wanted response arrived.
    pub at: Vec<Instant>,
    /// Responses that were not the first of its kind a wanted stream needed.
    pub other_responses: usize,
}

/// The running workload processes.
#[derive(Debug)]
pub struct Workloads {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    events: mpsc::UnboundedReceiver<Event>,
    /// `Instant::now()` and `monotonic()` read together, to convert the workloads' times.
    clock: (Instant, Duration),
}

impl Workloads {
    /// Starts `count` processes of `bin` for `socket` and waits until each is ready.
    pub async fn start(bin: &Path, socket: &Path, count: usize) -> anyhow::Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let mut children = Vec::with_capacity(count);
        let mut stdins = Vec::with_capacity(count);
        for workload in 0..count {
            let mut child = Command::new(bin)
                .arg(socket)
                .arg(PARTNER_TRUST_DOMAIN)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            stdins.push(child.stdin.take());
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
            tokio::spawn(read_lines(workload, stdout, tx.clone(), ready_tx.clone()));
            children.push(child);
        }
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        for _ in 0..count {
            tokio::time::timeout_at(deadline, ready.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("{count} workload processes not ready within {START_TIMEOUT:?}")
                })?;
        }
        Ok(Self {
            children,
            stdins,
            events,
            clock: (Instant::now(), monotonic()),
        })
    }

    /// Lets the workloads in `range` connect and open their streams; returns when.
    pub async fn go(&mut self, range: Range<usize>) -> anyhow::Result<Instant> {
        let at = Instant::now();
        for stdin in self.stdins[range].iter_mut().flatten() {
            stdin.write_all(b"go\n").await?;
        }
        Ok(at)
    }

    /// CPU all workload processes have used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for child in &self.children {
            if let Some(pid) = child.id() {
                total += cpu_time(pid)?;
            }
        }
        Ok(total)
    }

    /// Waits until each workload in `range` got what `want` says. Fails after `timeout`,
    /// if a stream failed, or once no workload has made progress for [`STALLED_AFTER`].
    pub async fn wait(
        &mut self,
        range: Range<usize>,
        want: Want,
        timeout: Duration,
    ) -> anyhow::Result<Arrivals> {
        let total = range.len();
        let mut seen = vec![0u8; total];
        let mut at: Vec<Option<Instant>> = vec![None; total];
        let (mut missing, mut other_responses) = (total, 0);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut progress_at = tokio::time::Instant::now() + PROGRESS_EVERY;
        let mut last_progress = tokio::time::Instant::now();
        while missing > 0 {
            let wake = deadline.min(progress_at);
            let event = match tokio::time::timeout_at(wake, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => anyhow::bail!("every workload process is gone"),
                Err(_) if wake == deadline => {
                    anyhow::bail!("{missing} of {total} workloads not served within {timeout:?}")
                }
                Err(_) => {
                    eprintln!("bench:   {missing} of {total} workloads still waiting");
                    anyhow::ensure!(
                        last_progress.elapsed() < STALLED_AFTER,
                        "stalled: {missing} of {total} workloads still waiting, none served for {STALLED_AFTER:?}"
                    );
                    progress_at += PROGRESS_EVERY;
                    continue;
                }
            };
            if let Some(error) = &event.error {
                anyhow::bail!(
                    "workload {}'s {} stream failed: {error}",
                    event.workload,
                    STREAMS[event.stream]
                );
            }
            let Some(slot) = event
                .workload
                .checked_sub(range.start)
                .filter(|s| *s < total)
            else {
                continue;
            };
            match want.satisfied(&event) {
                Some(stream) if seen[slot] & (1 << stream) == 0 => {
                    seen[slot] |= 1 << stream;
                    if seen[slot] == want.mask() {
                        at[slot] = Some(self.instant(event.at));
                        missing -= 1;
                        last_progress = tokio::time::Instant::now();
                    }
                }
                _ => other_responses += 1,
            }
        }
        Ok(Arrivals {
            at: at.into_iter().flatten().collect(),
            other_responses,
        })
    }

    /// Counts the responses that arrived since the last wait without waiting for more.
    pub fn drain(&mut self) -> usize {
        let mut count = 0;
        while self.events.try_recv().is_ok() {
            count += 1;
        }
        count
    }

    /// Kills every process and waits for them.
    pub async fn stop(mut self) {
        self.stdins.clear();
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        for child in &mut self.children {
            let _ = child.wait().await;
        }
    }

    /// The `Instant` of a workload's `monotonic()` reading (the same clock on Linux).
    fn instant(&self, at: Duration) -> Instant {
        let (instant, mono) = self.clock;
        match at.checked_sub(mono) {
            Some(after) => instant + after,
            None => instant - (mono - at),
        }
    }
}

async fn read_lines(
    workload: usize,
    stdout: tokio::process::ChildStdout,
    events: mpsc::UnboundedSender<Event>,
    ready: mpsc::UnboundedSender<()>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line == "ready" {
            let _ = ready.send(());
            continue;
        }
        match parse(workload, &line) {
            Some(event) => {
                if events.send(event).is_err() {
                    return;
                }
            }
            None => eprintln!("bench: workload {workload} printed {line:?}"),
        }
    }
}

fn parse(workload: usize, line: &str) -> Option<Event> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    let stream = STREAMS.iter().position(|s| json["name"] == *s)?;
    Some(Event {
        workload,
        stream,
        at: Duration::from_nanos(json["at_ns"].as_u64().unwrap_or(0)),
        served: json["served"].as_bool().unwrap_or(false),
        bundle: json["bundle"].as_u64(),
        error: json["error"].as_str().map(str::to_owned),
    })
}
