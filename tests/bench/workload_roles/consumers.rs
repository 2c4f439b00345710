//! The consumer processes of one round: C `roles-consumer` processes per workload, each
//! run as its workload's uid, driven over stdin and read line by line from stdout.

use std::collections::BTreeMap;
use std::ops::Range;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::world::{NodeAgent, Workload, World};

/// How long the processes may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a consumer may take to print its samples after `stop`.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a long wait says how many consumers it still waits for.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What every consumer measured, all together.
#[derive(Debug, Default)]
pub struct Measured {
    /// Latencies per path (`sds`, `container`, `imds`, `imds_get`).
    pub latencies: BTreeMap<String, Vec<Duration>>,
    /// Fetches that failed.
    pub errors: usize,
    /// The first failure a consumer reported.
    pub first_error: Option<String>,
}

/// The running consumer processes. Dropping them kills them.
#[derive(Debug)]
pub struct Consumers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    /// Each JSON line a consumer printed, with its index.
    lines: mpsc::UnboundedReceiver<(usize, serde_json::Value)>,
}

impl Consumers {
    /// Starts `per_workload` consumers of each of `workloads` against `agent`, each
    /// sampling every `interval` once measuring, and waits until all are ready.
    pub async fn start(
        world: &World,
        agent: &NodeAgent,
        workloads: &[Workload],
        per_workload: usize,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let (tx, lines) = mpsc::unbounded_channel();
        let mut consumers = Self {
            children: Vec::new(),
            stdins: Vec::new(),
            lines,
        };
        let interval_ms = interval.as_millis().max(1).to_string();
        for workload in workloads {
            for _ in 0..per_workload {
                let mut child = Command::new("setpriv")
                    .arg(format!("--reuid={}", workload.uid))
                    .arg(format!("--regid={}", workload.uid))
                    .args(["--clear-groups", "--"])
                    .arg(world.consumer_bin())
                    .arg(agent.steeple.sds_socket())
                    .arg(agent.container_port.to_string())
                    .arg(world.token_file())
                    .arg(agent.imds_port.to_string())
                    .arg(&interval_ms)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()?;
                let index = consumers.children.len();
                let stdin = child.stdin.take();
                let stdout = child.stdout.take();
                consumers.children.push(child);
                let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
                    anyhow::bail!("consumer {index} has no stdin or stdout");
                };
                consumers.stdins.push(stdin);
                tokio::spawn(read_lines(index, stdout, tx.clone()));
            }
        }
        let all = 0..consumers.children.len();
        consumers.wait_all(all, "ready", START_TIMEOUT).await?;
        Ok(consumers)
    }

    /// Tells the consumers, `batch` at a time (each batch once the previous one was
    /// served), to fetch on every path until served; returns once all were, with the roles
    /// IMDS named to them. Fails if one is not served within `timeout`.
    pub async fn warm(&mut self, batch: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let mut roles = Vec::with_capacity(self.children.len());
        for first in (0..self.children.len()).step_by(batch.max(1)) {
            let range = first..self.children.len().min(first + batch.max(1));
            self.send(range.clone(), "warm").await?;
            let answers = self.wait_all(range, "warm", timeout).await?;
            roles.extend(
                answers
                    .iter()
                    .map(|a| a["role"].as_str().unwrap_or_default().to_owned()),
            );
        }
        Ok(roles)
    }

    /// Tells every consumer to start sampling.
    pub async fn measure(&mut self) -> anyhow::Result<()> {
        self.send(0..self.children.len(), "measure").await
    }

    /// Tells every consumer to stop, and gathers what they measured.
    pub async fn stop(mut self) -> anyhow::Result<Measured> {
        let all = 0..self.children.len();
        self.send(all.clone(), "stop").await?;
        let answers = self.wait_all(all, "samples", STOP_TIMEOUT).await?;
        let mut measured = Measured::default();
        for answer in answers {
            measured.errors += answer["errors"].as_u64().unwrap_or(0) as usize;
            if measured.first_error.is_none() {
                measured.first_error = answer["first_error"].as_str().map(str::to_owned);
            }
            for path in ["sds", "container", "imds", "imds_get"] {
                let samples = answer[path].as_array().into_iter().flatten();
                measured
                    .latencies
                    .entry(path.to_owned())
                    .or_default()
                    .extend(
                        samples
                            .filter_map(|us| us.as_u64())
                            .map(Duration::from_micros),
                    );
            }
        }
        for child in &mut self.children {
            let _ = child.wait().await;
        }
        Ok(measured)
    }

    /// Sends `command` to the consumers in `range`.
    async fn send(&mut self, range: Range<usize>, command: &str) -> anyhow::Result<()> {
        let line = format!("{command}\n");
        for stdin in &mut self.stdins[range] {
            stdin.write_all(line.as_bytes()).await?;
        }
        Ok(())
    }

    /// One answer from every consumer in `range` (`what` names it in errors), within
    /// `timeout`. Fails at once if one reports an error.
    async fn wait_all(
        &mut self,
        range: Range<usize>,
        what: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let total = range.len();
        let mut answers = vec![None; total];
        let mut missing = total;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut progress_at = tokio::time::Instant::now() + PROGRESS_EVERY;
        while missing > 0 {
            let wake = deadline.min(progress_at);
            match tokio::time::timeout_at(wake, self.lines.recv()).await {
                Ok(Some((index, answer))) => {
                    if let Some(error) = answer["error"].as_str() {
                        anyhow::bail!("consumer {index}, waiting for {what}: {error}");
                    }
                    let Some(slot) = index.checked_sub(range.start).filter(|s| *s < total) else {
                        continue;
                    };
                    if answers[slot].replace(answer).is_none() {
                        missing -= 1;
                    }
                }
                Ok(None) => anyhow::bail!("every consumer process is gone"),
                Err(_) if wake == deadline => {
                    anyhow::bail!("{missing} of {total} consumers: no {what} within {timeout:?}")
                }
                Err(_) => {
                    eprintln!("bench:   {missing} of {total} consumers: still no {what}");
                    progress_at += PROGRESS_EVERY;
                }
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }
}

/// Forwards `stdout`'s lines as JSON (`ready` as `{"ready": true}`); a line that is
/// neither, or the process ending early, as an `{"error"}`.
async fn read_lines(
    index: usize,
    stdout: tokio::process::ChildStdout,
    lines: mpsc::UnboundedSender<(usize, serde_json::Value)>,
) {
    let mut reader = BufReader::new(stdout).lines();
    let mut answered = 0;
    while let Ok(Some(line)) = reader.next_line().await {
        let answer = match line.as_str() {
            "ready" => serde_json::json!({"ready": true}),
            _ => serde_json::from_str(&line)
                .unwrap_or_else(|_| serde_json::json!({"error": format!("printed {line:?}")})),
        };
        answered += 1;
        if lines.send((index, answer)).is_err() {
            return;
        }
    }
    // `ready`, `warm` and the samples: anything less means it ended early.
    if answered < 3 {
        let _ = lines.send((index, serde_json::json!({"error": "exited early"})));
    }
}
