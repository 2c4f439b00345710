//! `sds-workload SOCKET TRUST_DOMAIN`: one workload process, asking for its secrets as
//! Envoy does — one HTTP/2 connection to SOCKET carrying a `StreamSecrets` stream each for
//! `default`, `ROOTCA` and `ALL`, every response ACKed. The node-agent benchmark starts
//! many of these, so each caller is a process of its own for the agent to attest.
//!
//! It prints `ready` once started, connects when it reads a line on stdin (so the
//! benchmark times the agent, not process start-up), and exits when stdin closes. Each
//! response is one JSON line: `{"name", "at_ns", "served", "bundle"}` — the stream's
//! resource, when it arrived (`CLOCK_MONOTONIC`, nanoseconds), whether the resource was
//! in it, and the fingerprint of TRUST_DOMAIN's bundle in its SPIFFE validator (or
//! null); a failed stream prints `{"name", "error"}`. Never a secret.

use std::io::BufRead as _;
use std::path::PathBuf;

use steeple_e2e::bench_support::{monotonic, validator_bundle_fingerprint};
use steeple_e2e::sds_client::{self, SdsClient};

/// The streams an Envoy with one TLS context opens.
const NAMES: [&str; 3] = ["default", "ROOTCA", "ALL"];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, trust_domain] = args.as_slice() else {
        anyhow::bail!("usage: sds-workload SOCKET TRUST_DOMAIN");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("ready");
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    runtime.block_on(run(PathBuf::from(socket), trust_domain.clone()));
    Ok(())
}

async fn run(socket: PathBuf, trust_domain: String) {
    let client = sds_client::connect(&socket);
    let mut streams = tokio::task::JoinSet::new();
    for name in NAMES {
        streams.spawn(follow(name, client.clone(), trust_domain.clone()));
    }
    while streams.join_next().await.is_some() {}
}

async fn follow(name: &'static str, mut client: SdsClient, trust_domain: String) {
    let node = format!("bench-workload-{}", std::process::id());
    let result = sds_client::stream_like_envoy(&mut client, &node, &[name], |response| {
        let at_ns = u64::try_from(monotonic().as_nanos()).unwrap_or(u64::MAX);
        let served = sds_client::decode(response)?
            .iter()
            .any(|secret| secret.name == name);
        let bundle = validator_bundle_fingerprint(response, name, &trust_domain);
        let line =
            serde_json::json!({"name": name, "at_ns": at_ns, "served": served, "bundle": bundle});
        println!("{line}");
        Ok(())
    })
    .await;
    if let Err(e) = result {
        println!(
            "{}",
            serde_json::json!({"name": name, "error": format!("{e:#}")})
        );
    }
}
