//! A socket whose writes give up when the peer stops reading.
//!
//! hyper bounds how long a request head may take (its header read
//! timeout) but not how long an answer may wait for a client that never
//! reads it: such a client would hold one of the endpoint's
//! [`MAX_CONNECTIONS`](super::MAX_CONNECTIONS) for ever. Here a write, flush
//! or shutdown that makes no progress for [`WRITE_STALL`] fails with
//! `TimedOut`, which ends the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// How long an answer may wait for the client to read any of it.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(10);

/// A TCP stream with [`WRITE_STALL`] on its writing side.
#[derive(Debug)]
pub(super) struct StallLimited {
    stream: TcpStream,
    /// Armed when a write first finds the socket full; cleared by any
    /// progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallLimited {
    pub(super) fn new(stream: TcpStream) -> StallLimited {
        StallLimited {
            stream,
            stalled: None,
        }
    }

    /// `outcome` of one attempt to write, with the stall timer kept in step.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the HTTP client read nothing of its answer for {} s",
                    WRITE_STALL.as_secs()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallLimited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallLimited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.progress(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.progress(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_flush(cx);
        this.progress(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.progress(cx, outcome)
    }
}
