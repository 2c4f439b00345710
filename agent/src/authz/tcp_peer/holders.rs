//! Which processes hold a socket: every `/proc/<pid>/fd` entry linking to
//! `socket:[<inode>]`. Only a scan of every process can say who holds a socket — a
//! socket reaches other processes by `fork`, by `SCM_RIGHTS` to any uid, and a holder can
//! hide from a scan of its uid's processes (`/proc/<pid>` of a non-dumpable or setuid
//! process is root's) — and the caller's ambiguity rule needs them all. So the scan
//! stays whole, but is shared: [`HolderScans`] runs one at a time, each serving every
//! request that was waiting when it began. A request's socket was found before it waits,
//! so the scan that answers it began after that, as a scan of its own would have: the
//! answer is as exact, and a burst of N requests costs one or two scans instead of N
//! scans competing for the same cores.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{Dir, Mode, OFlags};
use tokio::sync::oneshot;

/// Whole scans of `/proc`, one at a time, shared by the requests waiting for one.
#[derive(Debug)]
pub struct HolderScans {
    /// Where processes are listed (`/proc`; a fake tree in tests).
    proc: PathBuf,
    /// Requests not yet taken by a scan.
    waiting: Mutex<Vec<Wanted>>,
    /// Held for a scan's duration: whoever gets it next scans for everyone waiting.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Scans run so far.
    scans: AtomicU64,
}

/// One request's inode and where its holders go.
#[derive(Debug)]
struct Wanted {
    inode: u64,
    reply: oneshot::Sender<Vec<i32>>,
}

impl HolderScans {
    /// Scans of the processes listed under `proc`.
    pub fn new(proc: impl Into<PathBuf>) -> Self {
        Self {
            proc: proc.into(),
            waiting: Mutex::default(),
            turn: Arc::default(),
            scans: AtomicU64::new(0),
        }
    }

    /// The pids of every process with socket `inode` open (among those whose `fd`
    /// directory this process may read), from a scan that began after this call did;
    /// `None` if no scan could run (the runtime is shutting down).
    pub async fn holders_of(&self, inode: u64) -> Option<Vec<i32>> {
        let (reply, mut answer) = oneshot::channel();
        self.lock_waiting().push(Wanted { inode, reply });
        let turn = tokio::select! {
            biased;
            holders = &mut answer => return holders.ok(),
            turn = self.turn.clone().lock_owned() => turn,
        };
        let batch = std::mem::take(&mut *self.lock_waiting());
        if !batch.is_empty() {
            self.scans.fetch_add(1, Ordering::Relaxed);
            let proc = self.proc.clone();
            // The scan answers its whole batch and only then lets the next one start,
            // even if this request is dropped meanwhile.
            let scan = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                serve(&proc, batch);
            });
            let _ = scan.await;
        }
        answer.await.ok()
    }

    /// How many scans have run.
    #[cfg(test)]
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Vec<Wanted>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One scan of `proc` for every inode of `batch`, each request sent its holders.
fn serve(proc: &std::path::Path, batch: Vec<Wanted>) {
    let wanted: HashSet<u64> = batch.iter().map(|w| w.inode).collect();
    let holders = scan(proc, &wanted);
    for request in batch {
        let pids = holders.get(&request.inode).cloned().unwrap_or_default();
        // A request dropped meanwhile no longer listens.
        let _ = request.reply.send(pids);
    }
}

/// The pids under `proc` holding each of `wanted`, each pid once.
pub fn scan(proc: &std::path::Path, wanted: &HashSet<u64>) -> HashMap<u64, Vec<i32>> {
    let mut holders: HashMap<u64, Vec<i32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return holders;
    };
    let mut link = [0u8; 64];
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = open_directory(&entry.path().join("fd")) else {
            continue;
        };
        let Ok(mut listing) = Dir::read_from(&fds) else {
            continue;
        };
        while let Some(Ok(fd)) = listing.read() {
            let Some(inode) = socket_inode(fds.as_fd(), fd.file_name(), &mut link) else {
                continue;
            };
            if wanted.contains(&inode) {
                let pids = holders.entry(inode).or_default();
                if pids.last() != Some(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    holders
}

/// A directory opened for listing and for looking up names in it.
fn open_directory(path: &std::path::Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The inode of the socket `name` (an entry of an `fd` directory open as `fds`) links
/// to, if it is a socket: looked up relative to the open directory, one path step.
fn socket_inode(
    fds: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::CStr,
    link: &mut [u8],
) -> Option<u64> {
    if name.to_bytes().first() == Some(&b'.') {
        return None;
    }
    let len = rustix::fs::readlinkat_raw(fds, name, &mut *link).ok()?;
    parse_socket_link(link.get(..len)?)
}

/// `socket:[12345]` → 12345; anything else (a file, a pipe, a truncated link) → `None`.
fn parse_socket_link(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
#[path = "holders_tests.rs"]
mod tests;
