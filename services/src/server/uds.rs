//! Unix sockets: binding with stale-file handling and a file mode, taking one systemd passed, and peer
//! credentials.
//!
//! Invariant: we never delete a path that is not a socket, and never steal a socket a live process is
//! serving on; a stale socket file left by a crash is replaced.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

/// Why a unix socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The path exists and is not a socket; we refuse to remove it.
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Another process is accepting connections on the socket.
    #[error("{path}: another process is already serving on this socket")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// An I/O step failed.
    #[error("{path}: {op}: {cause}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What we were doing.
        op: &'static str,
        /// The I/O error.
        cause: io::Error,
    },
}

/// Binds a unix socket at `path` with permission bits `mode`, replacing a stale socket file.
///
/// The parent directory is created (mode 0755) when missing, as the upstream systemd units do with
/// `ExecStartPre=mkdir -p`.
pub async fn bind(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    let io_err = |op| move |source| BindError::Io { path: path.to_owned(), op, cause: source };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(io_err("create parent directory"))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod parent directory"))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
            Ok(_) => return Err(BindError::InUse { path: path.to_owned() }),
            Err(_) => std::fs::remove_file(path).map_err(io_err("remove stale socket"))?,
        },
        Ok(_) => return Err(BindError::NotASocket { path: path.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat")(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod socket"))?;
    Ok(listener)
}

/// Why a socket passed by systemd (socket activation) cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InheritError {
    /// `LISTEN_FDS` is set but `LISTEN_PID` is absent or names another process.
    #[error("socket activation: LISTEN_FDS is set but LISTEN_PID {0:?} is not this process")]
    OtherProcess(String),
    /// More or fewer sockets than the one the verifier serves.
    #[error("socket activation: LISTEN_FDS={0}: the .socket unit must pass exactly one socket")]
    Count(String),
    /// No descriptor where `LISTEN_FDS` says.
    #[error("socket activation: no descriptor at LISTEN_FDS_FIRST_FD")]
    NoDescriptor,
    /// The descriptor is not a listening unix stream socket.
    #[error("socket activation: the passed descriptor: {0}")]
    Descriptor(io::Error),
    /// The socket is bound somewhere else than the config's `socket`.
    #[error("socket activation: systemd passed a socket at {passed}, but the config's socket is {configured}")]
    OtherPath {
        /// Where the passed socket is bound.
        passed: String,
        /// The config's `socket`.
        configured: PathBuf,
    },
}

/// The listening socket systemd passed (socket activation: `LISTEN_PID` is this process, `LISTEN_FDS=1`), if
/// any. It must be a unix stream socket bound at `path`, the config's socket (the same file, by device and
/// inode), so that a unit and a config that disagree stop the daemon instead of serving where nobody looks. The
/// socket file belongs to systemd: its owner and mode come from the `.socket` unit; the daemon never removes it.
///
/// Call it before any thread starts: taking the descriptor clears `LISTEN_FDS` and `LISTEN_PID` from the
/// environment.
pub fn inherited(path: &Path) -> Result<Option<std::os::unix::net::UnixListener>, InheritError> {
    let Ok(fds) = std::env::var("LISTEN_FDS") else { return Ok(None) };
    // systemd always sets LISTEN_PID; without it (or naming another process) the variables were inherited by
    // accident and describe descriptors that are not ours.
    let pid = std::env::var("LISTEN_PID").unwrap_or_default();
    if pid != std::process::id().to_string() {
        return Err(InheritError::OtherProcess(pid));
    }
    if fds != "1" {
        return Err(InheritError::Count(fds));
    }
    let listener = listenfd::ListenFd::from_env()
        .take_unix_listener(0)
        .map_err(InheritError::Descriptor)?
        .ok_or(InheritError::NoDescriptor)?;
    let addr = listener.local_addr().map_err(InheritError::Descriptor)?;
    // The same socket file, whichever name reaches it: a unit says /run, an upstream config /var/run.
    let identity = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let same =
        addr.as_pathname().is_some_and(|passed| identity(passed).is_some() && identity(passed) == identity(path));
    if !same {
        let passed = addr.as_pathname().map_or_else(|| "an unnamed address".into(), |p| p.display().to_string());
        return Err(InheritError::OtherPath { passed, configured: path.to_owned() });
    }
    listener.set_nonblocking(true).map_err(InheritError::Descriptor)?;
    Ok(Some(listener))
}

/// Who is on the other end of a unix socket connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process id, when the kernel reports one.
    pub pid: Option<i32>,
}

/// Reads the peer's credentials.
pub fn peer_cred(stream: &UnixStream) -> io::Result<PeerCred> {
    let cred = stream.peer_cred()?;
    Ok(PeerCred { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() })
}

/// Which peers may use a socket beyond what the file mode allows. Empty lists mean "anyone who can connect".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Allowed user ids.
    pub uids: Vec<u32>,
    /// Allowed group ids.
    pub gids: Vec<u32>,
}

impl PeerPolicy {
    /// True when the peer is allowed: no lists configured, or its uid or gid is listed.
    pub fn allows(&self, peer: &PeerCred) -> bool {
        (self.uids.is_empty() && self.gids.is_empty()) || self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replaces_stale_socket_and_refuses_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/s.sock");
        let first = bind(&path, 0o660).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // Live: refused.
        assert!(matches!(bind(&path, 0o660).await, Err(BindError::InUse { .. })));
        drop(first);
        // Stale (listener gone, file left): replaced.
        assert!(path.exists());
        let _second = bind(&path, 0o600).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn never_removes_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, b"keep me").unwrap();
        assert!(matches!(bind(&path, 0o660).await, Err(BindError::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }

    #[test]
    fn peer_policy_table() {
        let me = PeerCred { uid: 1000, gid: 100, pid: None };
        let cases = [
            (PeerPolicy::default(), true),
            (PeerPolicy { uids: vec![1000], gids: vec![] }, true),
            (PeerPolicy { uids: vec![0], gids: vec![] }, false),
            (PeerPolicy { uids: vec![], gids: vec![100] }, true),
            (PeerPolicy { uids: vec![0], gids: vec![5] }, false),
        ];
        for (policy, want) in cases {
            assert_eq!(policy.allows(&me), want, "{policy:?}");
        }
    }
}
