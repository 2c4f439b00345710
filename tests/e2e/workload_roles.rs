//! Roles per workload on a node agent (`[[workloads]]`), end to end with real SPIRE in
//! delegated mode, moto's STS and OpenBao. Three workloads run as three users: A
//! (payments) and B (web) map to their own AWS role and Vault role, C maps to none.
//! Proven:
//! - an unmodified aws-sdk-go-v2, run as A and as B, gets *its own* role's credentials
//!   through `credential_process` (`steeple aws credential-process`, i.e. SDS), the
//!   container-credentials endpoint and the IMDSv2 emulation: moto's GetCallerIdentity
//!   answers with each one's role and its SPIFFE ID as the session name;
//! - each logs in to OpenBao as its own JWT role and reads its own KV path, not the
//!   other's;
//! - C is refused on every path (audited), never handed another workload's credentials;
//! - however many consumers a workload has, its role is exchanged once;
//! - no credential or token shows up in Steeple's logs or audit trail;
//! - envelopes are decrypted with the *requesting* workload's own roles (the agent has
//!   none): A gets its `kms_envelope`, its `vault_delegate` envelope and its
//!   `vault_transit` envelope, each resolved once however often it asks; a KV envelope
//!   A is granted but its Vault role cannot read, and a transit envelope sealed with a
//!   key its Vault role cannot decrypt with, are not served (an ERROR names each path
//!   and A); B is refused A's envelope.

use std::time::Duration;

use anyhow::Context as _;
use steeple_e2e::moto::Moto;
use steeple_e2e::openbao::{JwtKeys, JwtRole, OpenBao};
use steeple_e2e::sds_client::assert_not_in_logs;
use steeple_e2e::{Spire, SpireOptions, free_port};

use super::aws_envelopes::support::request_from_child;
use super::node_agent::NodeAgent;
use super::vault_envelopes::support::spire_jwt_keys;

mod envelopes;

const STEEPLE: &str = "spiffe://example.org/steeple";

/// One local workload: its SPIFFE ID and uid, its roles, its KV path.
struct Workload {
    id: &'static str,
    uid: u32,
    role: &'static str,
    session: &'static str,
}

const A: Workload = Workload {
    id: "spiffe://example.org/payments/api",
    uid: 1201,
    role: "payments",
    session: "example.org-payments-api",
};
const B: Workload = Workload {
    id: "spiffe://example.org/web/frontend",
    uid: 1202,
    role: "web",
    session: "example.org-web-frontend",
};
/// Has an entry, but no `[[workloads]]` entry maps it.
const C: (&str, u32) = ("spiffe://example.org/batch/report", 1203);
const CONTAINER_TOKEN: &str = "container-token-roles-7c1e";
const VAULT_TOKEN_NAME: &str = "vault-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workload_gets_its_own_roles_on_every_path_and_nothing_of_anothers()
-> anyhow::Result<()> {
    let spire = spire_with(&[(A.id, A.uid), (B.id, B.uid), C])?;
    let sts = Moto::start().await?;
    let bao = OpenBao::start()?;
    configure_vault(&bao, &spire)?;
    let ports = Ports {
        container: free_port()?,
        imds: free_port()?,
    };
    let work = Work::new()?;
    let config = roles_config(&sts, &bao, &ports, &work, ("", ""));
    let node = NodeAgent::start_with(&spire, &config)?;
    let container_port = ports.container;

    for workload in [&A, &B] {
        for path in SdkPath::ALL {
            let arn = go_sdk_as(&node, &work, workload.uid, path, &sts, &ports)?;
            let expected = format!("assumed-role/{}/{}", workload.role, workload.session);
            anyhow::ensure!(
                arn.ends_with(&expected),
                "{} through {path:?} got {arn}, expected …{expected}\n{}",
                workload.id,
                node.steeple.logs()
            );
        }
        let vault = vault_reads_as(&node, workload.uid, &bao)?;
        anyhow::ensure!(vault["role"] == workload.role, "{}: {vault}", workload.id);
        let own = format!("secret/data/{}/config", workload.role);
        anyhow::ensure!(vault["reads"][&own] == 200, "{}: {vault}", workload.id);
        for other in [&A, &B].iter().filter(|o| o.role != workload.role) {
            let theirs = format!("secret/data/{}/config", other.role);
            anyhow::ensure!(vault["reads"][&theirs] == 403, "{}: {vault}", workload.id);
        }
    }

    unmapped_workload_is_refused(&node, container_port).await?;
    for workload in [&A, &B] {
        // Four consumers of A's and B's AWS role each (the SDK on three paths, plus
        // three more SDS fetches now): one exchange per (identity, role).
        for _ in 0..3 {
            let (served, out) = node.fetch_as(workload.uid, "aws-credentials", 15)?;
            anyhow::ensure!(served, "{}: {out}", workload.id);
        }
        let exchanges = audited_exchanges(&node, workload.id, "aws-sts");
        anyhow::ensure!(exchanges == 1, "{}: {exchanges} STS exchanges", workload.id);
        let logins = audited_exchanges(&node, workload.id, "vault");
        anyhow::ensure!(logins == 1, "{}: {logins} Vault logins", workload.id);
    }
    let secrets = [CONTAINER_TOKEN, bao.root_token()].map(|s| s.as_bytes().to_vec());
    assert_not_in_logs(&secrets, &node.steeple.logs())?;
    assert_not_in_logs(&secrets, &std::fs::read_to_string(&node.audit)?)?;
    Ok(())
}

