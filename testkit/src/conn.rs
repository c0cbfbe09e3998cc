//! [`Conn`]: a blocking frame connection with exact control over the bytes on
//! the wire, whose every failure is a value ([`RecvError`], [`WireError`] or
//! the caller's own error type), never a panic.

use std::fmt;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use protocol::{Decoder, Flags, Hello, HelloReply, MessageType, RoomReply, Stats};
use serde::Serialize;

use crate::frames::{OwnedFrame, json_frame, raw_frame, room_frame};

/// The largest frame a [`Conn`] accepts from a server: well above any
/// `maxFrameSize` a test sets, and bounded so a broken length can't make it
/// allocate gigabytes.
pub const CLIENT_MAX_FRAME: u32 = 64 << 20;

/// How long connecting, and each answer [`Conn`]'s request methods wait for
/// (HELLO, JOIN_ROOM, LEAVE_ROOM), may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no frame came.
#[derive(Debug)]
pub enum RecvError {
    /// The server closed the connection.
    Eof,
    /// Nothing complete arrived in time.
    Timeout,
    /// The server sent bytes that are not a frame stream.
    Decode(protocol::DecodeError),
    Io(io::Error),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Eof => f.write_str("the server closed the connection"),
            RecvError::Timeout => f.write_str("timed out waiting for a frame"),
            RecvError::Decode(error) => write!(f, "the server sent an invalid frame: {error}"),
            RecvError::Io(error) => write!(f, "read failed: {error}"),
        }
    }
}

impl std::error::Error for RecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecvError::Decode(error) => Some(error),
            RecvError::Io(error) => Some(error),
            RecvError::Eof | RecvError::Timeout => None,
        }
    }
}

/// What went wrong in one of [`Conn`]'s steps; its message says which step.
#[derive(Debug)]
pub enum WireError {
    /// A socket call failed.
    Io { doing: String, source: io::Error },
    /// No frame came: closed, timed out, or not a frame stream.
    Recv { doing: String, source: RecvError },
    /// A frame of another kind came.
    Unexpected {
        expected: MessageType,
        got: OwnedFrame,
    },
    /// An answer's payload did not parse.
    Payload {
        doing: String,
        source: serde_json::Error,
    },
    /// A HELLO answer without the server's counters.
    NoStats,
}

impl WireError {
    fn io(doing: impl Into<String>, source: io::Error) -> WireError {
        WireError::Io {
            doing: doing.into(),
            source,
        }
    }

    fn recv(doing: impl Into<String>, source: RecvError) -> WireError {
        WireError::Recv {
            doing: doing.into(),
            source,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io { doing, source } => write!(f, "{doing}: {source}"),
            WireError::Recv { doing, source } => write!(f, "{doing}: {source}"),
            WireError::Unexpected { expected, got } => {
                write!(f, "expected {expected}, got {} {}", got.kind, got.text())
            }
            WireError::Payload { doing, source } => write!(f, "{doing}: {source}"),
            WireError::NoStats => f.write_str("the HELLO answer carries no stats"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io { source, .. } => Some(source),
            WireError::Recv { source, .. } => Some(source),
            WireError::Payload { source, .. } => Some(source),
            WireError::Unexpected { .. } | WireError::NoStats => None,
        }
    }
}

/// A blocking connection with its own frame decoder.
///
/// Its fallible methods return `Result<_, E>`: [`WireError`] by default, or
/// any error type that converts from it, so a tool gets its own error type
/// without wrapping every method (`type Conn = testkit::Conn<MyError>;`).
/// [`Conn::recv`] returns the finer [`RecvError`] whatever `E` is.
pub struct Conn<E = WireError> {
    stream: TcpStream,
    decoder: Decoder,
    /// The `connectionId` from the HELLO answer, once there was one.
    pub id: String,
    /// The server's `maxFrameSize`, once known.
    pub max_frame: u32,
    error: PhantomData<fn() -> E>,
}

impl<E> fmt::Debug for Conn<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("stream", &self.stream)
            .field("decoder", &self.decoder)
            .field("id", &self.id)
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl<E> Conn<E> {
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The next frame, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<OwnedFrame, RecvError> {
        recv_frame(&mut self.decoder, &mut self.stream, timeout)
    }

    /// Closes both directions (the FIN goes out at once) and leaves the rest
    /// to drop.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl<E: From<WireError>> Conn<E> {
    /// Connects, with Nagle off so each write leaves at once.
    pub fn connect(addr: SocketAddr) -> Result<Conn<E>, E> {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)
            .map_err(|e| WireError::io(format!("connecting to {addr}"), e))?;
        Self::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Result<Conn<E>, E> {
        stream
            .set_nodelay(true)
            .map_err(|e| WireError::io("turning Nagle off", e))?;
        Ok(Conn {
            stream,
            decoder: Decoder::new(CLIENT_MAX_FRAME),
            id: String::new(),
            max_frame: protocol::DEFAULT_MAX_FRAME,
            error: PhantomData,
        })
    }

    /// Connects and says HELLO; returns the answer too.
    pub fn open(addr: SocketAddr, hello: &Hello) -> Result<(Conn<E>, HelloReply), E> {
        let mut conn = Self::connect(addr)?;
        let reply = conn.hello(hello)?;
        Ok((conn, reply))
    }

    /// Writes bytes as they are (one write call as far as the kernel allows).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.stream
            .write_all(bytes)
            .map_err(|e| WireError::io("writing to the server", e).into())
    }

    pub fn send(&mut self, kind: MessageType, flags: Flags, payload: &[u8]) -> Result<(), E> {
        self.write_raw(&raw_frame(kind, flags, payload))
    }

