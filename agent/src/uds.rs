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
/// left by an earlier run (never any other kind of file). The parent directory is
/// created if missing, owner-only.
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        std::fs::create_dir_all(parent).map_err(io_err)?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
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
