//! `sds-vault-read SOCKET NAME VAULT_PORT PATH…`: a workload that talks to Vault with the
//! token its node agent serves it. It fetches the Vault token NAME over SDS on SOCKET (at
//! most 15 s), asks Vault on 127.0.0.1:VAULT_PORT who the token is (`lookup-self`), then
//! reads each KV PATH with it, and prints one JSON line `{"role", "entity_sub",
//! "reads": {PATH: status}}`: the JWT role it logged in as, the SPIFFE ID Vault's login
//! metadata recorded, and each read's HTTP status. Never the token, never a secret.

use std::path::Path;
use std::time::Duration;

use steeple_e2e::{http, sds_client};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, name, port, paths @ ..] = args.as_slice() else {
        anyhow::bail!("usage: sds-vault-read SOCKET NAME VAULT_PORT PATH…");
    };
    let port: u16 = port.parse()?;
    let served =
        sds_client::wait_for(Path::new(socket), &[name.as_str()], Duration::from_secs(15)).await?;
    let token = served
        .first()
        .and_then(sds_client::secret_bytes)
        .ok_or_else(|| anyhow::anyhow!("{name} is not a generic secret"))?;
    let token = String::from_utf8(token)?;
    let headers = [("X-Vault-Token", token.as_str())];
    let lookup = http::request(port, "GET", "/v1/auth/token/lookup-self", &headers).await?;
    anyhow::ensure!(lookup.status == 200, "lookup-self: {}", lookup.status);
    let lookup: serde_json::Value = serde_json::from_str(&lookup.body)?;
    let mut reads = serde_json::Map::new();
    for path in paths {
        let read = http::request(port, "GET", &format!("/v1/{path}"), &headers).await?;
        reads.insert(path.clone(), read.status.into());
    }
    let line = serde_json::json!({
        "role": lookup["data"]["meta"]["role"],
        "entity_sub": lookup["data"]["display_name"],
        "reads": reads,
    });
    println!("{line}");
    Ok(())
}