    pub fn send_json(&mut self, kind: MessageType, value: &impl Serialize) -> Result<(), E> {
        self.write_raw(&json_frame(kind, value))
    }

    /// The next frame, which must be of `kind`.
    pub fn expect(&mut self, kind: MessageType, timeout: Duration) -> Result<OwnedFrame, E> {
        match self.recv(timeout) {
            Ok(frame) if frame.kind == kind => Ok(frame),
            Ok(got) => Err(WireError::Unexpected {
                expected: kind,
                got,
            }
            .into()),
            Err(error) => Err(WireError::recv(format!("expected {kind}"), error).into()),
        }
    }

    /// The next frame of `kind`, skipping membership events and deliveries
    /// (MESSAGE frames) that come before it.
    pub fn expect_skipping_messages(
        &mut self,
        kind: MessageType,
        timeout: Duration,
    ) -> Result<OwnedFrame, E> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self
                .recv(left)
                .map_err(|error| WireError::recv("waiting for a frame", error))?;
            if frame.kind == kind {
                return Ok(frame);
            }
            if frame.kind != MessageType::Message {
                return Err(WireError::Unexpected {
                    expected: kind,
                    got: frame,
                }
                .into());
            }
        }
    }

    /// Sends HELLO and reads the answer.
    pub fn hello(&mut self, hello: &Hello) -> Result<HelloReply, E> {
        self.send_json(MessageType::Hello, hello)?;
        let frame = self.expect_skipping_messages(MessageType::Hello, REPLY_TIMEOUT)?;
        let reply: HelloReply =
            serde_json::from_slice(&frame.payload).map_err(|source| WireError::Payload {
                doing: "reading the HELLO answer".into(),
                source,
            })?;
        self.id = reply.connection_id.clone();
        self.max_frame = reply.max_frame_size;
        Ok(reply)
    }

    /// Joins a room and reads the answer.
    pub fn join(&mut self, room: &str) -> Result<RoomReply, E> {
        self.room_request(MessageType::JoinRoom, room)
    }

    /// Leaves a room and reads the answer.
    pub fn leave(&mut self, room: &str) -> Result<RoomReply, E> {
        self.room_request(MessageType::LeaveRoom, room)
    }

    fn room_request(&mut self, kind: MessageType, room: &str) -> Result<RoomReply, E> {
        self.write_raw(&room_frame(kind, room))?;
        let frame = self.expect_skipping_messages(kind, REPLY_TIMEOUT)?;
        serde_json::from_slice(&frame.payload).map_err(|source| {
            WireError::Payload {
                doing: format!("reading the {kind} answer"),
                source,
            }
            .into()
        })
    }

    /// Waits for the server to close the connection (a FIN or a reset);
    /// frames before the close are returned.
    pub fn until_eof(&mut self, timeout: Duration) -> Result<Vec<OwnedFrame>, E> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(frame) => frames.push(frame),
                Err(RecvError::Eof) => return Ok(frames),
                Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(frames);
                }
                Err(error) => {
                    return Err(WireError::recv("waiting for the server to close", error).into());
                }
            }
        }
    }

    /// Closes with a reset (RST) instead of a FIN: `SO_LINGER` with a zero
    /// timeout, then close. What the peer had not read yet is discarded.
    pub fn reset(self) -> Result<(), E> {
        reset_on_close(&self.stream)
            .map_err(|error| WireError::io("setting SO_LINGER", error).into())
    }
}

/// Makes the next close of `socket` send RST instead of FIN (`SO_LINGER`
/// with a zero timeout): what the peer had not read yet is discarded.
/// A byte stream over a TCP socket (plain, or TLS over it): the socket
/// carries the read timeout.
pub(crate) trait OverTcp: Read {
    fn tcp(&self) -> &TcpStream;
}

impl OverTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// The next frame `decoder` completes from `stream`, waiting at most
/// `timeout`: the one receive loop of [`Conn`] and the TLS client.
pub(crate) fn recv_frame(
    decoder: &mut Decoder,
    stream: &mut impl OverTcp,
    timeout: Duration,
) -> Result<OwnedFrame, RecvError> {
    let deadline = Instant::now() + timeout;
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(OwnedFrame::from_frame(&frame)),
            Ok(None) => {}
            Err(error) => return Err(RecvError::Decode(error)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RecvError::Timeout);
        }
        stream
            .tcp()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(RecvError::Io)?;
        match stream.read(decoder.read_buf()) {
            Ok(0) => return Err(RecvError::Eof),
            Ok(n) => decoder.commit(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(RecvError::Timeout);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RecvError::Io(e)),
        }
    }
}

pub fn reset_on_close(socket: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from `linger`,
    // which lives across the call; the fd is open while `socket` is.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The server's counters now, read through a fresh connection's HELLO
/// answer. The asking connection is counted in `connections`.
pub fn server_stats(addr: SocketAddr) -> Result<Stats, WireError> {
    let (conn, reply) = Conn::<WireError>::open(addr, &Hello::default())?;
    conn.shutdown();
    reply.stats.ok_or(WireError::NoStats)
}

/// Polls the server's counters until `done` holds or `timeout` passes;
/// returns the last stats seen and whether `done` held.
pub fn wait_for_stats(
    addr: SocketAddr,
    timeout: Duration,
    done: impl Fn(&Stats) -> bool,
) -> Result<(Stats, bool), WireError> {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = server_stats(addr)?;
        if done(&stats) {
            return Ok((stats, true));
        }
        if Instant::now() >= deadline {
            return Ok((stats, false));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
