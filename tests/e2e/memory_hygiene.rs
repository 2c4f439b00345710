//! Memory hygiene of a running agent: a canary secret is planted (a sealed envelope),
//! served over SDS, then its envelope is removed — and a scan of the agent's whole memory
//! (`/proc/PID/mem`, read as root, as an attacker with the host's root would) finds no
//! copy of it left. The same scan while the secret is served must find it, so the scanner
//! is proven to see what it looks for. Also: core dumps are off and the hardening outcome
//! is logged at start.

use std::os::unix::fs::FileExt as _;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use steeple_e2e::SteepleProcess;
use steeple_e2e::sds_client;
use steeple_e2e::steeple::{seal_local, write_rows};

const PATH: &str = "payments/memory-canary";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_secret_leaves_no_copy_in_the_agents_memory() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-mem-")
        .tempdir_in("/tmp")?;
    let envelopes = dir.path().join("envelopes");
    std::fs::create_dir_all(&envelopes)?;
    let master = base64::engine::general_purpose::STANDARD.encode(random::<32>()?);
    // Unique per run, so nothing but this run's agent can hold it.
    let canary = format!("canary-memory-scan-{}", hex(&random::<16>()?));
    let rows = envelopes.join("rows.json");
    write_rows(&rows, &[seal_local(&master, PATH, "", &canary)?])?;
    let config = format!(
        "[envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
         local_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n",
        envelopes.display()
    );
    let steeple = SteepleProcess::dev_with(
        &dir.path().join("steeple"),
        &config,
        &[("STEEPLE_LOCAL_MASTER_KEY", master.as_str())],
    )?;

    let served =
        sds_client::wait_for(steeple.sds_socket(), &[PATH], Duration::from_secs(30)).await?;
    assert_eq!(
        sds_client::secret_bytes(&served[0]).unwrap_or_default(),
        canary.as_bytes()
    );
    drop(served);
    let while_served = count_in_memory(steeple.pid(), canary.as_bytes())?;
    anyhow::ensure!(
        while_served.copies >= 1,
        "the scanner found no copy of a secret being served ({} bytes scanned): it cannot \
         be trusted (is the test running as root?)",
        while_served.bytes
    );

    // Remove the envelope; wait until SDS no longer has it.
    write_rows(&rows, &[])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut client = sds_client::connect(steeple.sds_socket());
        let gone = sds_client::fetch(&mut client, &[PATH])
            .await
            .map_or(true, |secrets| secrets.is_empty());
        drop(client);
        if gone {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the secret was still served 30 s after its envelope was removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the agent finish with the removal (streams notified, snapshots dropped).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = count_in_memory(steeple.pid(), canary.as_bytes())?;
    assert_eq!(
        after.copies, 0,
        "{} copies of the removed secret remain in the agent's memory ({} bytes scanned; \
         {} while it was served)",
        after.copies, after.bytes, while_served.copies
    );

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", steeple.pid()))?;
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .context("no core limit in /proc/PID/limits")?;
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    let logs = steeple.logs();
    assert!(
        logs.contains("core dumps off, process not dumpable"),
        "no hardening line in:\n{logs}"
    );
    sds_client::assert_not_in_logs(&[canary.into_bytes()], &logs)?;
    Ok(())
}

/// What one scan saw.
struct Scan {
    copies: usize,
    bytes: u64,
}

/// Counts occurrences of `needle` in every readable mapping of process `pid`.
fn count_in_memory(pid: u32, needle: &[u8]) -> anyhow::Result<Scan> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem (needs root)"))?;
    let mut scan = Scan {
        copies: 0,
        bytes: 0,
    };
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = fields.nth(3).unwrap_or("");
        if !perms.starts_with('r') || name == "[vvar]" || name == "[vsyscall]" {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (start, end) = (
            u64::from_str_radix(start, 16)?,
            u64::from_str_radix(end, 16)?,
        );
        let mut region = vec![0u8; usize::try_from(end - start)?];
        // Some mappings (guard pages, device memory) cannot be read; they hold no heap.
        if mem.read_exact_at(&mut region, start).is_err() {
            continue;
        }
        scan.bytes += end - start;
        scan.copies += region
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count();
    }
    Ok(scan)
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
