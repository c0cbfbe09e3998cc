//! [`Raw`]: the [`Conn`] for tests, whose failures are panics that say what
//! was expected and what came, and [`wait_until`].

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use protocol::{ErrorPayload, HelloReply, MessageType, Stats};
use serde::Serialize;
use serde_json::{Value, json};

use crate::conn::{Conn, RecvError};
use crate::frames::OwnedFrame;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Waits until `condition` holds, checking every few milliseconds; fails the
/// test after [`WAIT`].
///
/// # Panics
///
/// After [`WAIT`], naming `what` was waited for.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A raw protocol client for tests: frames in, frames out, nothing hidden, so
/// a test sees exactly what a client would. Every wait is bounded by
/// [`WAIT`].
///
/// Each method panics when the server does not do what it expects; the
/// message says what was expected and what came instead.
#[derive(Debug)]
pub struct Raw {
    conn: Conn,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let conn = Conn::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        Raw { conn }
    }

    /// Connects and says HELLO; returns the client and the server's answer,
    /// which must be the next frame.
    pub fn hello(addr: SocketAddr, hello: Value) -> (Raw, HelloReply) {
        let mut raw = Raw::connect(addr);
        raw.send_json(MessageType::Hello, &hello);
        let reply = parse(&raw.expect(MessageType::Hello), "the HELLO answer");
        (raw, reply)
    }

    /// The socket, to clone a reader or writer for another thread.
    pub fn stream(&self) -> &TcpStream {
        self.conn.stream()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.conn.write_raw(bytes).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn send_json(&mut self, kind: MessageType, value: &impl Serialize) {
        self.conn
            .send_json(kind, value)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Joins `room`; room traffic that arrives before the answer is skipped.
    pub fn join(&mut self, room: &str) -> Value {
        self.send_json(MessageType::JoinRoom, &json!({ "room": room }));
        self.expect_skipping_messages(MessageType::JoinRoom).json()
    }

    /// Leaves `room`; the answer must be the next frame.
    pub fn leave(&mut self, room: &str) -> Value {
        self.send_json(MessageType::LeaveRoom, &json!({ "room": room }));
        self.expect(MessageType::LeaveRoom).json()
    }

    pub fn publish(&mut self, room: &str, content: Value) {
        self.send_json(
            MessageType::Message,
            &json!({ "room": room, "content": content }),
        );
    }

    /// The next frame; the connection must not close first.
    pub fn recv(&mut self) -> OwnedFrame {
        self.next().expect("the server closed the connection")
    }

    /// The next frame, which must be of `kind`.
    pub fn expect(&mut self, kind: MessageType) -> OwnedFrame {
        let frame = self.recv();
        assert_eq!(
            frame.kind,
            kind,
            "expected {kind}, got {} {}",
            frame.kind,
            frame.text()
        );
        frame
    }

    /// The next frame of `kind`, skipping room traffic (MESSAGE frames).
    pub fn expect_skipping_messages(&mut self, kind: MessageType) -> OwnedFrame {
        self.conn
            .expect_skipping_messages(kind, WAIT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next frame must be an ERROR with `code`; returns its payload.
    pub fn expect_error(&mut self, code: &str) -> ErrorPayload {
        let error = self.recv().expect_error();
        assert_eq!(error.code.as_str(), code, "{error:?}");
        error
    }

    /// The server must close the connection next (no more frames).
    pub fn expect_close(&mut self) {
        if let Some(frame) = self.next() {
            panic!(
                "expected the connection to close, got {} {}",
                frame.kind,
                frame.text()
            );
        }
    }

    /// A fatal ERROR with `code`, then the close.
    pub fn expect_fatal(&mut self, code: &str) {
        let error = self.expect_error(code);
        assert!(error.fatal, "{code} should be fatal: {error:?}");
        self.expect_close();
    }

    /// Counters, read the way a client reads them: HELLO again. The answer
    /// must be the next frame.
    pub fn stats(&mut self) -> Stats {
        self.send_json(MessageType::Hello, &json!({}));
        let reply: HelloReply = parse(&self.expect(MessageType::Hello), "the HELLO answer");
        reply.stats.expect("HELLO answers carry stats")
    }

    /// Closes with a reset (RST) instead of a FIN.
    pub fn reset(self) {
        self.conn.reset().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The frames the server sends, until it closes the connection (with a FIN
/// or a reset).
impl Iterator for Raw {
    type Item = OwnedFrame;

    /// The next frame, or `None` once the server closed the connection.
    ///
    /// # Panics
    ///
    /// If nothing comes within [`WAIT`], or what comes is not a frame.
    fn next(&mut self) -> Option<OwnedFrame> {
        match self.conn.recv(WAIT) {
            Ok(frame) => Some(frame),
            Err(RecvError::Eof) => None,
            Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(error) => panic!("waiting for a frame: {error}"),
        }
    }
}

/// The payload of `frame` as a `T`; `what` names it in the panic.
fn parse<T: serde::de::DeserializeOwned>(frame: &OwnedFrame, what: &str) -> T {
    serde_json::from_slice(&frame.payload)
        .unwrap_or_else(|e| panic!("{what} does not parse ({e}): {}", frame.text()))
}
