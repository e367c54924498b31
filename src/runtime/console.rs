//! A terminal for `runtime exec` with a tty, driven by tokio.
//!
//! runc hands a terminal's master to a `--console-socket` only when it
//! detaches, and then nobody of ours is left to reap the process (the
//! daemon is no subreaper). So runc runs in the foreground instead, with
//! a terminal of ours as its stdio: it copies between that and the
//! container's terminal, puts ours in raw mode (so it passes bytes
//! through untouched), and on SIGWINCH copies ours's size to the
//! container's. The runtime still waits for its process, and we for it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, ReadBuf};

/// A new terminal pair of `columns` × `rows` (the kernel's default, 0×0,
/// without a size): the master for us, the slave for the runtime. Both
/// are close-on-exec from the start (`openpty` would leave them open for
/// whatever this multi-threaded daemon spawns meanwhile, and a master
/// never sees its end while a stray slave copy lives).
pub fn open_terminal(size: Option<(u16, u16)>) -> io::Result<(Terminal, OwnedFd)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave_path = ptsname_r(&master)?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(slave_path)?;
    let master = OwnedFd::from(master);
    if let Some((columns, rows)) = size {
        crate::sys::set_window_size(&master, columns, rows)?;
    }
    Ok((Terminal::new(master)?, OwnedFd::from(slave)))
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

/// Output of the terminal, read through the reactor; end of file once
/// every slave descriptor is closed (the master then reads EIO).
impl AsyncRead for &Terminal {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.master.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let read = guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from));
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::EIO as i32) => {
                    return Poll::Ready(Ok(()))
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}
