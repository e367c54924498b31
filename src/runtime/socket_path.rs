//! Unix sockets below a directory of any depth. A socket address holds at
//! most 107 bytes of path, so a socket below a long state directory is
//! reached through a short alias instead: the directory opened with
//! `O_PATH`, named as `/proc/<pid>/fd/<fd>/<socket name>`. The socket file
//! stays where it always was, so sockets made before (and recovery looking
//! for them) are unaffected. The alias names this process's descriptor by
//! pid, not `/proc/self`, so children (the runtime, handed a console
//! socket) resolve it too while the alias lives.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

/// The longest path a unix socket address holds (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// A path to a socket that fits in a socket address; valid while it lives.
#[derive(Debug)]
pub struct SocketPath {
    path: PathBuf,
    /// The socket's directory, when the path goes through it.
    _dir: Option<OwnedFd>,
}

impl SocketPath {
    /// `path` itself when it fits, else the alias through its directory.
    pub fn new(path: &Path) -> io::Result<Self> {
        if path.as_os_str().len() <= MAX_SOCKET_PATH {
            return Ok(Self {
                path: path.to_path_buf(),
                _dir: None,
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(too_long(path));
        };
        let dir = open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let alias = alias(std::process::id(), dir.as_raw_fd(), name);
        if alias.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(too_long(path));
        }
        Ok(Self {
            path: alias,
            _dir: Some(dir),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn alias(pid: u32, fd: i32, name: &OsStr) -> PathBuf {
    Path::new(&format!("/proc/{pid}/fd/{fd}")).join(name)
}

fn too_long(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "socket {}: its file name is too long for a socket address",
            path.display()
        ),
    )
}

/// Binds a listening socket at `path`, however deep.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let short = SocketPath::new(path)?;
    std::os::unix::net::UnixListener::bind(short.path())
}

/// Connects to the socket at `path`, however deep.
pub async fn connect(path: &Path) -> io::Result<tokio::net::UnixStream> {
    let short = SocketPath::new(path)?;
    tokio::net::UnixStream::connect(short.path()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep_dir(base: &Path) -> PathBuf {
        let deep = base.join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        deep
    }

    #[test]
    fn short_paths_are_used_as_they_are() {
        let short = SocketPath::new(Path::new("/run/wharf/x/monitor.sock")).unwrap();
        assert_eq!(short.path(), Path::new("/run/wharf/x/monitor.sock"));
    }

    #[tokio::test]
    async fn a_socket_below_a_deep_directory_is_bound_and_reached() {
        let base = tempfile::tempdir().unwrap();
        let socket = deep_dir(base.path()).join("monitor.sock");
        assert!(socket.as_os_str().len() > MAX_SOCKET_PATH);
        let listener = bind(&socket).unwrap();
        assert!(socket.exists(), "the socket file is where it was asked for");
        let accepted = std::thread::spawn(move || listener.accept().map(|_| ()));
        connect(&socket).await.unwrap();
        accepted.join().unwrap().unwrap();
    }

    #[test]
    fn the_alias_names_the_descriptor_by_pid() {
        let base = tempfile::tempdir().unwrap();
        let socket = deep_dir(base.path()).join("console.sock");
        let short = SocketPath::new(&socket).unwrap();
        let text = short.path().to_str().unwrap();
        assert!(
            text.starts_with(&format!("/proc/{}/fd/", std::process::id())),
            "{text}"
        );
        assert!(text.ends_with("/console.sock"));
        assert!(Path::new(text).parent().unwrap().is_dir());
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let long = Path::new("/nonexistent")
            .join("x".repeat(120))
            .join("s.sock");
        assert!(SocketPath::new(&long).is_err());
    }
}
