//! A bare HTTP/1.1 client over one TCP connection: the anchor the resolvers are compared
//! with (the same Vault call, no client library), and the admin calls of part 2's
//! OpenBao. Only what OpenBao's answers need: `Content-Length` or chunked bodies.

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// One keep-alive connection to `127.0.0.1:<port>`.
#[derive(Debug)]
pub struct RawHttp {
    port: u16,
    stream: BufReader<TcpStream>,
}

/// A Vault answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, failing (with the status) unless the status is 2xx.
    pub fn json(&self, what: &str) -> anyhow::Result<serde_json::Value> {
        anyhow::ensure!(
            (200..300).contains(&self.status),
            "{what}: HTTP {} {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        if self.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body).with_context(|| format!("{what}: not JSON"))
    }
}

impl RawHttp {
    /// Connects to the loopback `port`.
    pub async fn connect(port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            port,
            stream: BufReader::new(stream),
        })
    }

    /// `method /v1/<path>` with `X-Vault-Token: token` and an optional JSON body.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let head = format!(
            "{method} /v1/{path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Vault-Token: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        );
        let stream = self.stream.get_mut();
        stream.write_all(&[head.as_bytes(), &body].concat()).await?;
        self.read_answer()
            .await
            .with_context(|| format!("{method} /v1/{path}"))
    }

    async fn read_answer(&mut self) -> anyhow::Result<Answer> {
        let status_line = self.line().await?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = Some(value.trim().parse::<usize>()?),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        let body = match (chunked, length) {
            (true, _) => self.chunked_body().await?,
            (false, Some(n)) => self.exactly(n).await?,
            (false, None) => Vec::new(),
        };
        Ok(Answer { status, body })
    }

    async fn chunked_body(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size = self.line().await?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exactly(size).await?);
            self.line().await?;
        }
    }

    async fn exactly(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        let read = self.stream.read_line(&mut line).await?;
        anyhow::ensure!(read > 0, "connection closed");
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}
