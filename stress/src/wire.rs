//! A blocking connection that speaks frames with exact control over the bytes
//! on the wire: what fragmentation needs (splits anywhere), what chaos needs
//! (resets, partial frames, malformed frames), and a quick way to read the
//! server's counters.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use protocol::{
    Decoder, ErrorPayload, Flags, Frame, Hello, HelloReply, MessageType, RoomReply, RoomRequest,
    Stats,
};
use serde::Serialize;

use crate::error::{Context, Error, Result};

/// The largest frame this tool accepts from a server: well above any
/// `maxFrameSize` a test sets, and bounded so a broken length can't make it
/// allocate gigabytes.
pub const CLIENT_MAX_FRAME: u32 = 64 << 20;

/// A frame that owns its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    pub kind: MessageType,
    pub flags: Flags,
    pub payload: Vec<u8>,
}

impl OwnedFrame {
    fn from_frame(frame: &Frame<'_>) -> OwnedFrame {
        OwnedFrame {
            kind: frame.kind,
            flags: frame.flags,
            payload: frame.payload.to_vec(),
        }
    }

    /// The payload as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The ERROR payload, if this is a well-formed ERROR.
    pub fn error(&self) -> Option<ErrorPayload> {
        if self.kind != MessageType::Error {
            return None;
        }
        serde_json::from_slice(&self.payload).ok()
    }
}

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

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Eof => f.write_str("the server closed the connection"),
            RecvError::Timeout => f.write_str("timed out waiting for a frame"),
            RecvError::Decode(error) => write!(f, "the server sent an invalid frame: {error}"),
            RecvError::Io(error) => write!(f, "read failed: {error}"),
        }
    }
}

/// Appends one frame with a JSON payload to `out`.
pub fn push_json(out: &mut Vec<u8>, kind: MessageType, value: &impl Serialize) {
    let start = protocol::begin_frame(out, kind, Flags::JSON);
    // Writing JSON into a Vec can't fail for our own payload types.
    let _ = serde_json::to_writer(&mut *out, value);
    let _ = protocol::end_frame(out, start);
}

/// One frame with a JSON payload.
pub fn json_frame(kind: MessageType, value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    push_json(&mut out, kind, value);
    out
}

/// One frame with the given parts.
pub fn raw_frame(kind: MessageType, flags: Flags, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + payload.len());
    let _ = protocol::encode(&mut out, kind, flags, payload);
    out
}

/// A JOIN_ROOM or LEAVE_ROOM frame.
pub fn room_frame(kind: MessageType, room: &str) -> Vec<u8> {
    json_frame(kind, &RoomRequest { room: room.into() })
}

/// A blocking connection with its own frame decoder.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    /// The `connectionId` from the HELLO answer, once there was one.
    pub id: String,
    /// The server's `maxFrameSize`, once known.
    pub max_frame: u32,
}

