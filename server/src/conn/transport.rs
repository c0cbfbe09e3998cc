//! The seam between a connection and its bytes: a read half owned by the
//! reader thread, a write half owned by the writer thread, and a [`Cut`]
//! that any thread may use to end the connection at once.
//!
//! Plain TCP is implemented here, TLS in `conn::tls`, WebSocket (over
//! either) in `conn::ws`. Session logic never names a socket type, and only the write half
//! can write, so the writer stays the one owner of the byte order.

use std::fmt::Debug;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::progress::check_interval;
use crate::sys::socket::{recv_now, reset_on_close, send_vectored_now, unsent_bytes};
use crate::sys::wake::{WaitMask, wait_readable};

/// A connection's bytes, before they are handed to its two threads.
pub(crate) trait Transport: Send + 'static {
    type Read: ReadHalf;
    type Write: WriteHalf;
    /// Whether the bytes are encrypted, for `/connz`.
    const TLS: bool = false;
    /// What `/connz` calls it: `tcp`, `tls`, `ws` or `wss`.
    const NAME: &'static str = "tcp";

    fn split(self) -> (Self::Read, Self::Write, Arc<dyn Cut>);
}

/// What the reader thread may do with the connection.
pub(crate) trait ReadHalf: Send + 'static {
    /// Reads what has arrived, waiting at most the read timeout; a timeout
    /// is `WouldBlock` or `TimedOut`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Reads what has already arrived, without waiting; `WouldBlock` when
    /// nothing has. A transport framed inside the stream (WebSocket) tops
    /// a read up with it, so that a busy client's reads fill what the
    /// decoder offers, as on TCP. One that cannot tell answers
    /// `WouldBlock`: reads over it are then not topped up.
    fn read_now(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// How long [`ReadHalf::read`] may wait.
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;

    /// Waits until input is ready (`true`), `timeout` passes (`false`), or
    /// the thread is woken (`Interrupted`), without holding a read buffer.
    fn wait_readable(&mut self, timeout: Duration, mask: &WaitMask) -> io::Result<bool>;

    /// Bytes sent to the client that it has not yet acknowledged, so a
    /// closing connection knows when its last ERROR has arrived. Includes
    /// bytes the transport holds that have not reached the socket yet.
    fn unsent_bytes(&self) -> Option<usize>;

    /// Sets the connection up before any frame is read (TLS: the
    /// handshake, bounded by its own timeout). Plain TCP has nothing to do.
    /// `Interrupted` when the thread is woken (the connection is closing);
    /// calling again resumes, within the same time bound.
    fn handshake(&mut self, _mask: &WaitMask) -> io::Result<Handshake> {
        Ok(Handshake::default())
    }

    /// How the read half wakes the writer thread when its input calls for
    /// an answer below the Relay protocol (a WebSocket pong, or the refusal
    /// of an upgrade), which only the write half may send. Plain TCP and
    /// TLS never need it.
    fn set_writer_wake(&mut self, _wake: WriterWake) {}
}

/// Rings the connection's writer thread.
pub(crate) type WriterWake = Arc<dyn Fn() + Send + Sync>;

/// Input that breaks the transport's own framing (a WebSocket message that
/// is not one whole Relay frame): the connection ends with a fatal ERROR
/// carrying `code`, as for a malformed frame. Travels inside an
/// `io::Error` of kind `InvalidData` from [`ReadHalf::read`].
#[derive(Debug)]
pub(crate) struct Violation {
    pub(crate) code: protocol::ErrorCode,
    pub(crate) message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Violation {}

impl Violation {
    /// The violation as `read` returns it.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The violation inside `error`, if it carries one.
    pub(crate) fn of(error: &io::Error) -> Option<&Violation> {
        error.get_ref().and_then(|inner| inner.downcast_ref())
    }
}

/// What a transport learned while it set the connection up.
#[derive(Debug, Default)]
pub(crate) struct Handshake {
    /// What was negotiated, for the connect log (`TLSv1_3, TLS13_AES_...`);
    /// `None` for plain TCP.
    pub(crate) summary: Option<String>,
    /// Who the verified client certificate names (mutual TLS; the rule is
    /// in `tls::identity`).
    pub(crate) client_identity: Option<Arc<str>>,
}

/// What a write half is handed: each batch's Relay bytes, or the same
/// frames as WebSocket messages (`conn::ws::framed`), framed once per
/// batch and shared by every WebSocket member it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Relay,
    WebSocket,
}

