//! `sds-inherit SOCKET NAME`: an SDS connection used by a process that did not open it.
//! The process run connects to SOCKET, hands the connection to a child it starts (as the
//! child's stdin) and exits at once; the child waits until its parent is
//! gone, then asks FetchSecrets for NAME on the inherited connection and prints `served`
//! or the error. A connection whose connecting process exited must never be served — nor
//! may the connecting pid's identity, should that pid be reused, reach whoever holds it.

use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use steeple_e2e::sds_client;
use tonic::transport::Endpoint;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [socket, name] => hand_over(socket, name),
        [flag, parent, name] if flag == "--inherited" => {
            let connection = std::io::stdin().as_fd().try_clone_to_owned()?;
            use_inherited(connection, parent.parse()?, name)
        }
        _ => anyhow::bail!("usage: sds-inherit SOCKET NAME"),
    }
}

/// Connects, starts the child with the connection, and returns (so this process exits).
fn hand_over(socket: &str, name: &str) -> anyhow::Result<()> {
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    std::process::Command::new(std::env::current_exe()?)
        .arg("--inherited")
        .arg(std::process::id().to_string())
        .arg(name)
        .stdin(std::process::Stdio::from(OwnedFd::from(stream)))
        .spawn()?;
    Ok(())
}

/// Waits for the parent to exit, then fetches `name` on the inherited connection.
fn use_inherited(fd: OwnedFd, parent: u32, name: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Reparented once the parent has exited (even before it is reaped).
    while rustix::process::getppid()
        .is_some_and(|p| p.as_raw_nonzero().get().unsigned_abs() == parent)
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "parent {parent} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let std_stream = std::os::unix::net::UnixStream::from(fd);
        std_stream.set_nonblocking(true)?;
        let stream = Mutex::new(Some(tokio::net::UnixStream::from_std(std_stream)?));
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let taken = stream.lock().ok().and_then(|mut s| s.take());
                async move {
                    taken.map(TokioIo::new).ok_or_else(|| {
                        std::io::Error::new(std::io::ErrorKind::NotConnected, "used once")
                    })
                }
            }))
            .await?;
        let mut client = SecretDiscoveryServiceClient::new(channel);
        match client.fetch_secrets(sds_client::request(&[name])).await {
            Ok(_) => println!("served"),
            Err(status) => println!("refused: {:?}: {}", status.code(), status.message()),
        }
        anyhow::Ok(())
    })
}
