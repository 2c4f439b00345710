//! Sinks: parsing, only audit events reach them, one JSON object per line, file mode,
//! syslog framing.

use std::os::unix::fs::PermissionsExt as _;

use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

#[test]
fn sinks_parse_and_files_must_be_absolute() {
    assert_eq!(AuditSink::parse("off"), Some(AuditSink::Off));
    assert_eq!(AuditSink::parse("stdout"), Some(AuditSink::Stdout));
    assert_eq!(AuditSink::parse("stderr"), Some(AuditSink::Stderr));
    assert_eq!(AuditSink::parse("syslog"), Some(AuditSink::Syslog));
    assert_eq!(
        AuditSink::parse("file:/var/log/steeple/audit.jsonl"),
        Some(AuditSink::File("/var/log/steeple/audit.jsonl".into()))
    );
    for bad in ["file:audit.jsonl", "file:", "journald", ""] {
        assert_eq!(AuditSink::parse(bad), None, "{bad}");
    }
}

/// Emits one audit event and one operational event through a subscriber with `sink`.
fn emit(sink: &AuditSink, syslog: &Path) {
    let layer = layer_with_syslog_at(sink, syslog).unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!(target: TARGET, caller = "uid=1000 gid=1000 pid=42 exe=/usr/bin/envoy", resource = "payments/api-token", decision = "grant", "sds");
        tracing::info!(logical_path = "payments/api-token", "an operational event");
    });
}

#[test]
fn a_file_sink_gets_only_audit_events_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    emit(&AuditSink::File(path.clone()), Path::new("/nonexistent"));
    emit(&AuditSink::File(path.clone()), Path::new("/nonexistent"));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["target"], TARGET);
    assert_eq!(event["decision"], "grant");
    assert_eq!(event["resource"], "payments/api-token");
    assert_eq!(event["message"], "sds");
    assert!(event["timestamp"].is_string());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_syslog_sink_sends_one_authpriv_message_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log");
    let daemon = UnixDatagram::bind(&socket_path).unwrap();
    emit(&AuditSink::Syslog, &socket_path);
    let mut buffer = [0u8; 4096];
    let n = daemon.recv(&mut buffer).unwrap();
    let message = std::str::from_utf8(&buffer[..n]).unwrap();
    let prefix = format!("<86>steeple[{}]: {{", std::process::id());
    assert!(message.starts_with(&prefix), "{message}");
    assert!(!message.ends_with('\n'));
    let json: serde_json::Value = serde_json::from_str(&message[prefix.len() - 1..]).unwrap();
    assert_eq!(json["decision"], "grant");
    daemon.set_nonblocking(true).unwrap();
    assert!(
        daemon.recv(&mut buffer).is_err(),
        "the operational event leaked"
    );
}

#[test]
fn an_unreachable_sink_is_an_error_and_off_is_nothing() {
    let missing = AuditSink::File("/nonexistent-dir/audit.jsonl".into());
    assert!(
        layer_with_syslog_at::<tracing_subscriber::Registry>(&missing, Path::new("/x")).is_err()
    );
    assert!(
        layer_with_syslog_at::<tracing_subscriber::Registry>(
            &AuditSink::Syslog,
            Path::new("/nonexistent/log")
        )
        .is_err()
    );
    assert!(
        layer_with_syslog_at::<tracing_subscriber::Registry>(&AuditSink::Off, Path::new("/x"))
            .unwrap()
            .is_none()
    );
}
