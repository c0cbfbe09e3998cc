//! TLS over TCP: the second implementation of the transport seam.
//!
//! rustls keeps one state machine for both directions (rustls issue 288):
//! a read may have to send (an alert, a key update) and a write needs the
//! keys the handshake set up. So the reader and the writer share one
//! [`rustls::ServerConnection`] under a lock, and that lock is **never held
//! across a wait**: the socket is non-blocking, every call on it under the
//! lock returns at once, and waiting for it (`ppoll`) happens with the lock
//! released. The longest anyone holds the lock is one decryption or
//! encryption of at most [`CHUNK`] bytes.
//!
//! Encrypted bytes leave rustls into `out`, this transport's own buffer, so
//! how many are still to be written is known exactly (for
//! [`ReadHalf::unsent_bytes`] and [`WriteHalf::has_pending`]). New
//! plaintext is taken only once `out` is empty, so writes leave at most one
//! chunk's records in it, and the reader stops reading while the answers
//! its input produced pass [`MAX_BACKLOG`]: the bound on what a connection
//! that stops reading costs beyond its queue.
//!
//! The handshake is done by the reader thread, before the first frame, and
//! bounded by the handshake timeout: a client that connects and says
//! nothing, or trickles a ClientHello, is cut when it runs out.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use rustls::{ServerConfig, ServerConnection};

use super::progress::check_interval;
use super::transport::{Cut, Handshake, ReadHalf, Transport, WriteHalf};
use crate::sys::socket::{reset_on_close, unsent_bytes};
use crate::sys::wake::{Interest, WaitMask, wait_ready};

/// Plaintext encrypted per step at most: four full TLS records, sent with
/// one `send`. It bounds both how long the lock is held (tens of µs of
/// AES-GCM) and how much `out` holds. One record per step cost a system
/// call per 16 KiB, where plain TCP writes a whole queue at once; four
/// took TLS fan-out from 0.40 to 0.5 of plain in `bench --tls`.
const CHUNK: usize = 64 * 1024;
/// An `out` buffer larger than this is given back once written, so an idle
/// connection does not keep the memory of its largest write.
const OUT_RETAIN: usize = 4 * 1024;
/// Slices handed to rustls per step at most.
const MAX_SLICES: usize = 64;
/// Answers the reader's input produced (alerts, key updates) that may wait
/// for the socket before the reader stops reading and waits for them to
/// go out: a client that makes the server talk and never reads cannot
/// make `out` grow past this. Above one chunk's records, so the writer's
/// own output never trips it.
const MAX_BACKLOG: usize = 2 * CHUNK;

/// An accepted socket and its TLS session, not yet split.
#[derive(Debug)]
pub(crate) struct Tls {
    stream: Arc<Stream>,
    handshake_timeout: Duration,
}

/// What both halves share: the socket, and the session behind the lock.
#[derive(Debug)]
pub(crate) struct Stream {
    /// Non-blocking; waits are `ppoll`s without the lock.
    socket: TcpStream,
    session: Mutex<Session>,
    /// How long one blocking write waits for the socket: a check interval
    /// of the write timeout, after which the writer looks at the client's
    /// progress (see `progress`).
    write_timeout: Duration,
}

/// The TLS state machine and the records it has produced.
struct Session {
    conn: ServerConnection,
    /// Encrypted bytes taken from rustls, not yet all in the socket.
    out: Vec<u8>,
    /// Bytes of `out` already in the socket.
    sent: usize,
    /// close_notify queued: nothing more is encrypted.
    closing: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

/// What a non-blocking receive found.
enum Received {
    /// Records arrived (maybe plaintext, maybe handshake).
    Records,
    /// The client closed its side (TCP end of stream).
    Eof,
    /// Nothing yet.
    Nothing,
}

impl Tls {
    /// Readies an accepted socket for TLS with the certificate in force now
    /// (a reload affects only connections accepted after it).
    pub(crate) fn new(
        socket: TcpStream,
        config: Arc<ServerConfig>,
        write_timeout: Duration,
        handshake_timeout: Duration,
    ) -> io::Result<Tls> {
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Tls {
            stream: Arc::new(Stream {
                socket,
                session: Mutex::new(Session {
                    conn,
                    out: Vec::new(),
                    sent: 0,
                    closing: false,
                }),
                write_timeout: check_interval(write_timeout),
            }),
            handshake_timeout,
        })
    }
}

