//! Envelopes on a node agent are decrypted with the *requesting* workload's own roles
//! (the agent has none): A gets its `kms_envelope`, its `vault_delegate` envelope and its
//! `vault_transit` envelope, each resolved once however often it asks; a KV envelope A is
//! granted but its Vault role cannot read, and a transit envelope sealed with a key its
//! Vault role cannot decrypt with, are not served (an ERROR names each path and A); B is
//! refused A's envelope.

use steeple_e2e::free_port;
use steeple_e2e::moto::Moto;
use steeple_e2e::openbao::OpenBao;
use steeple_e2e::sds_client::assert_not_in_logs;

use super::super::aws_envelopes::support::seal;
use super::super::node_agent::NodeAgent;
use super::super::vault_envelopes::support::{kv_row, seal_transit_in};
use super::{A, B, Ports, Work, audit_events, configure_vault, roles_config, spire_with};

/// The envelope only A may fetch, read from A's KV path with A's Vault token.
const A_KV: &str = "payments/db";
/// Granted to A too, but on B's KV path: A's Vault role cannot read it.
const A_FORBIDDEN_KV: &str = "payments/web-config";
/// A's `kms_envelope`, decrypted with A's AWS role's credentials.
const A_KMS: &str = "payments/api-key";
const KMS_PLAINTEXT: &[u8] = b"canary-kms-per-workload-7d21";
/// A's `vault_transit` envelope, sealed with A's transit key: decrypted with A's token.
const A_TRANSIT: &str = "payments/signing-key";
const TRANSIT_PLAINTEXT: &str = "canary-transit-per-workload-4e58";
/// Granted to A too, but sealed with B's transit key: A's Vault role cannot decrypt it.
const A_FORBIDDEN_TRANSIT: &str = "payments/web-session-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_decrypted_with_the_requesting_workloads_own_roles() -> anyhow::Result<()> {
    let spire = spire_with(&[(A.id, A.uid), (B.id, B.uid)])?;
    let aws = Moto::start().await?;
    let key = aws.create_key("us-east-1").await?;
    let bao = OpenBao::start()?;
    configure_vault(&bao, &spire)?;
    let (ports, work) = (
        Ports {
            container: free_port()?,
            imds: free_port()?,
        },
        Work::new()?,
    );
    let kms = format!(
        "kms_endpoint = \"{}\"\nkey_arn_allowlist = [\"{}\"]\n",
        aws.endpoint(),
        key.split("key/").next().unwrap_or_default(),
    );
    let allow = "[[vault.allow]]\nmount = \"secret\"\npaths = [\"payments\", \"web\"]\n\
                 [[vault.allow]]\nmount = \"transit\"\npaths = [\"payments\", \"web\"]\n";
    let config = roles_config(&aws, &bao, &ports, &work, (&kms, allow)) + &envelope_rules();
    let node = NodeAgent::start_with(&spire, &config)?;
    let rows = vec![
        kv_row(A_KV, "secret/payments/config", Some("owner")),
        kv_row(A_FORBIDDEN_KV, "secret/web/config", Some("owner")),
        seal(&aws, &key, A_KMS, "app=payments", KMS_PLAINTEXT)?,
        seal_transit_in(&bao, None, A.role, A_TRANSIT, TRANSIT_PLAINTEXT)?,
        seal_transit_in(
            &bao,
            None,
            B.role,
            A_FORBIDDEN_TRANSIT,
            "sealed-with-web-key",
        )?,
    ];
    steeple_e2e::steeple::write_rows(&node.dir.path().join("envelopes/roles.json"), &rows)?;

    let served_to_a = [
        (A_KV, A.role.len()),
        (A_KMS, KMS_PLAINTEXT.len()),
        (A_TRANSIT, TRANSIT_PLAINTEXT.len()),
    ];
    for (name, len) in served_to_a {
        for _ in 0..3 {
            let (served, out) = node.fetch_as(A.uid, name, 20)?;
            anyhow::ensure!(served, "A fetching {name}: {out}\n{}", node.steeple.logs());
            anyhow::ensure!(out.contains(&format!("\"bytes\":{len}")), "{name}: {out}");
        }
        let resolved = audit_events(&node)
            .filter(|e| e["logical_path"] == name && e["spiffe_id"] == A.id && e["outcome"] == "ok")
            .count();
        anyhow::ensure!(resolved == 1, "{name} resolved {resolved} times for A");
    }
    for name in [A_FORBIDDEN_KV, A_FORBIDDEN_TRANSIT] {
        let (served, out) = node.fetch_as(A.uid, name, 6)?;
        anyhow::ensure!(
            !served,
            "A got {name}, which its Vault role may not open: {out}"
        );
        let logs = node.steeple.logs();
        anyhow::ensure!(
            logs.lines()
                .any(|l| l.contains("ERROR") && l.contains(name) && l.contains(A.id)),
            "no ERROR naming {name} and A:\n{logs}"
        );
    }
    let (served, out) = node.fetch_as(B.uid, A_KV, 3)?;
    anyhow::ensure!(
        !served && out.contains("not authorized"),
        "B fetching {A_KV}: {out}"
    );
    let secrets = [
        KMS_PLAINTEXT,
        TRANSIT_PLAINTEXT.as_bytes(),
        bao.root_token().as_bytes(),
    ]
    .map(<[u8]>::to_vec);
    assert_not_in_logs(&secrets, &node.steeple.logs())?;
    assert_not_in_logs(&secrets, &std::fs::read_to_string(&node.audit)?)?;
    Ok(())
}

/// Every workload its own identity and roles' credentials; A's identity also its
/// `payments/*` envelopes.
fn envelope_rules() -> String {
    let uids = [0, A.uid, B.uid].map(|u| u.to_string()).join(", ");
    let own = "\"default\", \"ROOTCA\", \"ALL\", \"spiffe://*\", \"jwt-svid:*\", \"aws-credentials\", \"vault-token\"";
    format!(
        "[[callers]]\nuids = [{uids}]\nspiffe_ids = [\"{}\"]\nresources = [{own}, \"payments/*\"]\n\
         [[callers]]\nuids = [{uids}]\nresources = [{own}]\n",
        A.id
    )
}
