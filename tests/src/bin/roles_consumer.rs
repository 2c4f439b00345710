//! `roles-consumer SDS_SOCKET CONTAINER_PORT TOKEN_FILE IMDS_PORT INTERVAL_MS`: one
//! consumer of its workload's AWS credentials, a process of its own run as the workload's
//! uid, for the workload-roles benchmark. It fetches them on every path a node agent serves
//! them on: SDS FetchSecrets of `aws-credentials` (over the one connection it keeps, as a
//! gRPC client does), the container-credentials endpoint, and the IMDSv2 emulation (token
//! `PUT`, then the role's credentials `GET`) — each HTTP request over a fresh connection,
//! as an SDK refreshing its credentials makes one.
//!
//! Driven by lines on stdin: it prints `ready`; on `warm` it fetches on every path until
//! each serves credentials (at most 60 s) and prints `{"warm": true, "role"}` (the role
//! IMDS names) or `{"error"}`; on `measure` it samples every path once every INTERVAL_MS,
//! from an offset of its own; on `stop` (or end of input) it prints `{"sds", "container",
//! "imds", "imds_get"}` (latencies in µs; `imds` is token plus `GET`, `imds_get` the `GET`
//! alone), `"errors"` and `"first_error"`, and exits. Never prints a credential.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use steeple_e2e::http;
use steeple_e2e::sds_client::{self, SdsClient};
use tokio::sync::mpsc;

/// The SDS resource holding the caller's credentials (`aws.credentials_resource_name`).
const RESOURCE: &str = "aws-credentials";
/// How long `warm` may take.
const WARM_TIMEOUT: Duration = Duration::from_secs(60);
/// The IMDS token lifetime asked for (what SDKs ask for).
const IMDS_TOKEN_TTL: &str = "21600";
const ROLES_PATH: &str = "/latest/meta-data/iam/security-credentials/";

/// Where this consumer fetches.
struct Paths {
    sds: SdsClient,
    container_port: u16,
    container_token: String,
    imds_port: u16,
    /// The role IMDS lists for this caller, once warm.
    role: Option<String>,
}

/// Latencies per path, and what failed.
#[derive(Default)]
struct Samples {
    latencies: BTreeMap<&'static str, Vec<u64>>,
    errors: usize,
    first_error: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, container_port, token_file, imds_port, interval_ms] = args.as_slice() else {
        anyhow::bail!(
            "usage: roles-consumer SDS_SOCKET CONTAINER_PORT TOKEN_FILE IMDS_PORT INTERVAL_MS"
        );
    };
    let mut paths = Paths {
        sds: sds_client::connect(Path::new(socket)),
        container_port: container_port.parse()?,
        container_token: std::fs::read_to_string(PathBuf::from(token_file))?
            .trim()
            .to_owned(),
        imds_port: imds_port.parse()?,
        role: None,
    };
    let interval = Duration::from_millis(interval_ms.parse()?);
    let mut lines = stdin_lines();
    println!("ready");
    while let Some(line) = lines.recv().await {
        match line.trim() {
            "warm" => {
                let line = match paths.warm().await {
                    Ok(role) => serde_json::json!({"warm": true, "role": role}),
                    Err(e) => serde_json::json!({"error": format!("{e:#}")}),
                };
                println!("{line}");
            }
            "measure" => {
                let samples = paths.measure(interval, &mut lines).await?;
                println!("{}", samples.json());
                return Ok(());
            }
            other => anyhow::bail!("unknown command {other:?}"),
        }
    }
    Ok(())
}

/// stdin's lines, read on a thread of their own (this runtime has no async stdin).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

