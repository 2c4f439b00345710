//! Just enough HTTP/1.1 for the suites: a GET client against 127.0.0.1 (Envoy's admin API
//! and listeners) and an upstream server that answers 200 and records request headers.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long one client request may take, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response read by [`request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked), lossily decoded as UTF-8.
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// `GET path` on 127.0.0.1:`port`: status and body.
pub async fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let response = request(port, "GET", path, &[]).await?;
    Ok((response.status, response.body))
}

/// The sum of every sample of the metrics starting with `prefix` on the `/metrics` of the
/// admin listener at `port` (e.g. `steeple_sds_streams{` for every protocol).
pub async fn metric_sum(port: u16, prefix: &str) -> anyhow::Result<u64> {
    let (status, metrics) = get(port, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics: {status}");
    let mut total = 0.0;
    for line in metrics.lines().filter(|l| l.starts_with(prefix)) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        total += value
            .parse::<f64>()
            .map_err(|e| anyhow::anyhow!("{line}: {e}"))?;
    }
    Ok(total as u64)
}

/// Sends `method path` with `headers` (and no body) to 127.0.0.1:`port` over a fresh
/// connection (`Connection: close`) and reads the whole response, within
/// [`REQUEST_TIMEOUT`].
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} 127.0.0.1:{port}{path} timed out"))?
        .with_context(|| format!("{method} 127.0.0.1:{port}{path}"))?;
    parse_response(&raw).with_context(|| format!("response to {method} 127.0.0.1:{port}{path}"))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of header section")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines.filter_map(parse_header).collect();
    let mut body = raw[split + 4..].to_vec();
    if find_header(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        anyhow::ensure!(raw.len() >= size + 2, "truncated chunk");
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn parse_header(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(':')?;
    Some((name.trim().to_owned(), value.trim().to_owned()))
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A request the [`RecordingUpstream`] received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// e.g. `GET`.
    pub method: String,
    /// Request target, e.g. `/hello`.
    pub path: String,
    /// Header fields in order, names as received.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A plaintext HTTP/1.1 server on 127.0.0.1 that answers every request with 200 and a
/// fixed body, keeps connections alive, and records each request. Stops when dropped.
#[derive(Debug)]
pub struct RecordingUpstream {
    port: u16,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    task: JoinHandle<()>,
}

impl RecordingUpstream {
    /// The body [`RecordingUpstream::start`] answers with.
    pub const DEFAULT_BODY: &'static str = "upstream ok";

    /// Binds a free port and starts answering [`RecordingUpstream::DEFAULT_BODY`]. Must be
    /// called inside a tokio runtime.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_body(Self::DEFAULT_BODY).await
    }

    /// Binds a free port and starts answering `body`. Must be called inside a tokio
    /// runtime.
    pub async fn start_with_body(body: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding upstream listener")?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(listener, body.to_owned(), Arc::clone(&requests)));
        Ok(Self {
            port,
            requests,
            task,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Header `name` (case-insensitive) of the most recent request, if any request came.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let requests = self.requests();
        requests.last()?.header(name).map(str::to_owned)
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, body: String, requests: Arc<Mutex<Vec<RecordedRequest>>>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // e.g. out of file descriptors: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let body = body.clone();
        let requests = Arc::clone(&requests);
        connections.spawn(async move {
            // A connection error just ends that connection; the test sees it as a failure.
            let _ = serve_connection(stream, &body, &requests).await;
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_connection(
    stream: TcpStream,
    body: &str,
    requests: &Mutex<Vec<RecordedRequest>>,
) -> anyhow::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            anyhow::ensure!(stream.read_line(&mut line).await? > 0, "eof in headers");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            headers.extend(parse_header(line));
        }
        let length: usize = find_header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut discard = vec![0; length];
        stream.read_exact(&mut discard).await?;
        let close =
            find_header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if let Ok(mut recorded) = requests.lock() {
            recorded.push(RecordedRequest {
                method,
                path,
                headers,
            });
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.get_mut().write_all(response.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}
