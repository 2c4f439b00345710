//! Envelope rows for the benchmark: sealed by `steeple envelope seal --provider local`
//! (the release binary under test) and written where the file source reads them.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use base64::Engine as _;
use steeple_e2e::steeple::steeple_bin;

/// The environment variable the agent reads the `local` master key from.
pub const MASTER_KEY_ENV: &str = "STEEPLE_LOCAL_MASTER_KEY";

/// A fresh random `local` master key, base64 (never printed).
pub fn random_master_key() -> anyhow::Result<String> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
        .context("reading /dev/urandom")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// `steeple envelope seal --provider local` of `plaintext` (on stdin) for `path`.
pub fn seal_local(
    master: &str,
    path: &str,
    aad: &str,
    plaintext: &[u8],
) -> anyhow::Result<serde_json::Value> {
    let mut child = Command::new(steeple_bin()?)
        .args(["envelope", "seal", "--provider", "local"])
        .args(["--logical-path", path, "--aad", aad])
        .env(MASTER_KEY_ENV, master)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running steeple envelope seal")?;
    child
        .stdin
        .take()
        .context("no stdin for steeple envelope seal")?
        .write_all(plaintext)?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "steeple envelope seal failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).context("the sealed row is not JSON")
}

/// Writes `rows` to `file` as a JSON array (write, then rename, as a deploy tool would).
pub fn write_rows(file: &Path, rows: &[serde_json::Value]) -> anyhow::Result<()> {
    let temp = file.with_extension("tmp");
    std::fs::write(&temp, serde_json::to_vec(rows)?)
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, file).with_context(|| format!("renaming to {}", file.display()))?;
    Ok(())
}

/// `len` printable bytes that differ from run to run (a canary for the log check).
pub fn canary(len: usize) -> anyhow::Result<Vec<u8>> {
    let seed = random_master_key()?.replace(['+', '/', '='], "x");
    Ok(format!("canary-{seed}")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect())
}