impl Paths {
    /// Fetches on every path until each has served credentials; returns the role IMDS
    /// names.
    async fn warm(&mut self) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + WARM_TIMEOUT;
        loop {
            let attempt = async {
                let role = self.imds_role().await?;
                self.role = Some(role.clone());
                self.sds().await?;
                self.container().await?;
                self.imds().await?;
                anyhow::Ok(role)
            };
            match attempt.await {
                Ok(role) => return Ok(role),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(e).context(format!("not served within {WARM_TIMEOUT:?}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Samples every path once per `interval` until `stop` or the end of `lines`.
    async fn measure(
        &mut self,
        interval: Duration,
        lines: &mut mpsc::UnboundedReceiver<String>,
    ) -> anyhow::Result<Samples> {
        // Consumers start together: each begins at its own point of the interval.
        let offset = interval.mul_f64(f64::from(std::process::id() % 997) / 997.0);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut samples = Samples::default();
        loop {
            tokio::select! {
                _ = ticks.tick() => self.sample(&mut samples).await,
                line = lines.recv() => match line {
                    Some(line) if line.trim() == "stop" => return Ok(samples),
                    None => return Ok(samples),
                    Some(other) => anyhow::bail!("unknown command {other:?}"),
                },
            }
        }
    }

    /// One fetch on each path, timed.
    async fn sample(&mut self, samples: &mut Samples) {
        let started = Instant::now();
        let sds = self.sds().await;
        samples.record("sds", started, sds);
        let started = Instant::now();
        let container = self.container().await;
        samples.record("container", started, container);
        let started = Instant::now();
        match self.imds().await {
            Ok(get_took) => {
                samples.record("imds", started, Ok(()));
                let get = samples.latencies.entry("imds_get").or_default();
                get.push(u64::try_from(get_took.as_micros()).unwrap_or(u64::MAX));
            }
            Err(e) => samples.record::<()>("imds", started, Err(e)),
        }
    }

    /// FetchSecrets of the credentials on the kept connection.
    async fn sds(&mut self) -> anyhow::Result<()> {
        let served = sds_client::fetch(&mut self.sds, &[RESOURCE]).await?;
        let secret = served
            .iter()
            .find(|s| s.name == RESOURCE)
            .context("SDS served no credentials")?;
        let bytes = sds_client::secret_bytes(secret).unwrap_or_default();
        anyhow::ensure!(
            contains(&bytes, b"AccessKeyId"),
            "SDS served no AccessKeyId"
        );
        Ok(())
    }

    /// `GET /` on the container-credentials endpoint with its token.
    async fn container(&self) -> anyhow::Result<()> {
        let auth = [("Authorization", self.container_token.as_str())];
        let response = http::request(self.container_port, "GET", "/", &auth).await?;
        credentials_in("container endpoint", &response)
    }

    /// A fresh IMDS session token, then the role's credentials with it; returns how long
    /// the `GET` took.
    async fn imds(&self) -> anyhow::Result<Duration> {
        let role = self.role.as_deref().context("no IMDS role yet")?;
        let token = self.imds_token().await?;
        let started = Instant::now();
        let headers = [("X-aws-ec2-metadata-token", token.as_str())];
        let path = format!("{ROLES_PATH}{role}");
        let response = http::request(self.imds_port, "GET", &path, &headers).await?;
        let took = started.elapsed();
        credentials_in("IMDS", &response)?;
        Ok(took)
    }

    /// The role IMDS lists for this caller.
    async fn imds_role(&self) -> anyhow::Result<String> {
        let token = self.imds_token().await?;
        let headers = [("X-aws-ec2-metadata-token", token.as_str())];
        let response = http::request(self.imds_port, "GET", ROLES_PATH, &headers).await?;
        anyhow::ensure!(
            response.status == 200,
            "IMDS role listing: {}",
            response.status
        );
        let role = response.body.lines().next().unwrap_or_default().trim();
        anyhow::ensure!(!role.is_empty(), "IMDS lists no role");
        Ok(role.to_owned())
    }

    async fn imds_token(&self) -> anyhow::Result<String> {
        let ttl = [("X-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL)];
        let response = http::request(self.imds_port, "PUT", "/latest/api/token", &ttl).await?;
        anyhow::ensure!(
            response.status == 200,
            "IMDS token: {} {}",
            response.status,
            response.body
        );
        Ok(response.body.trim().to_owned())
    }
}

impl Samples {
    /// Keeps the latency since `started` under `path`, or counts the error.
    fn record<T>(&mut self, path: &'static str, started: Instant, result: anyhow::Result<T>) {
        match result {
            Ok(_) => {
                let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.latencies.entry(path).or_default().push(took);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("{path}: {e:#}"));
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "errors": self.errors,
            "first_error": self.first_error,
        });
        for (path, latencies) in &self.latencies {
            json[*path] = serde_json::json!(latencies);
        }
        json
    }
}

/// `Err` unless `response` is a 200 carrying an access key id (error bodies name no
/// secret, so they may be shown).
fn credentials_in(path: &str, response: &http::HttpResponse) -> anyhow::Result<()> {
    anyhow::ensure!(
        response.status == 200 && response.body.contains("AccessKeyId"),
        "{path}: {} {}",
        response.status,
        if response.status == 200 {
            ""
        } else {
            response.body.as_str()
        }
    );
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
