//! Vault trusted by the SPIFFE bundle, at the agent level. OpenBao serves TLS on
//! `https://localhost`; `steeple run` has `vault.ca_spiffe_bundle = "example.org"` — no CA
//! file, no system roots — and logs in within a Vault namespace. Phases:
//! 1. OpenBao's certificate is self-signed (outside the bundle): the login fails with the
//!    TLS error in Steeple's log and nothing is served.
//! 2. OpenBao restarts with an X.509-SVID SPIRE minted for another workload of the trust
//!    domain (with Vault's DNS name): `vault.spiffe_id` pins Vault's own ID, so it is
//!    refused by name and nothing is served.
//! 3. OpenBao restarts with Vault's own SVID (`x509 mint -dns localhost`): the
//!    agent logs in and serves a KV value of its namespace (not the root namespace's
//!    value at the same path) and a 40 KiB transit envelope (the data-key layer).
//! 4. SPIRE's X.509 CA rotates (prepare, activate) and OpenBao restarts with a certificate
//!    from the new authority — one the roots Steeple started with do not sign: a KV update
//!    still arrives, without restarting Steeple.
//!
//! Canaries never reach Steeple's logs.

use crate::vault_envelopes::support;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use steeple_e2e::openbao::{OpenBao, ServerTls};
use steeple_e2e::sds_client::assert_not_in_logs;
use steeple_e2e::steeple::write_rows;
use steeple_e2e::suite::uid_selector;
use steeple_e2e::{Spire, SpireOptions, SteepleProcess};
use support::{ROLE, WORKLOAD, eventually, kv_row, seal_transit_in, served};

/// The namespace Steeple logs in to and reads from.
const NAMESPACE: &str = "payments";
const KV_PATH: &str = "payments/db-password";
const KV_SECRET: &str = "payments-api/db";
const BIG_PATH: &str = "payments/signing-keyring";
const CANARY_NS_1: &str = "canary-vault-tls-namespaced-0001";
const CANARY_NS_2: &str = "canary-vault-tls-namespaced-0002";
/// The root namespace's value at the same KV path: never served.
const CANARY_ROOT: &str = "canary-vault-tls-root-namespace-0001";
const CANARY_BIG: &str = "canary-vault-tls-big-0001";
/// Over `TRANSIT_DIRECT_MAX` (32 KiB): sealed and opened through a data key.
const BIG_LEN: usize = 40 * 1024;
const KV_REFRESH: Duration = Duration::from_secs(2);
/// Bounds each phase: the token keeper's backoff (≤ 30 s) after a refused handshake, or
/// SPIRE's bundle propagation to its agent.
const PHASE: Duration = Duration::from_secs(60);
/// The SPIFFE ID of OpenBao's certificate.
const VAULT_ID: &str = "spiffe://example.org/vault";
/// Another workload of the trust domain, holding an SVID with Vault's DNS name.
const IMPOSTOR_ID: &str = "spiffe://example.org/impostor";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_is_trusted_by_the_live_spiffe_bundle() -> anyhow::Result<()> {
    let spire = Spire::start(SpireOptions::default())?;
    spire.create_entry(WORKLOAD, &uid_selector(), None)?;
    let dir = tempfile::Builder::new()
        .prefix("steeple-vault-tls-")
        .tempdir_in("/tmp")?;

    let mut bao = OpenBao::start_tls(&self_signed()?)?;
    configure(&bao, &spire)?;
    let big = big_plaintext();
    let envelopes = dir.path().join("envelopes");
    std::fs::create_dir_all(&envelopes)?;
    write_rows(
        &envelopes.join("rows.json"),
        &[
            kv_row(KV_PATH, &format!("secret/{KV_SECRET}"), Some("password")),
            seal_transit_in(&bao, Some(NAMESPACE), support::TRANSIT_KEY, BIG_PATH, &big)?,
        ],
    )?;
    let config = format!(
        "[envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
         refresh_interval = \"{refresh}s\"\n\
         [vault]\nenabled = true\naddr = \"{}\"\nnamespace = \"{NAMESPACE}\"\n\
         role = \"{ROLE}\"\naudience = \"vault\"\nca_spiffe_bundle = \"example.org\"\n\
         spiffe_id = \"{VAULT_ID}\"\nkv_refresh_interval = \"{refresh}s\"\n\
         [[vault.allow]]\nmount = \"secret\"\npaths = [\"payments-api\"]\n\
         [[vault.allow]]\nmount = \"transit\"\npaths = [\"{}\"]\n",
        envelopes.display(),
        bao.addr(),
        support::TRANSIT_KEY,
        refresh = KV_REFRESH.as_secs(),
    );
    let steeple = SteepleProcess::run(&dir.path().join("steeple"), spire.agent_socket(), &config)?;

    // 1. A certificate outside the bundle: refused, named, nothing served.
    eventually("the refused handshake in Steeple's log", PHASE, || async {
        Ok(steeple.logs().contains("UnknownIssuer"))
    })
    .await?;
    assert_eq!(served(&steeple, KV_PATH).await, None);
    assert!(
        steeple
            .logs()
            .contains("Vault TLS trusts the current SPIFFE bundle"),
        "the bundle never reached the Vault client:\n{}",
        steeple.logs()
    );

    // 2. Another workload's SVID with Vault's DNS name: chains to the bundle, refused by
    //    the pinned SPIFFE ID.
    bao.set_tls(&mint(&spire, dir.path(), "impostor", IMPOSTOR_ID)?)?;
    bao.start_again()?;
    eventually("the impostor refused by its SPIFFE ID", PHASE, || async {
        Ok(steeple
            .logs()
            .contains(&format!("not the pinned {VAULT_ID}")))
    })
    .await?;
    assert_eq!(served(&steeple, KV_PATH).await, None);

    // 3. Vault's own SVID: trusted through the bundle; the namespace's values.
    bao.set_tls(&mint(&spire, dir.path(), "svid-1", VAULT_ID)?)?;
    bao.start_again()?;
    eventually("the namespaced KV value served", PHASE, || async {
        Ok(served(&steeple, KV_PATH).await.as_deref() == Some(CANARY_NS_1.as_bytes()))
    })
    .await?;
    eventually("the data-key transit envelope served", PHASE, || async {
        Ok(served(&steeple, BIG_PATH).await.as_deref() == Some(big.as_bytes()))
    })
    .await?;

    // 4. A CA rotation: the new authority's certificate is trusted without a restart.
    let roots_before = bundle_roots(&steeple.logs());
    let authority = rotate_x509_authority(&spire, &steeple, roots_before).await?;
    let svid = mint(&spire, dir.path(), "svid-2", VAULT_ID)?;
    anyhow::ensure!(
        svid.ca.matches("BEGIN CERTIFICATE").count() >= 2,
        "after activating {authority}, the bundle should hold the old and new roots"
    );
    bao.admin_in(NAMESPACE)
        .kv_put("secret", KV_SECRET, &[("password", CANARY_NS_2)])?;
    bao.set_tls(&svid)?;
    bao.start_again()?;
    eventually("the KV update after the CA rotation", PHASE, || async {
        Ok(served(&steeple, KV_PATH).await.as_deref() == Some(CANARY_NS_2.as_bytes()))
    })
    .await?;

    let secrets: Vec<Vec<u8>> = [CANARY_NS_1, CANARY_NS_2, CANARY_ROOT, CANARY_BIG]
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_not_in_logs(&secrets, &steeple.logs())?;
    drop(steeple);
    drop(bao);
    drop(spire);
    Ok(())
}