impl Transport for Tls {
    const TLS: bool = true;
    const NAME: &'static str = "tls";
    type Read = TlsRead;
    type Write = TlsWrite;

    fn split(self) -> (TlsRead, TlsWrite, Arc<dyn Cut>) {
        (
            TlsRead {
                stream: Arc::clone(&self.stream),
                read_timeout: Duration::from_secs(1),
                handshake_timeout: self.handshake_timeout,
                handshake_deadline: None,
            },
            TlsWrite(Arc::clone(&self.stream)),
            self.stream,
        )
    }
}

impl Cut for Stream {
    fn cut(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    fn abort(&self) {
        let _ = reset_on_close(&self.socket);
        self.cut();
    }
}

impl Session {
    /// Encrypted bytes not yet in the socket.
    fn pending(&self) -> usize {
        self.out.len() - self.sent + usize::from(self.conn.wants_write())
    }

    /// Moves what rustls has produced into `out` and writes `out` to the
    /// socket, without waiting; true once all of it is in the socket.
    fn flush(&mut self, socket: &TcpStream) -> io::Result<bool> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.out)?;
        }
        while self.sent < self.out.len() {
            match (&*socket).write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.sent = 0;
        if self.out.capacity() > OUT_RETAIN {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        Ok(true)
    }

    /// Reads what has arrived into rustls and processes it, without
    /// waiting; what rustls answers (handshake messages, alerts) is written
    /// as far as the socket takes it now. A TLS error sends its alert and
    /// ends the connection (`InvalidData`).
    fn receive(&mut self, socket: &TcpStream) -> io::Result<Received> {
        let received = match self.conn.read_tls(&mut &*socket) {
            Ok(0) => Received::Eof,
            Ok(_) => Received::Records,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Received::Nothing),
            Err(e) => return Err(e),
        };
        if let Err(error) = self.conn.process_new_packets() {
            // The alert that says why is queued: send it if it fits now.
            let _ = self.flush(socket);
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        match self.flush(socket) {
            Ok(_) => Ok(received),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(received),
            Err(e) => Err(e),
        }
    }

    /// Decrypted input into `buf`: `Some(Ok(0))` at the end of stream
    /// (close_notify, or a TCP end without it), `None` when there is none
    /// yet.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        match self.conn.reader().read(buf) {
            Ok(n) => Some(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(Ok(0)),
            Err(e) => Some(Err(e)),
        }
    }

    /// Encrypts one chunk of `bufs`, `skip` bytes in, and writes it as far
    /// as the socket takes it now; returns the plaintext bytes taken (0
    /// when the socket is still busy with earlier records) and whether
    /// their records all reached the socket ([`Session::pending`] counts
    /// the rest).
    fn write_chunk(
        &mut self,
        socket: &TcpStream,
        bufs: &[IoSlice<'_>],
        skip: usize,
    ) -> io::Result<(usize, bool)> {
        if self.conn.is_handshaking() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake has not finished",
            ));
        }
        if self.closing {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if !self.flush(socket)? {
            return Ok((0, false));
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = chunk_of(bufs, skip, &mut slices);
        if count == 0 {
            return Ok((0, true));
        }
        let taken = self.conn.writer().write_vectored(&slices[..count])?;
        Ok((taken, self.flush(socket)?))
    }
}

