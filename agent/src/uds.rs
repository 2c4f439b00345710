//! Unix-domain sockets: binding a server socket with a chosen mode, and dialling one as
//! a tonic channel.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint};

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Something other than a socket (a file, a directory, a symlink) sits at the path;
    /// Steeple refuses to delete it.
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The configured socket path.
        path: PathBuf,
    },
    /// The socket path is a symbolic link: it could point the socket anywhere.
    #[error("{path}: is a symbolic link; refusing to bind through it (use the real path)")]
    Symlink {
        /// The configured socket path.
        path: PathBuf,
    },
    /// The directory holding the socket could let someone else replace or intercept it.
    #[error(
        "{dir}: {problem}; the SDS socket's directory must be a real directory owned by Steeple's user or root and not writable by others (e.g. /run/steeple, mode 0750)"
    )]
    UnsafeDirectory {
        /// The socket's parent directory.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A socket owned by another user sits at the path: not a stale one of ours.
    #[error("{path}: a socket owned by uid {uid} is already there; refusing to replace it")]
    ForeignSocket {
        /// The configured socket path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// The OS refused to create, bind or chmod the socket.
    #[error("{path}: {source}")]
    Io {
        /// The configured socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Binds a Unix listener at `path` with permission bits `mode`, replacing a stale socket
/// of ours left by an earlier run (never any other kind of file, nor another user's
/// socket). The parent directory is created if missing — writable by Steeple only,
/// searchable by the classes `mode` lets connect (0750 for a 0660 socket) — so a socket
/// can live in a private subdirectory of a directory others may write (a Kubernetes
/// `emptyDir` is 0777); an existing one must be safe (see [`check_socket_dir`]). A
/// symlink at `path` is refused.
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|p| std::fs::symlink_metadata(p).is_err()) {
        std::fs::create_dir_all(parent).map_err(io_err)?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(parent_mode(mode)))
            .map_err(io_err)?;
    }
    check_socket_dir(parent.unwrap_or(Path::new(".")))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(BindError::Symlink {
                path: path.to_owned(),
            });
        }
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            let uid = std::os::unix::fs::MetadataExt::uid(&meta);
            if uid != rustix::process::geteuid().as_raw() {
                return Err(BindError::ForeignSocket {
                    path: path.to_owned(),
                    uid,
                });
            }
            std::fs::remove_file(path).map_err(io_err)?;
        }
        Ok(_) => {
            return Err(BindError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
    Ok(listener)
}

/// The mode of a socket directory Steeple creates for a socket of `socket_mode`: rwx for
/// Steeple, r-x for the group and for others when the socket admits them.
fn parent_mode(socket_mode: u32) -> u32 {
    let group = if socket_mode & 0o060 != 0 { 0o050 } else { 0 };
    let others = if socket_mode & 0o006 != 0 { 0o005 } else { 0 };
    0o700 | group | others
}

/// Checks the directory a socket is bound in: a real directory (not a symlink), owned by
/// this process's user or root, and writable by no one else — neither every user nor its
/// group (a directory others can write lets them swap the socket for their own, sticky
/// bit or not: they can take the name first).
pub fn check_socket_dir(dir: &Path) -> Result<(), BindError> {
    use std::os::unix::fs::MetadataExt as _;
    let unsafe_dir = |problem: String| BindError::UnsafeDirectory {
        dir: dir.to_owned(),
        problem,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|source| BindError::Io {
        path: dir.to_owned(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("is a symbolic link".to_owned()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory".to_owned()));
    }
    let own_uid = rustix::process::geteuid().as_raw();
    if meta.uid() != own_uid && meta.uid() != 0 {
        return Err(unsafe_dir(format!(
            "is owned by uid {} (Steeple runs as uid {own_uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(unsafe_dir(format!(
            "is writable by every user (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    // Group members (e.g. the Envoys the socket's group lets in) could swap the socket
    // for their own and see what other clients send; reaching it needs only r-x.
    if meta.mode() & 0o020 != 0 {
        return Err(unsafe_dir(format!(
            "is writable by its group (mode {:04o}); group members need only r-x to reach the socket",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// A lazily connecting gRPC channel to the Unix socket at `path`: every (re)connect dials
/// the path again, so a restarted server is picked up without rebuilding the channel.
pub fn lazy_channel(path: &Path) -> Channel {
    let path = path.to_owned();
    // The URI is required by tonic but never resolved: the connector dials the socket.
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sds.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(async { bind_socket(&path, 0o600) })
            .unwrap_err();
        assert!(matches!(err, BindError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    }

    #[tokio::test]
    async fn refuses_a_symlink_at_the_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.sock");
        drop(bind_socket(&target, 0o600).unwrap());
        let link = dir.path().join("sds.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = bind_socket(&link, 0o600).unwrap_err();
        assert!(matches!(err, BindError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }

    #[tokio::test]
    async fn refuses_unsafe_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = bind_socket(&open.join("sds.sock"), 0o600).unwrap_err();
        assert!(matches!(err, BindError::UnsafeDirectory { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("writable by every user (mode 1777)"),
            "{err}"
        );

        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        let err = bind_socket(&linked.join("sds.sock"), 0o600).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");

        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = check_socket_dir(&file).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        // A group-writable one is not: group members could replace the socket.
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = bind_socket(&real.join("sds.sock"), 0o660).unwrap_err();
        assert!(
            err.to_string()
                .contains("writable by its group (mode 0770)"),
            "{err}"
        );
        // A group-readable directory of ours is fine (Envoy in Steeple's group).
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o750)).unwrap();
        drop(bind_socket(&real.join("sds.sock"), 0o660).unwrap());
    }

    #[test]
    fn refuses_a_directory_owned_by_someone_else() {
        // Root-owned directories are accepted (e.g. /run itself).
        check_socket_dir(Path::new("/")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        let own_uid = rustix::process::geteuid().as_raw();
        let other = if own_uid == 65534 { 65533 } else { 65534 };
        match std::os::unix::fs::chown(&theirs, Some(other), None) {
            Ok(()) => {
                let err = check_socket_dir(&theirs).unwrap_err();
                let expected = format!("is owned by uid {other} (Steeple runs as uid {own_uid})");
                assert!(err.to_string().contains(&expected), "{err}");
            }
            // Only root can give a directory away; elsewhere the rule is unreachable here.
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied),
        }
    }

    /// The kubelet creates an `emptyDir` 0777: a socket right in it is refused, one in a
    /// subdirectory Steeple creates is not, and the group it admits can reach it.
    #[tokio::test]
    async fn a_socket_in_a_private_subdirectory_of_an_open_directory_binds() {
        let dir = tempfile::tempdir().unwrap();
        let empty_dir = dir.path().join("run-steeple");
        std::fs::create_dir(&empty_dir).unwrap();
        std::fs::set_permissions(&empty_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind_socket(&empty_dir.join("sds.sock"), 0o660).unwrap_err();
        assert!(matches!(err, BindError::UnsafeDirectory { .. }), "{err}");
        let listener = bind_socket(&empty_dir.join("sds/sds.sock"), 0o660).unwrap();
        let sub = std::fs::metadata(empty_dir.join("sds")).unwrap();
        assert_eq!(sub.permissions().mode() & 0o777, 0o750);
        drop(listener);
        assert_eq!(parent_mode(0o600), 0o700);
        assert_eq!(parent_mode(0o666), 0o755);
    }

    #[tokio::test]
    async fn binds_with_the_requested_mode_and_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/sds.sock");
        drop(bind_socket(&path, 0o600).unwrap());
        let listener = bind_socket(&path, 0o660).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        drop(listener);
    }
}
