//! One resolver conformance suite (issue 13, item 5) run against every envelope provider
//! on its real peer: `local` in process, `kms_envelope` on moto, `vault_transit` and
//! `vault_delegate` on OpenBao. Rows are presented the way the agent's registry does
//! (validate under `max_ciphertext_bytes`, require the logical-path binding, resolve);
//! checks that cannot apply to a provider are skipped by its `Expected`, which says why.
//!
//! What each provider answers today:
//!
//! | check                         | local         | kms_envelope  | vault_transit¹ | vault_delegate |
//! |-------------------------------|---------------|---------------|----------------|----------------|
//! | round trip                    | plaintext     | plaintext     | plaintext      | plaintext      |
//! | context value changed         | Undecryptable | Undecryptable | Undecryptable  | n/a (no context) |
//! | row moved to another path     | Undecryptable | Refused²      | Refused²       | n/a (a reference) |
//! | moved, binding rewritten      | Undecryptable | Undecryptable | Undecryptable  | n/a            |
//! | large plaintext               | one AES-GCM seal | data key (> 4 KiB) | data key (> 32 KiB) | KV value |
//! | ciphertext over the limit     | Refused²      | Refused²      | Refused²       | n/a (no ciphertext) |
//! | upstream stopped              | n/a (none)    | Unavailable   | Unavailable    | Unavailable    |
//!
//! ¹ With a derived transit key; a key that is not derived ignores the context.
//! ² Refused before the resolver, by `EnvelopeRow::validate` or `check_path_binding`, as
//!   the registry does.
//!
//! Every plaintext starts with a per-provider canary, looked for in everything the test
//! binary logged (TRACE, HTTP stacks included) and in the peer's log.

#[path = "resolver_conformance/checks.rs"]
mod checks;

#[path = "resolver_conformance/subjects.rs"]
mod subjects;

use std::sync::{Arc, Mutex, OnceLock};

use checks::Subject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_conforms() -> anyhow::Result<()> {
    conforms(&mut subjects::Local::new()?, "canary-conformance-local").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_envelope_conforms() -> anyhow::Result<()> {
    conforms(&mut subjects::Kms::start().await?, "canary-conformance-kms").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_transit_conforms() -> anyhow::Result<()> {
    conforms(
        &mut subjects::Transit::start()?,
        "canary-conformance-transit",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_delegate_conforms() -> anyhow::Result<()> {
    conforms(&mut subjects::Kv::start()?, "canary-conformance-kv").await
}

/// Runs the suite, then checks no plaintext reached a log.
async fn conforms(subject: &mut dyn Subject, canary: &str) -> anyhow::Result<()> {
    capture_logs();
    checks::run(subject, canary).await?;
    anyhow::ensure!(
        !captured_logs().contains(canary),
        "{}: a plaintext reached the logs",
        subject.name()
    );
    anyhow::ensure!(
        !subject.peer_logs().contains(canary),
        "{}: a plaintext reached the peer's log",
        subject.name()
    );
    Ok(())
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every tracing event of this test binary (TRACE and up) to a buffer.
fn capture_logs() {
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .try_init();
        logs
    });
}

fn captured_logs() -> String {
    LOGS.get()
        .and_then(|l| {
            l.lock()
                .ok()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
        })
        .unwrap_or_default()
}
