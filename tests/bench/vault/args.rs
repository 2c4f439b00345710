//! Command-line options (after `cargo bench … --`), parsed by hand.

use std::time::Duration;

const USAGE: &str = "usage: cargo bench -p steeple-e2e --bench vault -- \
    [--parts resolve,calls] [--resolves 200] [--consumers 1,10,100,1000] [--window 45]";

/// One of the two measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Cold and warm resolve latency, next to the bare Vault call.
    Resolve,
    /// Vault calls per hour versus the number of consumers.
    Calls,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    /// The parts to run, in the order given.
    pub parts: Vec<Part>,
    /// Part 1: measured resolves of each kind, cold and warm.
    pub resolves: usize,
    /// Part 2: consumer counts, one window each.
    pub consumers: Vec<usize>,
    /// Part 2: how long each consumer count is measured.
    pub window: Duration,
    raw: Vec<String>,
}

impl Args {
    /// Parses the arguments after the program name; `--bench`, which `cargo bench`
    /// passes, is ignored.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut parsed = Self {
            parts: vec![Part::Resolve, Part::Calls],
            resolves: 200,
            consumers: vec![1, 10, 100, 1000],
            window: Duration::from_secs(45),
            raw: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value\n{USAGE}"))?;
            match arg.as_str() {
                "--parts" => parsed.parts = list(&value, part)?,
                "--resolves" => parsed.resolves = positive(&value)?,
                "--consumers" => parsed.consumers = list(&value, positive)?,
                "--window" => parsed.window = Duration::from_secs(positive(&value)? as u64),
                _ => anyhow::bail!("unknown option {arg}\n{USAGE}"),
            }
            parsed.raw.extend([arg, value]);
        }
        Ok(parsed)
    }

    /// The command that reproduces this run.
    pub fn command_line(&self) -> String {
        let base = "cargo bench -p steeple-e2e --bench vault";
        if self.raw.is_empty() {
            base.to_owned()
        } else {
            format!("{base} -- {}", self.raw.join(" "))
        }
    }
}

fn part(name: &str) -> anyhow::Result<Part> {
    match name {
        "resolve" => Ok(Part::Resolve),
        "calls" => Ok(Part::Calls),
        _ => anyhow::bail!("unknown part {name:?}\n{USAGE}"),
    }
}

fn positive(text: &str) -> anyhow::Result<usize> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => anyhow::bail!("{text:?} is not a positive number\n{USAGE}"),
    }
}

fn list<T>(text: &str, item: fn(&str) -> anyhow::Result<T>) -> anyhow::Result<Vec<T>> {
    text.split(',').map(|s| item(s.trim())).collect()
}
