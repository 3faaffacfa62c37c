//! One accepted connection, and the control a request handler has over it: the faults that
//! act below hyper's response API (a reset, a close with the answer unfinished or not begun).
//!
//! hyper owns the socket while it serves the connection. The connection's task keeps the
//! connection future and [`ConnCtl::kill`] side by side; a handler that kills its connection
//! makes the task drop the future, which closes the socket at once with whatever was written
//! so far. The socket is wrapped in [`Socket`], whose `Drop` sets `SO_LINGER` to 0 first when
//! a reset was asked for, so the close sends RST instead of FIN.

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::clock::kernel;

/// What the handlers of one connection share with its task.
#[derive(Default)]
pub struct ConnCtl {
    kill: CancellationToken,
    reset: AtomicBool,
    /// Requests seen on this connection so far.
    requests: AtomicU64,
    /// The kernel's receive stamp (Unix ns) of the last read, 0 before any or without stamps.
    rx_stamp: AtomicU64,
}

impl ConnCtl {
    /// Counts a request; `true` when an earlier one came on this connection (it is reused).
    pub fn next_request_is_reused(&self) -> bool {
        self.requests.fetch_add(1, Ordering::Relaxed) > 0
    }

    /// Ends the connection now: RST if `reset`, else FIN. Nothing more is written, and the
    /// caller's future is dropped with the connection (it should wait forever after this).
    pub fn kill(&self, reset: bool) {
        if reset {
            self.reset.store(true, Ordering::Release);
        }
        self.kill.cancel();
    }

    /// Resolves once [`ConnCtl::kill`] was called.
    pub async fn killed(&self) {
        self.kill.cancelled().await
    }

    /// The kernel's receive stamp (Unix ns) of the last bytes read on this connection: for
    /// HTTP/1.1 (one request at a time), the arrival of the request being handled.
    pub fn rx_stamp(&self) -> Option<u64> {
        Some(self.rx_stamp.load(Ordering::Acquire)).filter(|&s| s > 0)
    }

    fn wants_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }
}

/// The accepted TCP stream as hyper sees it; resets on drop if its connection asked for it.
/// Its reads take the kernel's receive stamps ([`kernel`]) into [`ConnCtl::rx_stamp`].
pub struct Socket {
    stream: TcpStream,
    ctl: Arc<ConnCtl>,
    stamped: bool,
}

impl Socket {
    pub fn new(stream: TcpStream, ctl: Arc<ConnCtl>) -> Self {
        let stamped = kernel::enable_rx(stream.as_raw_fd());
        Self {
            stream,
            ctl,
            stamped,
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.ctl.wants_reset() {
            // Linger 0: the close that follows (dropping `stream`) sends RST.
            if let Err(e) = self.stream.set_zero_linger() {
                tracing::warn!("mock server: cannot reset a connection: {e}");
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.stamped {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let fd = self.stream.as_raw_fd();
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            // SAFETY: `recv` only writes into the unfilled part, and exactly `n` bytes of it
            // are marked initialised below.
            let unfilled = unsafe { buf.unfilled_mut() };
            match self
                .stream
                .try_io(Interest::READABLE, || kernel::recv(fd, unfilled))
            {
                Ok((n, stamp)) => {
                    // SAFETY: the kernel wrote `n` bytes into `unfilled`.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if let Some(s) = stamp {
                        self.ctl.rx_stamp.store(s, Ordering::Release);
                    }
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: `try_io` cleared it, and polling it again waits.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