/// What the writer thread may do with the connection.
pub(crate) trait WriteHalf: Send + 'static {
    /// What the output hands [`WriteHalf::write_vectored`]: batches end to
    /// end, as Relay bytes unless the transport frames them otherwise.
    fn framing(&self) -> Framing {
        Framing::Relay
    }

    /// Writes some of `bufs`, waiting at most a check interval of the write
    /// timeout; a timeout is `WouldBlock` or `TimedOut`.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Writes what the connection takes now of `bufs`, without waiting;
    /// `WouldBlock` when it takes nothing. Publishers flush with this.
    fn write_vectored_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Whether bytes already accepted by a write are still held by the
    /// transport, not yet in the socket (TLS records encrypted while the
    /// socket was full). Someone must then call
    /// [`WriteHalf::flush_pending`]: the writer thread.
    fn has_pending(&self) -> bool {
        false
    }

    /// Writes what [`WriteHalf::has_pending`] reports, waiting at most the
    /// write timeout for each bit of progress.
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The frame just written whole, the last so far, is a fatal ERROR
    /// with `code`: a transport with a close of its own (WebSocket) gives
    /// it as the reason. Whatever is written next makes it stale.
    fn ended_with(&mut self, _code: protocol::ErrorCode) {}

    /// Ends the server's direction; the client reads the end of stream after
    /// everything written (TLS: pending records, then close_notify, then
    /// the FIN).
    fn close_write(&mut self);

    /// Bytes written that the client has not acknowledged yet, or `None`
    /// if the transport cannot say; the writer judges whether the client
    /// still reads by it (see `progress`). Without it, only the queue
    /// counts.
    fn unsent_bytes(&self) -> Option<usize> {
        None
    }
}

/// Ends the connection in both directions from any thread: for a
/// connection that will not finish on its own (a shutdown's flush bound
/// passed, a panicking thread).
pub(crate) trait Cut: Send + Sync + Debug {
    fn cut(&self);

    /// Cuts, and makes the final close discard what the kernel still holds
    /// for the client (a reset), for a client given up on.
    fn abort(&self) {
        self.cut();
    }
}

/// Plain TCP. Both halves share the one socket (one file descriptor per
/// connection: the limits check counts on it); the types decide who may do
/// what with it.
#[derive(Debug)]
pub(crate) struct Tcp(TcpStream);

impl Tcp {
    /// Readies an accepted socket: Nagle off (relayed frames go out at once;
    /// the writer already batches), and a blocking write that returns every
    /// check interval of the write timeout, for the writer to look at the
    /// client's progress (see `progress`).
    pub(crate) fn new(stream: TcpStream, write_timeout: Duration) -> io::Result<Tcp> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(check_interval(write_timeout)))?;
        Ok(Tcp(stream))
    }
}

impl Transport for Tcp {
    type Read = TcpRead;
    type Write = TcpWrite;

    fn split(self) -> (TcpRead, TcpWrite, Arc<dyn Cut>) {
        // One allocation for all three: the cut is the shared socket itself.
        let stream = Arc::new(self.0);
        (
            TcpRead(Arc::clone(&stream)),
            TcpWrite(Arc::clone(&stream)),
            stream,
        )
    }
}

#[derive(Debug)]
pub(crate) struct TcpRead(Arc<TcpStream>);

impl ReadHalf for TcpRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        recv_now(&*self.0, buf)
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.0.set_read_timeout(Some(timeout))
    }

    fn wait_readable(&mut self, timeout: Duration, mask: &WaitMask) -> io::Result<bool> {
        wait_readable(&*self.0, timeout, mask)
    }

    fn unsent_bytes(&self) -> Option<usize> {
        unsent_bytes(&*self.0)
    }
}

#[derive(Debug)]
pub(crate) struct TcpWrite(Arc<TcpStream>);

impl WriteHalf for TcpWrite {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self.0).write_vectored(bufs)
    }

    fn write_vectored_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        send_vectored_now(&*self.0, bufs)
    }

    fn close_write(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }

    fn unsent_bytes(&self) -> Option<usize> {
        unsent_bytes(&*self.0)
    }
}

impl Cut for TcpStream {
    fn cut(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }

    fn abort(&self) {
        let _ = reset_on_close(self);
        self.cut();
    }
}

/// Whether an I/O error is a timeout (which std reports as either kind).
pub(crate) fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