/// Fills `slices` with at most [`CHUNK`] bytes of `bufs`, starting `skip`
/// bytes in; returns how many slices it used.
fn chunk_of<'a>(bufs: &'a [IoSlice<'_>], mut skip: usize, slices: &mut [IoSlice<'a>]) -> usize {
    let mut count = 0;
    let mut room = CHUNK;
    for buf in bufs {
        if count == slices.len() || room == 0 {
            break;
        }
        let bytes: &'a [u8] = buf;
        if skip >= bytes.len() {
            skip -= bytes.len();
            continue;
        }
        let part = &bytes[skip..];
        skip = 0;
        let part = &part[..part.len().min(room)];
        room -= part.len();
        slices[count] = IoSlice::new(part);
        count += 1;
    }
    count
}

impl Stream {
    fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock()
    }

    /// Encrypts and writes as much of `bufs` as the socket takes now, a
    /// chunk per turn of the lock, so a large write never keeps the reader
    /// from the session for longer than one chunk. With `wait`, takes the
    /// lock even when busy (the writer); without, gives up when it is
    /// (a publisher). Returns the plaintext bytes taken.
    fn write_now(&self, bufs: &[IoSlice<'_>], wait: bool) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut taken = 0;
        while taken < total {
            let mut session = if wait {
                self.lock()
            } else {
                match self.session.try_lock() {
                    Some(session) => session,
                    None => break,
                }
            };
            let (n, flushed) = session.write_chunk(&self.socket, bufs, taken)?;
            taken += n;
            if n == 0 || !flushed {
                break;
            }
        }
        Ok(taken)
    }

    /// Writes what the session holds, waiting (without the lock) up to a
    /// check interval for each bit of progress; the caller judges whether
    /// the client still reads.
    fn flush_waiting(&self) -> io::Result<()> {
        loop {
            if self.lock().flush(&self.socket)? {
                return Ok(());
            }
            if !wait_ready(&self.socket, Interest::Write, self.write_timeout, None)? {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }
}

/// The reader thread's half: the handshake, and decrypted input.
#[derive(Debug)]
pub(crate) struct TlsRead {
    stream: Arc<Stream>,
    read_timeout: Duration,
    handshake_timeout: Duration,
    /// Set by the first handshake call, so a resumed handshake (after a
    /// wake-up) keeps the original bound.
    handshake_deadline: Option<Instant>,
}

impl ReadHalf for TlsRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stream = &*self.stream;
        let deadline = Instant::now() + self.read_timeout;
        loop {
            {
                let mut session = stream.lock();
                if let Some(result) = session.take_plaintext(buf) {
                    return result;
                }
                if session.pending() > MAX_BACKLOG {
                    drop(session);
                    // Bounded by the write timeout: a client that does
                    // not read its answers is closed.
                    stream.flush_waiting()?;
                    continue;
                }
                match session.receive(&stream.socket)? {
                    // Decrypted (or the end): take it on the next turn.
                    Received::Records | Received::Eof => continue,
                    Received::Nothing => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_ready(&stream.socket, Interest::Read, left, None)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stream = &*self.stream;
        let mut session = stream.lock();
        loop {
            if let Some(result) = session.take_plaintext(buf) {
                return result;
            }
            // A backlog to flush first is for `read`, which may wait.
            if session.pending() > MAX_BACKLOG {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            match session.receive(&stream.socket)? {
                Received::Records | Received::Eof => continue,
                Received::Nothing => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.read_timeout = timeout;
        Ok(())
    }

    fn wait_readable(&mut self, timeout: Duration, mask: &WaitMask) -> io::Result<bool> {
        {
            let mut session = self.stream.lock();
            // Input decrypted earlier and not yet read.
            let buffered = session
                .conn
                .process_new_packets()
                .map(|state| state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
                .unwrap_or(true);
            if buffered {
                return Ok(true);
            }
        }
        wait_ready(&self.stream.socket, Interest::Read, timeout, Some(mask))
    }

    fn unsent_bytes(&self) -> Option<usize> {
        let held = self.stream.lock().pending();
        unsent_bytes(&self.stream.socket).map(|in_socket| in_socket + held)
    }

    fn handshake(&mut self, mask: &WaitMask) -> io::Result<Handshake> {
        let stream = &*self.stream;
        let deadline = *self
            .handshake_deadline
            .get_or_insert_with(|| Instant::now() + self.handshake_timeout);
        loop {
            let interest = {
                let mut session = stream.lock();
                if !session.conn.is_handshaking() {
                    // The last flight (and session tickets) go out as the
                    // socket takes them; the writer flushes any rest.
                    session.flush(&stream.socket)?;
                    return Ok(describe(&session.conn));
                }
                match session.receive(&stream.socket)? {
                    Received::Eof => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection during the TLS handshake",
                        ));
                    }
                    Received::Records => continue,
                    Received::Nothing => {}
                }
                if session.pending() > 0 {
                    Interest::Both
                } else {
                    Interest::Read
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_ready(&stream.socket, interest, left, Some(mask))? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no TLS handshake within the handshake timeout ({} s)",
                        self.handshake_timeout.as_secs_f64()
                    ),
                ));
            }
        }
    }
}

/// The negotiated protocol and suite, and the client's identity.
fn describe(conn: &ServerConnection) -> Handshake {
    let version = conn
        .protocol_version()
        .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}"));
    let suite = conn
        .negotiated_cipher_suite()
        .map_or_else(String::new, |s| format!(", {:?}", s.suite()));
    let client_identity = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| crate::tls::identity::of_certificate(cert));
    Handshake {
        summary: Some(format!("{version}{suite}")),
        client_identity,
    }
}

