//! Test support: a local endpoint that counts the connections it gets, and a shared config
//! file, to see where an SDK client built from the SDK's defaults sends its calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The profile [`shared_config_file`] writes.
pub(crate) const PROFILE: &str = "steeple-test";

/// A local HTTP endpoint that answers every request with HTTP 500 (one attempt: the
/// clients have no SDK retries) and counts connections.
pub(crate) struct CountingEndpoint {
    pub(crate) url: String,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl CountingEndpoint {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut request = [0; 8192];
                let _ = stream.read(&mut request).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\
                          connection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        Self {
            url,
            connections,
            task,
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for CountingEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A shared config file (and nothing else: not `~/.aws/config`) whose profile [`PROFILE`]
/// holds `settings` lines and uses a services section holding `services` lines. A
/// service's `endpoint_url` there is the file twin of `AWS_ENDPOINT_URL_<SERVICE>`, read
/// by the same SDK code.
pub(crate) fn shared_config_file(settings: &str, services: &str) -> EnvConfigFiles {
    let contents = format!(
        "[profile {PROFILE}]\nservices = {PROFILE}\n{settings}\n\n[services {PROFILE}]\n{services}\n"
    );
    EnvConfigFiles::builder()
        .with_contents(EnvConfigFileKind::Config, contents)
        .build()
}
