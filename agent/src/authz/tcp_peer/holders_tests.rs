use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

/// A fake `/proc`: each pid's `fd` directory with links to the given targets.
fn fake_proc(processes: &[(&str, &[&str])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (pid, targets) in processes {
        let fds = dir.path().join(pid).join("fd");
        std::fs::create_dir_all(&fds).unwrap();
        for (n, target) in targets.iter().enumerate() {
            symlink(target, fds.join(n.to_string())).unwrap();
        }
    }
    dir
}

fn standard_proc() -> tempfile::TempDir {
    fake_proc(&[
        (
            "10",
            &["/dev/null", "socket:[111]", "socket:[222]", "socket:[111]"],
        ),
        ("20", &["pipe:[111]", "socket:[333]"]),
        ("30", &["socket:[111]", "anon_inode:[eventfd]"]),
        ("self", &["socket:[111]"]),
        ("net", &[]),
        ("40", &[]),
    ])
}

#[test]
fn socket_links_parse_and_nothing_else_does() {
    assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
    for other in [
        &b"pipe:[12345]"[..],
        b"socket:[]",
        b"socket:[12a]",
        b"socket:[123",
        b"/dev/null",
        b"",
        b"socket:[99999999999999999999999]",
    ] {
        assert_eq!(parse_socket_link(other), None, "{other:?}");
    }
}

#[test]
fn a_scan_finds_every_holder_of_each_wanted_inode_once() {
    let proc = standard_proc();
    let found = scan(proc.path(), &HashSet::from([111, 333, 444]));
    let mut holders_of_111 = found[&111].clone();
    holders_of_111.sort_unstable();
    assert_eq!(
        holders_of_111,
        [10, 30],
        "pid 10 holds it twice, listed once"
    );
    assert_eq!(found[&333], [20]);
    assert!(!found.contains_key(&444), "nobody holds it");
    assert!(!found.contains_key(&222), "not asked for");
}

#[test]
fn a_missing_proc_holds_nothing() {
    assert!(scan(Path::new("/nonexistent-proc"), &HashSet::from([1])).is_empty());
}

#[tokio::test]
async fn each_request_gets_its_own_inodes_holders() {
    let proc = standard_proc();
    let scans = HolderScans::new(proc.path());
    assert_eq!(scans.holders_of(333).await, Some(vec![20]));
    assert_eq!(scans.holders_of(444).await, Some(Vec::new()));
    assert_eq!(scans.scans(), 2, "alone, each request scans");
}

#[tokio::test]
async fn requests_waiting_during_a_scan_share_the_next_one() {
    let proc = standard_proc();
    let scans = Arc::new(HolderScans::new(proc.path()));
    // A scan under way: everyone arriving meanwhile waits for the turn.
    let busy = scans.turn.clone().lock_owned().await;
    let requests: Vec<_> = [111, 333, 444, 333]
        .into_iter()
        .map(|inode| {
            let scans = scans.clone();
            tokio::spawn(async move { (inode, scans.holders_of(inode).await) })
        })
        .collect();
    while scans.lock_waiting().len() < requests.len() {
        tokio::task::yield_now().await;
    }
    drop(busy);
    for request in requests {
        let (inode, holders) = request.await.unwrap();
        let mut holders = holders.expect("a scan answered");
        holders.sort_unstable();
        let expected: &[i32] = match inode {
            111 => &[10, 30],
            333 => &[20],
            _ => &[],
        };
        assert_eq!(holders, expected, "inode {inode}");
    }
    assert_eq!(scans.scans(), 1, "one scan served all four");
}

#[tokio::test]
async fn a_later_request_is_answered_by_a_later_scan_not_a_remembered_one() {
    let proc = fake_proc(&[("10", &[])]);
    let scans = HolderScans::new(proc.path());
    assert_eq!(scans.holders_of(555).await, Some(Vec::new()));
    // The socket reaches pid 20 after that scan.
    let fds = proc.path().join("20").join("fd");
    std::fs::create_dir_all(&fds).unwrap();
    symlink("socket:[555]", fds.join("3")).unwrap();
    assert_eq!(scans.holders_of(555).await, Some(vec![20]));
    assert_eq!(scans.scans(), 2);
}
