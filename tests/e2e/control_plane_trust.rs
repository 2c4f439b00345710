//! The control plane as the adversarial review used it (issue 12.2, 12.3): an HTTPS
//! server (Python's `http.server` behind `ssl`, with a test CA Steeple trusts through
//! `control_plane.ca_file`) serves envelope rows to `steeple dev`, which also reads the
//! operator's rows from a file. Proven:
//! - the control plane's row for the operator's `app/db` (another value: a rollback) is
//!   ignored — the file row is served, and an ERROR names both sources;
//! - its row named like an alias target does not take that name over;
//! - its row outside `control_plane.logical_path_prefixes` is refused; one inside is served;
//! - the user info and query of `control_plane.url` never reach the log;
//! - under the production profile a plain-HTTP control plane is refused by `check-config`,
//!   naming `control_plane.url`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use steeple_e2e::sds_client;
use steeple_e2e::steeple::{seal_local, steeple_bin, write_rows};
use steeple_e2e::{ChildProcess, SteepleProcess, free_port, wait_for};

const FILE_VALUE: &str = "canary-cp-operator-file-0001";
const ROLLED_BACK: &str = "canary-cp-rolled-back-0001";
const ALIASED_VALUE: &str = "canary-cp-aliased-0001";
const TAKEOVER: &str = "canary-cp-takeover-0001";
const OUTSIDE: &str = "canary-cp-outside-0001";
const INSIDE: &str = "canary-cp-inside-0001";
const URL_PASSWORD: &str = "cp-url-password-canary";
const URL_QUERY: &str = "cp-url-query-canary";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_rows_cannot_override_relabel_or_leave_their_prefixes() -> anyhow::Result<()>
{
    let dir = tempfile::Builder::new()
        .prefix("steeple-cp-")
        .tempdir_in("/tmp")?;
    let master = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let seal = |path: &str, value: &str| seal_local(&master, path, "", value);

    let envelopes = dir.path().join("envelopes");
    std::fs::create_dir_all(&envelopes)?;
    write_rows(
        &envelopes.join("rows.json"),
        &[
            seal("app/db", FILE_VALUE)?,
            seal("aliased/path", ALIASED_VALUE)?,
        ],
    )?;
    let served_rows = dir.path().join("control-plane.json");
    write_rows(
        &served_rows,
        &[
            seal("app/db", ROLLED_BACK)?,
            seal("short", TAKEOVER)?,
            seal("team-b/db", OUTSIDE)?,
            seal("team-a/db", INSIDE)?,
        ],
    )?;
    let port = free_port()?;
    let (_control_plane, ca) = start_https(dir.path(), port, &served_rows)?;
    let token = dir.path().join("cp-token");
    std::fs::write(&token, "cp-bearer-token")?;

    let config = format!(
        "[envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
         local_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n\
         [envelope_aliases]\n\"aliased/path\" = \"short\"\n\
         [control_plane]\n\
         url = \"https://operator:{URL_PASSWORD}@localhost:{port}/base?sig={URL_QUERY}\"\n\
         token_file = \"{}\"\npoll_interval = \"1s\"\nca_file = \"{}\"\n\
         logical_path_prefixes = [\"app/\", \"short\", \"team-a/\"]\n",
        envelopes.display(),
        token.display(),
        ca.display(),
    );
    let steeple = SteepleProcess::dev_with(
        &dir.path().join("steeple"),
        &config,
        &[("STEEPLE_LOCAL_MASTER_KEY", master.as_str())],
    )?;
    let served = sds_client::wait_for(
        steeple.sds_socket(),
        &["app/db", "short", "team-a/db"],
        Duration::from_secs(30),
    )
    .await?;
    let value = |name: &str| {
        served
            .iter()
            .find(|s| s.name == name)
            .and_then(sds_client::secret_bytes)
    };
    assert_eq!(value("app/db").as_deref(), Some(FILE_VALUE.as_bytes()));
    assert_eq!(value("short").as_deref(), Some(ALIASED_VALUE.as_bytes()));
    assert_eq!(value("team-a/db").as_deref(), Some(INSIDE.as_bytes()));

    wait_for("the refusals logged", Duration::from_secs(20), || async {
        let logs = steeple.logs();
        for expected in [
            "duplicate logical_path",
            "its logical_path is the SDS name [envelope_aliases] gives another path",
            "outside control_plane.logical_path_prefixes",
        ] {
            anyhow::ensure!(logs.contains(expected), "no {expected:?} yet");
        }
        Ok(())
    })
    .await?;
    let logs = steeple.logs();
    let duplicate = logs
        .lines()
        .find(|l| l.contains("duplicate logical_path"))
        .unwrap_or_default();
    assert!(
        duplicate.contains("used=\"files\"") && duplicate.contains("ignored=\"control-plane\""),
        "{duplicate}"
    );
    let mut fetcher = sds_client::connect(steeple.sds_socket());
    assert!(
        sds_client::fetch(&mut fetcher, &["team-b/db"])
            .await
            .is_err(),
        "a row outside the prefixes was served"
    );
    for leaked in [
        URL_PASSWORD,
        URL_QUERY,
        ROLLED_BACK,
        TAKEOVER,
        OUTSIDE,
        INSIDE,
    ] {
        assert!(!logs.contains(leaked), "{leaked} in Steeple's log");
    }
    assert!(logs.contains(&format!(
        "https://localhost:{port}/base/v1/crypto/envelope-secrets"
    )));

    // Production refuses the same control plane over plain HTTP, naming the key.
    let production = dir.path().join("production.toml");
    std::fs::write(
        &production,
        format!(
            "[agent]\nprofile = \"production\"\n[control_plane]\n\
             url = \"http://localhost:{port}\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    )?;
    let check = Command::new(steeple_bin()?)
        .args(["check-config", "--config"])
        .arg(&production)
        .output()?;
    let report = String::from_utf8_lossy(&check.stderr).to_string()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{report}");
    assert!(report.contains("control_plane.url"), "{report}");
    assert!(report.contains("allow_insecure"), "{report}");
    Ok(())
}

/// Starts an HTTPS server on 127.0.0.1:`port` answering every GET with `rows`, its
/// certificate for `localhost` signed by a fresh test CA; returns the server (stopped
/// when dropped) and the CA's PEM file.
fn start_https(
    dir: &Path,
    port: u16,
    rows: &Path,
) -> anyhow::Result<(ChildProcess, std::path::PathBuf)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &issuer)?;
    let (ca_file, cert_file, key_file) = (
        dir.join("cp-ca.pem"),
        dir.join("cp-cert.pem"),
        dir.join("cp-key.pem"),
    );
    std::fs::write(&ca_file, ca_cert.pem())?;
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    let mut server = Command::new("python3");
    server
        .arg("-c")
        .arg(HTTPS_SERVER)
        .arg(port.to_string())
        .args([&cert_file, &key_file, &rows.to_owned()]);
    let process = ChildProcess::spawn("control-plane", server, &dir.join("cp-logs"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the HTTPS control plane did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((process, ca_file))
}

const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
port, cert, key, rows = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Rows(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open(rows, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Rows)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;
