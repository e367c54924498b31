//! A terminal for `runtime exec --tty`: the console socket the runtime
//! hands the terminal's master over, and the master driven by tokio.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixListener;

/// Longest path a unix socket address can hold.
const MAX_SOCKET_PATH: usize = 107;

/// A listening `--console-socket`; its file is removed on drop.
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> io::Result<Self> {
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "console socket path {} is longer than {MAX_SOCKET_PATH} bytes",
                    path.display()
                ),
            ));
        }
        let listener = UnixListener::bind(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The terminal's master, from the first connection.
    pub async fn receive(&self) -> io::Result<Terminal> {
        let (stream, _) = self.listener.accept().await?;
        let master = loop {
            stream.readable().await?;
            match stream.try_io(Interest::READABLE, || crate::sys::recv_fd(&stream)) {
                Ok(fd) => break fd,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        Terminal::new(master)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A terminal's master, non-blocking, read and written through the
/// reactor. Several tasks may use it at once through `&self`.
pub struct Terminal {
    master: AsyncFd<OwnedFd>,
}

impl Terminal {
    pub fn new(master: OwnedFd) -> io::Result<Self> {
        crate::sys::set_nonblocking(&master)?;
        Ok(Self {
            master: crate::sys::register_async(master)?,
        })
    }

    /// Output of the terminal; 0 at its end (the master reads EIO once
    /// every slave descriptor is closed).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::EIO as i32) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    pub fn resize(&self, columns: u16, rows: u16) -> io::Result<()> {
        crate::sys::set_window_size(self.master.get_ref().as_fd(), columns, rows)
    }
}