/// SPIRE with Steeple (root) an authorized delegate and an entry for each workload
/// (SPIFFE ID, uid); workloads run as other users, so the suite needs root.
fn spire_with(workloads: &[(&str, u32)]) -> anyhow::Result<Spire> {
    anyhow::ensure!(
        rustix::process::geteuid().is_root(),
        "this suite runs workloads as other users and needs root"
    );
    let spire = Spire::start(SpireOptions {
        authorized_delegates: vec![STEEPLE.to_owned()],
        ..SpireOptions::default()
    })?;
    spire.create_entry(STEEPLE, "unix:uid:0", None)?;
    for (id, uid) in workloads {
        spire.create_entry(id, &format!("unix:uid:{uid}"), None)?;
    }
    Ok(spire)
}

/// The `[aws]`, `[vault]` and `[[workloads]]` sections: no role of the agent's own, A
/// and B each their own, C none; no `[[callers]]` rule, so each caller may have its own
/// identity's names and its own roles' credentials.
/// `extra_aws` goes into `[aws]`, `vault_tables` (`[[vault.allow]]`) after `[vault]`.
fn roles_config(
    sts: &Moto,
    bao: &OpenBao,
    ports: &Ports,
    work: &Work,
    (extra_aws, vault_tables): (&str, &str),
) -> String {
    format!(
        "[aws]\nenabled = true\nsts_endpoint = \"{sts}\"\n{extra_aws}\
         container_credentials_listen = \"127.0.0.1:{container}\"\n\
         container_credentials_token_file = \"{token}\"\n\
         imds_listen = \"127.0.0.1:{imds}\"\n\
         [vault]\nenabled = true\naddr = \"{vault}\"\naudience = \"vault\"\n\
         token_resource_name = \"{VAULT_TOKEN_NAME}\"\n{vault_tables}\
         [[workloads]]\nspiffe_id = \"spiffe://example.org/payments/*\"\n\
         aws_role_arn = \"arn:aws:iam::123456789012:role/{a}\"\nvault_role = \"{a}\"\n\
         [[workloads]]\nspiffe_id = \"spiffe://example.org/web/*\"\n\
         aws_role_arn = \"arn:aws:iam::123456789012:role/{b}\"\nvault_role = \"{b}\"\n",
        sts = sts.endpoint(),
        container = ports.container,
        token = work.token_file().display(),
        imds = ports.imds,
        vault = bao.addr(),
        a = A.role,
        b = B.role,
    )
}

/// Where the agent's HTTP deliveries listen.
struct Ports {
    container: u16,
    imds: u16,
}

/// Files every workload user reads: the container endpoint's token, and an AWS config
/// naming `steeple aws credential-process`.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new()
            .prefix("steeple-roles-")
            .tempdir_in("/tmp")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let work = Self { dir };
        std::fs::write(work.token_file(), CONTAINER_TOKEN)?;
        std::fs::set_permissions(work.token_file(), std::fs::Permissions::from_mode(0o644))?;
        Ok(work)
    }

    fn token_file(&self) -> std::path::PathBuf {
        self.dir.path().join("container-token")
    }

    /// An AWS config whose default profile runs `steeple` (a copy the users may run)
    /// against the node agent's socket.
    fn credential_process_config(&self, node: &NodeAgent) -> anyhow::Result<std::path::PathBuf> {
        let steeple = node.runnable_copy("steeple")?;
        let file = self.dir.path().join("aws-config");
        std::fs::write(
            &file,
            format!(
                "[default]\ncredential_process = {} aws credential-process --socket {}\n",
                steeple.display(),
                node.sds().display()
            ),
        )?;
        Ok(file)
    }
}

/// The ways an unmodified SDK finds credentials that Steeple serves.
#[derive(Debug, Clone, Copy)]
enum SdkPath {
    /// `credential_process = steeple aws credential-process` (SDS underneath).
    CredentialProcess,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` with its token file.
    Container,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` (IMDSv2).
    Imds,
}

impl SdkPath {
    const ALL: [Self; 3] = [Self::CredentialProcess, Self::Container, Self::Imds];
}

