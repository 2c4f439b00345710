//! systemd's `Type=notify` protocol, with the test as the service manager: a Unix
//! datagram socket in a temp dir as `NOTIFY_SOCKET`, `WATCHDOG_USEC` set, and `steeple
//! dev` whose one envelope is not served at first. `READY=1` must wait for it (with a
//! `STATUS=` naming what is missing meanwhile) and arrive only once the SVID is served
//! over SDS; SIGHUP gives `RELOADING=1` with `MONOTONIC_USEC`, then `READY=1`; the
//! watchdog is pinged; SIGTERM gives `STOPPING=1`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use base64::Engine as _;
use steeple_e2e::SteepleProcess;
use steeple_e2e::sds_client;
use steeple_e2e::steeple::{seal_local, write_rows};

const PATH: &str = "payments/notify-token";
const CANARY: &str = "canary-systemd-notify-0001";

/// The manager's end of `NOTIFY_SOCKET`: every datagram received, in order.
struct Manager {
    socket: UnixDatagram,
    received: Vec<String>,
}

impl Manager {
    fn bind(path: &std::path::Path) -> anyhow::Result<Self> {
        let socket = UnixDatagram::bind(path)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Self {
            socket,
            received: Vec::new(),
        })
    }

    /// Receives for `window`, keeping what came.
    fn listen(&mut self, window: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + window;
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            match self.socket.recv(&mut buffer) {
                Ok(n) => self
                    .received
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Receives until a datagram holding the line `line` arrives (at most `timeout`);
    /// returns its index in `received`.
    fn wait_for(&mut self, line: &str, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.position(line) {
                return Ok(i);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no {line:?} within {timeout:?}; received {:?}",
                self.received
            );
            self.listen(Duration::from_millis(200))?;
        }
    }

    fn position(&self, line: &str) -> Option<usize> {
        self.received
            .iter()
            .position(|m| m.lines().any(|l| l == line))
    }

    /// Forgets what was received so far.
    fn clear(&mut self) {
        self.received.clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steeple_tells_systemd_when_it_is_ready_reloading_alive_and_stopping() -> anyhow::Result<()>
{
    let dir = tempfile::Builder::new()
        .prefix("steeple-notify-")
        .tempdir_in("/tmp")?;
    let mut manager = Manager::bind(&dir.path().join("notify"))?;
    let envelopes = dir.path().join("envelopes");
    std::fs::create_dir_all(&envelopes)?;
    let master = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let sealed = seal_local(&master, PATH, "", CANARY)?;
    // Not served until fixed: a provider that is not configured.
    let mut pending = sealed.clone();
    pending["provider"] = "vault_transit".into();
    let rows = envelopes.join("rows.json");
    write_rows(&rows, &[pending])?;
    let config = format!(
        "[envelopes]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"200ms\"\n\
         local_master_key_env = \"STEEPLE_LOCAL_MASTER_KEY\"\n",
        envelopes.display()
    );
    let notify_socket = dir.path().join("notify").display().to_string();
    let mut steeple = SteepleProcess::dev_with(
        &dir.path().join("steeple"),
        &config,
        &[
            ("STEEPLE_LOCAL_MASTER_KEY", master.as_str()),
            ("NOTIFY_SOCKET", notify_socket.as_str()),
            // 1 s: a ping every 0.5 s.
            ("WATCHDOG_USEC", "1000000"),
        ],
    )?;

    // The SVID is served, the envelope is not: a STATUS naming it, no READY=1.
    sds_client::wait_for(steeple.sds_socket(), &["default"], Duration::from_secs(30)).await?;
    manager.wait_for("WATCHDOG=1", Duration::from_secs(10))?;
    manager.listen(Duration::from_secs(2))?;
    assert_eq!(manager.position("READY=1"), None, "{:?}", manager.received);
    assert!(
        manager.received.iter().any(|m| m
            .lines()
            .any(|l| l.starts_with("STATUS=starting, not ready:")
                && l.contains("1 configured envelope(s) not served"))),
        "{:?}",
        manager.received
    );
    assert!(
        manager
            .received
            .iter()
            .filter(|m| *m == "WATCHDOG=1")
            .count()
            >= 3,
        "pings every 0.5 s: {:?}",
        manager.received
    );

    // The row fixed: READY=1, and by then everything is served over SDS.
    write_rows(&rows, &[sealed])?;
    manager.clear();
    manager.wait_for("READY=1", Duration::from_secs(30))?;
    let served = sds_client::fetch(
        &mut sds_client::connect(steeple.sds_socket()),
        &["default", PATH],
    )
    .await?;
    assert_eq!(served.len(), 2, "READY=1 before everything was served");
    assert!(
        manager
            .received
            .iter()
            .any(|m| m == "READY=1\nSTATUS=ready"),
        "{:?}",
        manager.received
    );

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 again.
    manager.clear();
    steeple.signal(rustix::process::Signal::HUP)?;
    let reloading = manager.wait_for("RELOADING=1", Duration::from_secs(10))?;
    let message = manager.received[reloading].clone();
    let usec: u64 = message
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no MONOTONIC_USEC in {message:?}"))?;
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now_usec = u64::try_from(now.tv_sec)? * 1_000_000;
    assert!(
        usec <= now_usec + 1_000_000 && usec + 60_000_000 > now_usec,
        "MONOTONIC_USEC {usec} is not CLOCK_MONOTONIC ({now_usec})"
    );
    let ready = manager.wait_for("READY=1", Duration::from_secs(10))?;
    assert!(ready > reloading, "{:?}", manager.received);

    // SIGTERM: STOPPING=1.
    manager.clear();
    steeple.signal(rustix::process::Signal::TERM)?;
    manager.wait_for("STOPPING=1", Duration::from_secs(10))?;
    let status = steeple.wait_exit(Duration::from_secs(15))?;
    assert!(status.success(), "{status}");
    sds_client::assert_not_in_logs(&[CANARY.as_bytes().to_vec()], &steeple.logs())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abstract_notify_socket_works_and_a_watchdog_for_another_pid_is_not_pinged()
-> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("steeple-notify-abstract-")
        .tempdir_in("/tmp")?;
    let name = format!("steeple-e2e-notify-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            &name,
        )?;
    let socket = UnixDatagram::bind_addr(&addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut manager = Manager {
        socket,
        received: Vec::new(),
    };
    let notify_socket = format!("@{name}");
    let _steeple = SteepleProcess::dev_with(
        &dir.path().join("steeple"),
        "",
        &[
            ("NOTIFY_SOCKET", notify_socket.as_str()),
            ("WATCHDOG_USEC", "400000"),
            // Meant for another process (pid 1): Steeple must not ping it.
            ("WATCHDOG_PID", "1"),
        ],
    )?;
    manager.wait_for("READY=1", Duration::from_secs(30))?;
    manager.listen(Duration::from_secs(2))?;
    assert_eq!(
        manager.position("WATCHDOG=1"),
        None,
        "{:?}",
        manager.received
    );
    Ok(())
}
