//! `sds-fetch SOCKET NAME TIMEOUT_SECONDS`: one SDS caller in a process of its own, for a
//! suite that needs a caller where the test process cannot be (inside another PID
//! namespace, started through `nsenter`). It polls FetchSecrets for NAME on SOCKET until
//! it is served, at most TIMEOUT_SECONDS, and prints one JSON line `{"name", "bytes",
//! "pid", "sub"}`: the secret's length, never the secret, its own pid as it sees it, and
//! for a JWT-SVID its (public) `sub` claim.

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
    let bytes = sds_client::secret_bytes(secret).unwrap_or_default();
    let line = serde_json::json!({
        "name": name,
        "bytes": bytes.len(),
        "pid": std::process::id(),
        "sub": jwt_subject(&bytes),
    });
    println!("{line}");
    Ok(())
}

/// The `sub` claim of a JWT, if `bytes` is one.
fn jwt_subject(bytes: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let token = std::str::from_utf8(bytes).ok()?;
    let payload = token.split('.').nth(1)?;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    claims["sub"].as_str().map(str::to_owned)
}