/// aws-sdk-go-v2 (tests/e2e/sdk/go_imds_probe) run as `uid`, finding credentials only
/// through `path`: the caller ARN moto's GetCallerIdentity answered.
fn go_sdk_as(
    node: &NodeAgent,
    work: &Work,
    uid: u32,
    path: SdkPath,
    sts: &Moto,
    ports: &Ports,
) -> anyhow::Result<String> {
    let endpoint = sts.endpoint();
    let mut command = node.command_as(uid, "go-sdk-probe", &[endpoint.as_ref()])?;
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_CONFIG_FILE", "/dev/null");
    match path {
        SdkPath::CredentialProcess => {
            command
                .env("AWS_CONFIG_FILE", work.credential_process_config(node)?)
                .env("AWS_EC2_METADATA_DISABLED", "true");
        }
        SdkPath::Container => {
            command
                .env(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    format!("http://127.0.0.1:{}/", ports.container),
                )
                .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", work.token_file())
                .env("AWS_EC2_METADATA_DISABLED", "true");
        }
        SdkPath::Imds => {
            command.env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://127.0.0.1:{}", ports.imds),
            );
        }
    }
    let output = command.output().context("running the Go SDK probe")?;
    anyhow::ensure!(
        output.status.success(),
        "the Go SDK as uid {uid} through {path:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    stdout
        .lines()
        .last()
        .map(str::to_owned)
        .with_context(|| format!("the probe printed nothing: {stdout:?}"))
}

/// `sds-vault-read` run as `uid`: its Vault token from the node agent, whose role it is,
/// and its reads of both workloads' KV paths.
fn vault_reads_as(node: &NodeAgent, uid: u32, bao: &OpenBao) -> anyhow::Result<serde_json::Value> {
    let port = bao.port().to_string();
    let paths: Vec<String> = [&A, &B]
        .iter()
        .map(|w| format!("secret/data/{}/config", w.role))
        .collect();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        node.sds().as_os_str(),
        VAULT_TOKEN_NAME.as_ref(),
        port.as_ref(),
    ];
    args.extend(paths.iter().map(std::ffi::OsStr::new));
    let output = node.command_as(uid, "sds-vault-read", &args)?.output()?;
    anyhow::ensure!(
        output.status.success(),
        "sds-vault-read as uid {uid}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// OpenBao as an operator sets it up for per-workload roles: JWT auth trusting SPIRE's
/// keys, and per workload a KV path, a transit key (named after its role), a policy
/// reading only that path and decrypting only with that key, and a JWT role bound to the
/// workload's SPIFFE ID (`bound_subject`).
fn configure_vault(bao: &OpenBao, spire: &Spire) -> anyhow::Result<()> {
    let admin = bao.admin();
    admin.enable_jwt_auth("jwt", &JwtKeys::Pubkeys(spire_jwt_keys(spire)?), None)?;
    admin.enable_transit("transit")?;
    for workload in [&A, &B] {
        let path = format!("{}/config", workload.role);
        admin.kv_put("secret", &path, &[("owner", workload.role)])?;
        admin.create_transit_key("transit", workload.role, false)?;
        let policy = format!(
            "path \"secret/data/{role}/*\" {{ capabilities = [\"read\"] }}\n\
             path \"transit/decrypt/{role}\" {{ capabilities = [\"update\"] }}\n",
            role = workload.role
        );
        admin.write_policy(workload.role, &policy)?;
        admin.write_jwt_role(
            "jwt",
            &JwtRole {
                name: workload.role.to_owned(),
                bound_audiences: vec!["vault".to_owned()],
                bound_subject: workload.id.to_owned(),
                token_ttl: "1h".to_owned(),
                token_max_ttl: "2h".to_owned(),
                policies: vec![workload.role.to_owned()],
            },
        )?;
    }
    Ok(())
}

/// C has an SVID but no role: refused its AWS credentials over SDS and the container
/// endpoint, and a Vault token — each refusal audited with its SPIFFE ID.
async fn unmapped_workload_is_refused(node: &NodeAgent, container_port: u16) -> anyhow::Result<()> {
    for name in ["aws-credentials", VAULT_TOKEN_NAME] {
        let (served, out) = node.fetch_as(C.1, name, 3)?;
        anyhow::ensure!(
            !served && out.contains("no [[workloads]] entry"),
            "C fetching {name}: {out}"
        );
    }
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {CONTAINER_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let answer = request_from_child(Some(C.1), container_port, &request)?;
    anyhow::ensure!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("no [[workloads]] entry"),
        "C on the container endpoint: {answer}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let denials = audit_events(node)
            .filter(|e| e["decision"] == "deny" && e["spiffe_id"] == C.0)
            .count();
        if denials >= 2 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no audited refusal of C's roles"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Successful exchanges audited for `spiffe_id` on `side` (`aws-sts`, `vault`).
fn audited_exchanges(node: &NodeAgent, spiffe_id: &str, side: &str) -> usize {
    audit_events(node)
        .filter(|e| {
            e["spiffe_id"] == spiffe_id
                && e["outcome"] == "ok"
                && e["exchange"]
                    .as_str()
                    .is_some_and(|x| x.starts_with(&format!("{side} ")))
        })
        .count()
}

/// Every event of the agent's audit trail so far.
fn audit_events(node: &NodeAgent) -> impl Iterator<Item = serde_json::Value> {
    std::fs::read_to_string(&node.audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect::<Vec<_>>()
        .into_iter()
}