/// The writer thread's half (also used, without waiting, by publishers).
#[derive(Debug)]
pub(crate) struct TlsWrite(Arc<Stream>);

impl WriteHalf for TlsWrite {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let stream = &*self.0;
        loop {
            let n = stream.write_now(bufs, true)?;
            if n > 0 || bufs.iter().all(|b| b.is_empty()) {
                return Ok(n);
            }
            if !wait_ready(&stream.socket, Interest::Write, stream.write_timeout, None)? {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }

    fn write_vectored_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // A publisher never waits: when the reader (decrypting) or the
        // writer has the session, the writer will write this.
        match self.0.write_now(bufs, false)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn has_pending(&self) -> bool {
        // Busy counts as pending: whoever has the session may be leaving
        // records behind, and a needless flush by the writer costs nothing.
        self.0
            .session
            .try_lock()
            .is_none_or(|session| session.pending() > 0)
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.0.flush_waiting()
    }

    fn unsent_bytes(&self) -> Option<usize> {
        // Encrypted bytes: a record's few bytes of overhead make the
        // client's progress look a little smaller than it is, never larger.
        let held = self.0.lock().pending();
        unsent_bytes(&self.0.socket).map(|in_socket| in_socket + held)
    }

    fn close_write(&mut self) {
        let stream = &*self.0;
        {
            let mut session = stream.lock();
            if !session.closing {
                session.closing = true;
                session.conn.send_close_notify();
            }
        }
        // What was written, then close_notify, then the FIN: the client
        // reads the final ERROR and a clean end.
        let _ = stream.flush_waiting();
        let _ = stream.socket.shutdown(Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_spans_slices_and_stops_at_its_bound() {
        let a = vec![1u8; 10];
        let b = vec![2u8; CHUNK];
        let bufs = [IoSlice::new(&a), IoSlice::new(&b)];
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = chunk_of(&bufs, 4, &mut slices);
        assert_eq!(count, 2);
        assert_eq!(slices[0].len(), 6);
        assert_eq!(slices[1].len(), CHUNK - 6);
        let count = chunk_of(&bufs, 10 + CHUNK - 3, &mut slices);
        assert_eq!(count, 1);
        assert_eq!(&*slices[0], &[2, 2, 2]);
    }
}