/// The namespace, configured as `deploy/vault/` says, with KV v2 at `secret/`; the root
/// namespace gets a decoy value at the same path.
fn configure(bao: &OpenBao, spire: &Spire) -> anyhow::Result<()> {
    bao.admin().create_namespace(NAMESPACE)?;
    let admin = bao.admin_in(NAMESPACE);
    support::configure(&admin, support::spire_jwt_keys(spire)?, "1h")?;
    admin.enable_kv("secret", 2)?;
    admin.kv_put("secret", KV_SECRET, &[("password", CANARY_NS_1)])?;
    bao.admin()
        .kv_put("secret", KV_SECRET, &[("password", CANARY_ROOT)])
}

/// A self-signed `localhost` certificate: valid, but outside every SPIFFE bundle.
fn self_signed() -> anyhow::Result<ServerTls> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let chain = certified.cert.pem();
    Ok(ServerTls {
        ca: chain.clone(),
        chain,
        key: certified.signing_key.serialize_pem(),
    })
}

/// An X.509-SVID for OpenBao from SPIRE's current authority, valid for `localhost`.
fn mint(spire: &Spire, dir: &Path, name: &str, spiffe_id: &str) -> anyhow::Result<ServerTls> {
    let out = dir.join(name);
    std::fs::create_dir_all(&out)?;
    spire.server_cli(&[
        "x509",
        "mint",
        "-spiffeID",
        spiffe_id,
        "-dns",
        "localhost",
        "-ttl",
        "1h",
        "-write",
        &out.display().to_string(),
    ])?;
    let read = |file: &str| {
        std::fs::read_to_string(out.join(file))
            .with_context(|| format!("x509 mint wrote no {file}"))
    };
    Ok(ServerTls {
        chain: read("svid.pem")?,
        key: read("key.pem")?,
        ca: read("bundle.pem")?,
    })
}

/// `localauthority x509 prepare`, then — once Steeple's Vault client trusts more roots
/// than `roots_before` — `activate`. Returns the new authority's ID.
async fn rotate_x509_authority(
    spire: &Spire,
    steeple: &SteepleProcess,
    roots_before: usize,
) -> anyhow::Result<String> {
    let prepared: serde_json::Value = serde_json::from_str(&spire.server_cli(&[
        "localauthority",
        "x509",
        "prepare",
        "-output",
        "json",
    ])?)
    .context("parsing localauthority x509 prepare")?;
    let authority = prepared
        .pointer("/prepared_authority/authority_id")
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("no authority_id in {prepared}"))?
        .to_owned();
    eventually("the prepared root in Vault's trust", PHASE, || async {
        Ok(bundle_roots(&steeple.logs()) > roots_before)
    })
    .await?;
    spire.server_cli(&[
        "localauthority",
        "x509",
        "activate",
        "-authorityID",
        &authority,
    ])?;
    Ok(authority)
}

/// The root count of the last "Vault TLS trusts the current SPIFFE bundle" event.
fn bundle_roots(logs: &str) -> usize {
    logs.lines()
        .rev()
        .find(|l| l.contains("Vault TLS trusts the current SPIFFE bundle"))
        .and_then(|l| l.split("roots=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// [`BIG_LEN`] bytes of text with the canary at both ends.
fn big_plaintext() -> String {
    let filler = "x".repeat(BIG_LEN - 2 * CANARY_BIG.len());
    format!("{CANARY_BIG}{filler}{CANARY_BIG}")
}
