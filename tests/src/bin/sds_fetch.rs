//! `sds-fetch SOCKET NAME TIMEOUT_SECONDS`: one SDS caller in a process of its own, for a
//! suite that needs a caller where the test process cannot be (inside another PID
//! namespace, started through `nsenter`). It polls FetchSecrets for NAME on SOCKET until
//! it is served, at most TIMEOUT_SECONDS, and prints one JSON line `{"name", "bytes",
//! "pid"}`: the secret's length, never the secret, and its own pid as it sees it.

use std::path::Path;
use std::time::Duration;

use steeple_e2e::sds_client;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, name, timeout] = args.as_slice() else {
        anyhow::bail!("usage: sds-fetch SOCKET NAME TIMEOUT_SECONDS");
    };
    let timeout = Duration::from_secs(timeout.parse()?);
    let served = sds_client::wait_for(Path::new(socket), &[name.as_str()], timeout).await?;
    let [secret] = served.as_slice() else {
        anyhow::bail!("asked for {name}, served {} secrets", served.len());
    };
    anyhow::ensure!(
        secret.name == *name,
        "asked for {name}, served {}",
        secret.name
    );
    let bytes = sds_client::secret_bytes(secret).map_or(0, |b| b.len());
    println!(
        "{{\"name\":{},\"bytes\":{bytes},\"pid\":{}}}",
        serde_json::Value::from(name.as_str()),
        std::process::id()
    );
    Ok(())
}
