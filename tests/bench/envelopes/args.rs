//! Command-line options (after `cargo bench … --`), parsed by hand.

use std::time::Duration;

const USAGE: &str = "usage: cargo bench -p steeple-e2e --bench envelopes -- \
    [--parts fetch,resolve,upstream] [--concurrency 1,100,1000] [--per-connection 10] \
    [--seconds 10] [--open-rates 1000,5000|none] [--targets steeple,floor] [--profile on|off] \
    [--resolves 200] [--consumers 1,10,100,1000] [--window 60]";

/// One of the three measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// FetchSecrets latency of a resolved envelope (`local` provider).
    Fetch,
    /// Cold KMS resolve latency against moto, next to a bare `Decrypt`.
    Resolve,
    /// STS and KMS calls per hour versus the number of consumers.
    Upstream,
}

/// A server part 1 measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `steeple dev`'s SDS socket.
    Steeple,
    /// The floor of Steeple's stack: a bare tonic/h2 relay of Steeple's response to the
    /// same request, answering every FetchSecrets with shared bytes (`floor.rs`).
    Floor,
}

impl Server {
    /// The name `--targets` takes and the reports print.
    pub fn name(self) -> &'static str {
        match self {
            Self::Steeple => "steeple",
            Self::Floor => "floor",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    /// The parts to run, in the order given.
    pub parts: Vec<Part>,
    /// Part 1: concurrent in-flight FetchSecrets, one round each.
    pub concurrency: Vec<usize>,
    /// Part 1: in-flight requests per HTTP/2 connection.
    pub per_connection: usize,
    /// Part 1: measured time per round (after a warm-up).
    pub measure: Duration,
    /// Part 1: aggregate request rates (req/s) of the open-loop rounds, which run as
    /// many clients as the highest concurrency, each at a fixed pace.
    pub open_rates: Vec<usize>,
    /// Part 1: the servers measured, each round in this order.
    pub targets: Vec<Server>,
    /// Part 1: profile the agent with `perf` at the highest concurrency (Steeple only,
    /// when among the targets).
    pub profile: bool,
    /// Part 2: resolves per payload size.
    pub resolves: usize,
    /// Part 3: consumer counts, one window each.
    pub consumers: Vec<usize>,
    /// Part 3: how long each consumer count runs.
    pub window: Duration,
    raw: Vec<String>,
}

impl Args {
    /// Parses the arguments after the program name. `--bench`, which `cargo bench`
    /// passes, is ignored.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut parsed = Self {
            parts: vec![Part::Fetch, Part::Resolve, Part::Upstream],
            concurrency: vec![1, 100, 1000],
            per_connection: 10,
            measure: Duration::from_secs(10),
            open_rates: vec![1000, 5000],
            targets: vec![Server::Steeple],
            profile: true,
            resolves: 200,
            consumers: vec![1, 10, 100, 1000],
            window: Duration::from_secs(60),
            raw: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            if flag == "--bench" {
                continue;
            }
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"))?;
            parsed.raw.push(format!("{flag} {value}"));
            parsed.set(&flag, &value)?;
        }
        Ok(parsed)
    }

    fn set(&mut self, flag: &str, value: &str) -> anyhow::Result<()> {
        match flag {
            "--parts" => self.parts = list(value, part)?,
            "--concurrency" => self.concurrency = list(value, |n| positive(flag, n))?,
            "--per-connection" => self.per_connection = positive(flag, value)?,
            "--seconds" => self.measure = Duration::from_secs(positive(flag, value)? as u64),
            "--open-rates" if value == "none" => self.open_rates.clear(),
            "--open-rates" => self.open_rates = list(value, |n| positive(flag, n))?,
            "--targets" => {
                let targets = list(value, server)?;
                let distinct = targets
                    .iter()
                    .enumerate()
                    .all(|(i, t)| !targets[..i].contains(t));
                anyhow::ensure!(
                    distinct,
                    "--targets: {value:?} names a server twice\n{USAGE}"
                );
                self.targets = targets;
            }
            "--profile" => {
                self.profile = match value {
                    "on" => true,
                    "off" => false,
                    _ => anyhow::bail!("--profile: {value:?} is neither on nor off\n{USAGE}"),
                }
            }
            "--resolves" => self.resolves = positive(flag, value)?,
            "--consumers" => self.consumers = list(value, |n| positive(flag, n))?,
            "--window" => self.window = Duration::from_secs(positive(flag, value)? as u64),
            _ => anyhow::bail!("unknown argument {flag}\n{USAGE}"),
        }
        Ok(())
    }

    /// The command that reproduces this run.
    pub fn command_line(&self) -> String {
        let mut line = "cargo bench -p steeple-e2e --bench envelopes".to_owned();
        if !self.raw.is_empty() {
            line.push_str(" -- ");
            line.push_str(&self.raw.join(" "));
        }
        line
    }
}

fn list<T>(value: &str, item: impl Fn(&str) -> anyhow::Result<T>) -> anyhow::Result<Vec<T>> {
    value.split(',').map(|v| item(v.trim())).collect()
}

fn positive(flag: &str, value: &str) -> anyhow::Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => anyhow::bail!("{flag}: {value:?} is not a positive number\n{USAGE}"),
    }
}

fn part(name: &str) -> anyhow::Result<Part> {
    match name {
        "fetch" => Ok(Part::Fetch),
        "resolve" => Ok(Part::Resolve),
        "upstream" => Ok(Part::Upstream),
        _ => anyhow::bail!("--parts: {name:?} is not fetch, resolve or upstream\n{USAGE}"),
    }
}

fn server(name: &str) -> anyhow::Result<Server> {
    [Server::Steeple, Server::Floor]
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| anyhow::anyhow!("--targets: {name:?} is not steeple or floor\n{USAGE}"))
}
