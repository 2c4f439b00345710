//! Audit events: one structured JSON line per decision — SDS grant or deny, credential
//! exchange, envelope resolve — with the caller or the identity involved, never a value,
//! token or ciphertext. Components emit them as `tracing` events with target
//! [`TARGET`]; this module routes that target (at every level) to its own sink
//! (`[audit] sink`), and keeps it out of the operational log.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` target of every audit event.
pub const TARGET: &str = "steeple::audit";

/// Where the local syslog daemon listens.
const SYSLOG_SOCKET: &str = "/dev/log";
/// `LOG_AUTHPRIV | LOG_INFO`: security decisions, readable only by root on most systems.
const SYSLOG_PRIORITY: u8 = 10 * 8 + 6;

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuditSink {
    /// Not recorded.
    Off,
    /// JSON lines on stdout.
    Stdout,
    /// JSON lines on stderr, beside (not inside) the operational log. The default.
    #[default]
    Stderr,
    /// JSON lines appended to this file (created 0600).
    File(PathBuf),
    /// One syslog message (`authpriv.info`, tag `steeple`) per event, to `/dev/log`.
    Syslog,
}

impl AuditSink {
    /// Parses `off`, `stdout`, `stderr`, `syslog` or `file:<absolute path>`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "off" => Some(Self::Off),
            "stdout" => Some(Self::Stdout),
            "stderr" => Some(Self::Stderr),
            "syslog" => Some(Self::Syslog),
            _ => {
                let path = Path::new(text.strip_prefix("file:")?);
                path.is_absolute().then(|| Self::File(path.to_owned()))
            }
        }
    }
}

/// Whether a `tracing` event or span belongs to the audit trail.
pub fn is_audit(target: &str) -> bool {
    target == TARGET
}

/// The layer writing audit events to `sink` as flattened JSON lines; `None` for
/// [`AuditSink::Off`]. Fails when the file or syslog socket cannot be opened.
pub fn layer<S>(sink: &AuditSink) -> io::Result<Option<Box<dyn Layer<S> + Send + Sync>>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    layer_with_syslog_at(sink, Path::new(SYSLOG_SOCKET))
}

/// [`layer`], with the syslog daemon's socket at `syslog_socket`.
fn layer_with_syslog_at<S>(
    sink: &AuditSink,
    syslog_socket: &Path,
) -> io::Result<Option<Box<dyn Layer<S> + Send + Sync>>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let writer = match sink {
        AuditSink::Off => return Ok(None),
        AuditSink::Stdout => Sink::Stdout,
        AuditSink::Stderr => Sink::Stderr,
        AuditSink::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            Sink::File(Arc::new(Mutex::new(file)))
        }
        AuditSink::Syslog => {
            let socket = UnixDatagram::unbound()?;
            socket.connect(syslog_socket)?;
            Sink::Syslog(Arc::new(socket))
        }
    };
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
        .with_filter(filter_fn(|meta| is_audit(meta.target())));
    Ok(Some(Box::new(layer)))
}

/// The writer behind each sink.
#[derive(Clone)]
enum Sink {
    Stdout,
    Stderr,
    File(Arc<Mutex<std::fs::File>>),
    Syslog(Arc<UnixDatagram>),
}

/// One event's worth of output: the formatter writes a whole line at once.
struct SinkWriter<'a>(&'a Sink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match self.0 {
            Sink::Stdout => io::stdout().lock().write_all(line)?,
            Sink::Stderr => io::stderr().lock().write_all(line)?,
            Sink::File(file) => file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .write_all(line)?,
            Sink::Syslog(socket) => {
                socket.send(&syslog_message(line, std::process::id()))?;
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

/// An RFC 3164 message for the local daemon (which adds the timestamp and host).
fn syslog_message(line: &[u8], pid: u32) -> Vec<u8> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let mut message = format!("<{SYSLOG_PRIORITY}>steeple[{pid}]: ").into_bytes();
    message.extend_from_slice(body);
    message
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
