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
//! | garbage ciphertext³           | Undecryptable | Undecryptable | Undecryptable  | n/a (no ciphertext) |
//! | upstream stopped              | n/a (none)    | Unavailable   | Unavailable    | Unavailable    |
//!
//! ¹ With a derived transit key; a key that is not derived ignores the context.
//! ² Refused before the resolver, by `EnvelopeRow::validate` or `check_path_binding`, as
//!   the registry does.
//! ³ Random bytes as long as the sealed ones, and the sealed ones cut to half; with a data
//!   key, also the wrapped key made random and the payload cut short. Never `Unavailable`:
//!   no retry opens it.
//!
//! Every plaintext starts with a per-provider canary, looked for in everything the test
//! binary logged (TRACE, HTTP stacks included) and in the peer's log.

mod checks;

mod subjects;

use checks::Subject;
use steeple_e2e::log_capture::{capture_logs, captured_logs};

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
