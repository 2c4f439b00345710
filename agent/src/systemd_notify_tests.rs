use std::os::linux::net::SocketAddrExt as _;
use std::time::SystemTime;

use steeple_plugin_api::SecretBytes;

use super::*;
use crate::store::{Certificate, Secret, SecretStore, Source};

/// A manager's end: a datagram socket bound at `addr`, read without blocking forever.
fn manager(addr: &SocketAddr) -> UnixDatagram {
    let socket = UnixDatagram::bind_addr(addr).expect("bind the manager's socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    socket
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let n = socket.recv(&mut buffer).expect("a notification");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

fn notifier(notify_socket: &str, watchdog: Option<Duration>) -> SystemdNotifier {
    let target = Target::new(notify_socket, watchdog).expect("a notifier");
    SystemdNotifier {
        target: Some(Arc::new(target)),
    }
}

fn svid() -> Secret {
    let now = SystemTime::now();
    Secret::Certificate(std::sync::Arc::new(Certificate {
        spiffe_id: "spiffe://example.org/web".into(),
        chain_der: vec![vec![1]],
        key_pkcs8: SecretBytes::copy_from(b"k"),
        not_before: now - Duration::from_secs(60),
        not_after: now + Duration::from_secs(600),
    }))
}

#[test]
fn notify_socket_is_a_path_or_an_abstract_name() {
    assert_eq!(
        socket_addr("/run/systemd/notify")
            .expect("a path")
            .as_pathname(),
        Some(std::path::Path::new("/run/systemd/notify"))
    );
    let abstract_addr = socket_addr("@steeple-test").expect("an abstract name");
    assert_eq!(abstract_addr.as_abstract_name(), Some(&b"steeple-test"[..]));
    assert!(socket_addr("relative/notify").is_err());
    assert!(socket_addr("").is_err());
}

#[test]
fn the_watchdog_pings_at_half_its_timeout_and_only_for_its_pid() {
    let half = Some(Duration::from_secs(15));
    assert_eq!(watchdog_interval(Some("30000000"), None, 42), half);
    assert_eq!(watchdog_interval(Some("30000000"), Some("42"), 42), half);
    assert_eq!(watchdog_interval(Some("30000000"), Some("43"), 42), None);
    assert_eq!(watchdog_interval(Some("30000000"), Some("x"), 42), None);
    assert_eq!(watchdog_interval(Some("0"), None, 42), None);
    assert_eq!(watchdog_interval(Some("soon"), None, 42), None);
    assert_eq!(watchdog_interval(None, Some("42"), 42), None);
}

#[test]
fn ready_is_sent_once_everything_is_held_and_reloads_and_stops_are_announced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify");
    let manager = manager(&SocketAddr::from_pathname(&path).expect("path"));
    let notifier = notifier(&path.display().to_string(), None);
    let store = Arc::new(SecretStore::new());
    let readiness = Readiness::of_store(store.clone());
    let mut last = String::new();

    notifier.reloaded();
    notifier.announce(&readiness, &mut last);
    assert_eq!(
        receive(&manager),
        "STATUS=starting, not ready: no X.509-SVID yet",
        "no READY=1 before the SVID, not even after a reload"
    );
    notifier.announce(&readiness, &mut last);
    store.sync_source(&Source::X509Identity, vec![("default".into(), svid())]);
    notifier.announce(&readiness, &mut last);
    assert_eq!(
        receive(&manager),
        "READY=1\nSTATUS=ready",
        "an unchanged status is not repeated"
    );

    notifier.reloading();
    let reloading = receive(&manager);
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|rest| rest.split('\n').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec > 0);
    notifier.reloaded();
    assert_eq!(receive(&manager), "READY=1\nSTATUS=ready");

    store.sync_source(&Source::X509Identity, Vec::new());
    notifier.announce(&readiness, &mut last);
    assert_eq!(
        receive(&manager),
        "STATUS=degraded, not ready: no X.509-SVID yet"
    );
    notifier.stopping();
    assert_eq!(receive(&manager), "STOPPING=1\nSTATUS=stopping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abstract_socket_gets_watchdog_pings() {
    let name = format!("steeple-notify-test-{}", std::process::id());
    let manager = manager(&SocketAddr::from_abstract_name(&name).expect("abstract"));
    let notifier = notifier(&format!("@{name}"), Some(Duration::from_millis(20)));
    let readiness = Readiness::new(Arc::new(SecretStore::new()), &[]);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(notifier.follow(readiness, shutdown.clone()));
    let received: Vec<String> = (0..3).map(|_| receive(&manager)).collect();
    shutdown.cancel();
    task.await.expect("the notifier stops with shutdown");
    assert!(
        received.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{received:?}"
    );
}