impl Conn {
    /// Connects, with Nagle off so each write leaves at once.
    pub fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .context(format!("connecting to {addr}"))?;
        Conn::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            decoder: Decoder::new(CLIENT_MAX_FRAME),
            id: String::new(),
            max_frame: protocol::DEFAULT_MAX_FRAME,
        })
    }

    /// Connects and says HELLO; returns the answer too.
    pub fn open(addr: SocketAddr, hello: &Hello) -> Result<(Conn, HelloReply)> {
        let mut conn = Conn::connect(addr)?;
        let reply = conn.hello(hello)?;
        Ok((conn, reply))
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes bytes as they are (one write call as far as the kernel allows).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .context("writing to the server")
    }

    pub fn send(&mut self, kind: MessageType, flags: Flags, payload: &[u8]) -> Result<()> {
        self.write_raw(&raw_frame(kind, flags, payload))
    }

    pub fn send_json(&mut self, kind: MessageType, value: &impl Serialize) -> Result<()> {
        self.write_raw(&json_frame(kind, value))
    }

    /// The next frame, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> std::result::Result<OwnedFrame, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return Ok(OwnedFrame::from_frame(&frame)),
                Ok(None) => {}
                Err(error) => return Err(RecvError::Decode(error)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvError::Timeout);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(RecvError::Io)?;
            match self.stream.read(self.decoder.read_buf()) {
                Ok(0) => return Err(RecvError::Eof),
                Ok(n) => self.decoder.commit(n),
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

    /// The next frame, which must be of `kind`.
    pub fn expect(&mut self, kind: MessageType, timeout: Duration) -> Result<OwnedFrame> {
        match self.recv(timeout) {
            Ok(frame) if frame.kind == kind => Ok(frame),
            Ok(frame) => Err(Error::new(format!(
                "expected {kind}, got {} {}",
                frame.kind,
                frame.text()
            ))),
            Err(error) => Err(Error::new(format!("expected {kind}: {error}"))),
        }
    }

    /// The next frame of `kind`, skipping membership events and deliveries.
    pub fn expect_skipping_messages(
        &mut self,
        kind: MessageType,
        timeout: Duration,
    ) -> Result<OwnedFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.expect_any(left)?;
            if frame.kind == kind {
                return Ok(frame);
            }
            if frame.kind != MessageType::Message {
                return Err(Error::new(format!(
                    "expected {kind}, got {} {}",
                    frame.kind,
                    frame.text()
                )));
            }
        }
    }

    fn expect_any(&mut self, timeout: Duration) -> Result<OwnedFrame> {
        self.recv(timeout)
            .map_err(|error| Error::new(format!("waiting for a frame: {error}")))
    }

    /// Sends HELLO and reads the answer.
    pub fn hello(&mut self, hello: &Hello) -> Result<HelloReply> {
        self.send_json(MessageType::Hello, hello)?;
        let frame = self.expect_skipping_messages(MessageType::Hello, Duration::from_secs(10))?;
        let reply: HelloReply =
            serde_json::from_slice(&frame.payload).context("reading the HELLO answer")?;
        self.id = reply.connection_id.clone();
        self.max_frame = reply.max_frame_size;
        Ok(reply)
    }

    /// Joins a room and reads the ack.
    pub fn join(&mut self, room: &str) -> Result<RoomReply> {
        self.room_request(MessageType::JoinRoom, room)
    }

    /// Leaves a room and reads the ack.
    pub fn leave(&mut self, room: &str) -> Result<RoomReply> {
        self.room_request(MessageType::LeaveRoom, room)
    }

    fn room_request(&mut self, kind: MessageType, room: &str) -> Result<RoomReply> {
        self.write_raw(&room_frame(kind, room))?;
        let frame = self.expect_skipping_messages(kind, Duration::from_secs(10))?;
        serde_json::from_slice(&frame.payload).context(format!("reading the {kind} answer"))
    }

    /// Waits for the server to close the connection; frames before the close
    /// are returned.
    pub fn until_eof(&mut self, timeout: Duration) -> Result<Vec<OwnedFrame>> {
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
                    return Err(Error::new(format!(
                        "waiting for the server to close: {error}"
                    )));
                }
            }
        }
    }

    /// Closes the sending direction (FIN) and leaves the rest to drop.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The server's counters now, read through a fresh connection's HELLO answer
/// (with the `client` crate). The asking connection is counted in
/// `connections`.
pub fn server_stats(addr: SocketAddr) -> Result<Stats> {
    let client = client::Client::connect(addr).context("asking for the stats")?;
    let stats = client
        .stats(Duration::from_secs(10))
        .context("asking for the stats");
    client.close();
    stats
}

/// Polls the server's counters until `done` holds or `timeout` passes;
/// returns the last stats seen and whether `done` held.
pub fn wait_for_stats(
    addr: SocketAddr,
    timeout: Duration,
    done: impl Fn(&Stats) -> bool,
) -> Result<(Stats, bool)> {
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
