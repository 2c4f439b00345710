use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::authz::{Policy, Rule};
use crate::sds::peer::PeerStream;

fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn admission(max_connections: usize, per_uid: usize, policy: Policy) -> Arc<Admission> {
    let limits = ConnectionLimits {
        max_connections,
        max_connections_per_uid: per_uid,
        handshake_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(600),
        require_pid: false,
    };
    Admission::new(limits, SharedPolicy::new(policy))
}

/// What `peer::incoming` makes of an accepted stream.
fn accept(admission: &Arc<Admission>, stream: UnixStream) -> Option<PeerStream> {
    let (caller, slot) = admission.admit(&stream)?;
    Some(PeerStream::new(stream, caller, slot, admission.timeouts()))
}

/// One end of a fresh socket pair (its peer credentials are this process's) and the
/// other end, which must stay open for the first to be readable.
fn connection() -> (UnixStream, UnixStream) {
    UnixStream::pair().unwrap()
}

#[tokio::test]
async fn connections_are_capped_per_uid_and_overall_and_a_close_frees_the_place() {
    let everyone = Policy::new(Vec::new(), own_uid());
    let per_uid = admission(10, 2, everyone.clone());
    let (a, _a) = connection();
    let (b, _b) = connection();
    let (c, _c) = connection();
    let first = accept(&per_uid, a).expect("first");
    let _second = accept(&per_uid, b).expect("second");
    assert!(accept(&per_uid, c).is_none(), "a third from one uid");
    assert_eq!(per_uid.open_connections(), 2);
    drop(first);
    assert_eq!(per_uid.open_connections(), 1);
    let (d, _d) = connection();
    assert!(
        accept(&per_uid, d).is_some(),
        "the closed one's place is free again"
    );

    let overall = admission(1, 10, everyone);
    let (e, _e) = connection();
    let (f, _f) = connection();
    let _kept = accept(&overall, e).expect("first");
    assert!(accept(&overall, f).is_none(), "over max_connections");
}

#[tokio::test]
async fn a_caller_granted_nothing_is_closed_at_once_and_holds_no_place() {
    let someone_else = Policy::new(
        vec![Rule {
            uids: vec![own_uid().wrapping_add(1)],
            gids: Vec::new(),
            exe: None,
            spiffe_ids: vec![],
            resources: vec!["*".into()],
        }],
        own_uid(),
    );
    let refusing = admission(10, 10, someone_else);
    let (ours, mut theirs) = connection();
    assert!(accept(&refusing, ours).is_none());
    assert_eq!(refusing.open_connections(), 0);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), theirs.read(&mut byte)).await;
    assert_eq!(
        read.unwrap().unwrap(),
        0,
        "the client sees the connection closed"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let open = admission(10, 10, Policy::new(Vec::new(), own_uid()));
    let (ours, _silent) = connection();
    let mut admitted = accept(&open, ours).expect("admitted");
    let mut buf = [0u8; 8];
    let err = tokio::time::timeout(Duration::from_secs(2), admitted.read(&mut buf))
        .await
        .expect("the handshake timeout fires first")
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

    // Once the first bytes arrived, silence is no longer a reason to close.
    let (ours, mut talking) = connection();
    let mut admitted = accept(&open, ours).expect("admitted");
    talking.write_all(b"PRI").await.unwrap();
    assert_eq!(admitted.read(&mut buf).await.unwrap(), 3);
    let idle = tokio::time::timeout(Duration::from_millis(500), admitted.read(&mut buf)).await;
    assert!(idle.is_err(), "still open and waiting: {idle:?}");
}

#[tokio::test]
async fn a_connection_without_streams_is_closed_after_the_idle_timeout() {
    let open = admission(10, 10, Policy::new(Vec::new(), own_uid()));
    let mut buf = [0u8; 8];

    // Bytes (keepalive answers, say) are not use: idle from accept, closed at 600 ms.
    let (ours, mut talking) = connection();
    let mut admitted = accept(&open, ours).expect("admitted");
    let started = tokio::time::Instant::now();
    talking.write_all(b"PRI").await.unwrap();
    assert_eq!(admitted.read(&mut buf).await.unwrap(), 3);
    let err = tokio::time::timeout(Duration::from_secs(3), admitted.read(&mut buf))
        .await
        .expect("the idle timeout fires")
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(600));

    // An open stream keeps it; once the stream ends, the idle time counts from then.
    let (ours, mut talking) = connection();
    let mut admitted = accept(&open, ours).expect("admitted");
    talking.write_all(b"PRI").await.unwrap();
    assert_eq!(admitted.read(&mut buf).await.unwrap(), 3);
    let stream = connect_info(&admitted).activity.stream_opened();
    let busy = tokio::time::timeout(Duration::from_millis(1500), admitted.read(&mut buf)).await;
    assert!(busy.is_err(), "open while a stream is: {busy:?}");
    drop(stream);
    let ended = tokio::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(3), admitted.read(&mut buf))
        .await
        .expect("the idle timeout fires after the stream ended")
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(ended.elapsed() >= Duration::from_millis(600));
}

fn connect_info(stream: &PeerStream) -> crate::sds::peer::ConnectedCaller {
    tonic::transport::server::Connected::connect_info(stream)
}
