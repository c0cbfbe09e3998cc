#![allow(clippy::unwrap_used)]
//! A raw protocol client for the server's integration tests: frames in,
//! frames out, nothing hidden, so tests see exactly what a client would.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use protocol::{Decoder, ErrorPayload, Flags, Frame, HelloReply, MessageType};
use serde_json::{Value, json};
use server::{Config, RunningServer, Server};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn start(config: Config) -> RunningServer {
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    Server::bind(config).unwrap().spawn().unwrap()
}

pub fn start_default() -> RunningServer {
    start(Config::default())
}

/// Waits until `condition` holds, failing the test after [`WAIT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Owned {
    pub kind: MessageType,
    pub flags: Flags,
    pub payload: Vec<u8>,
}

impl Owned {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{:?} payload is not JSON ({e}): {:?}",
                self.kind,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }

    pub fn error(&self) -> ErrorPayload {
        assert_eq!(
            self.kind,
            MessageType::Error,
            "expected ERROR, got {:?} {}",
            self.kind,
            String::from_utf8_lossy(&self.payload)
        );
        serde_json::from_slice(&self.payload).unwrap()
    }
}

pub struct Raw {
    pub stream: TcpStream,
    decoder: Decoder,
}

pub fn frame_bytes(kind: MessageType, flags: Flags, payload: &[u8]) -> Vec<u8> {
    Frame::new(kind, flags, payload).to_vec().unwrap()
}

pub fn json_frame(kind: MessageType, value: &Value) -> Vec<u8> {
    frame_bytes(kind, Flags::JSON, &serde_json::to_vec(value).unwrap())
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Raw {
            stream,
            decoder: Decoder::new(u32::MAX),
        }
    }

    /// Connects and says HELLO; returns the client and the server's answer.
    pub fn hello(addr: SocketAddr, hello: Value) -> (Raw, HelloReply) {
        let mut raw = Raw::connect(addr);
        raw.send_json(MessageType::Hello, &hello);
        let reply = raw.expect(MessageType::Hello);
        let reply: HelloReply = serde_json::from_slice(&reply.payload).unwrap();
        (raw, reply)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send_json(&mut self, kind: MessageType, value: &Value) {
        let bytes = json_frame(kind, value);
        self.send_raw(&bytes);
    }

    /// Joins `room`; room traffic that arrives before the answer is skipped.
    pub fn join(&mut self, room: &str) -> Value {
        self.send_json(MessageType::JoinRoom, &json!({ "room": room }));
        self.expect_after_messages(MessageType::JoinRoom).json()
    }

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

    /// The next frame, or `None` at end of stream.
    pub fn next(&mut self) -> Option<Owned> {
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return Some(Owned {
                    kind: frame.kind,
                    flags: frame.flags,
                    payload: frame.payload.to_vec(),
                });
            }
            let n = match self.stream.read(self.decoder.read_buf()) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read failed: {e}"),
            };
            if n == 0 {
                return None;
            }
            self.decoder.commit(n);
        }
    }

    pub fn recv(&mut self) -> Owned {
        self.next().expect("the server closed the connection")
    }

    /// The next frame, which must be of `kind`.
    pub fn expect(&mut self, kind: MessageType) -> Owned {
        let frame = self.recv();
        assert_eq!(
            frame.kind,
            kind,
            "expected {kind}, got {} {}",
            frame.kind,
            String::from_utf8_lossy(&frame.payload)
        );
        frame
    }

    /// The next frame of `kind`, skipping room traffic (MESSAGE frames).
    pub fn expect_after_messages(&mut self, kind: MessageType) -> Owned {
        loop {
            let frame = self.recv();
            if frame.kind != MessageType::Message || kind == MessageType::Message {
                assert_eq!(
                    frame.kind,
                    kind,
                    "{}",
                    String::from_utf8_lossy(&frame.payload)
                );
                return frame;
            }
        }
    }

    /// The next frame must be an ERROR with `code`; returns its payload.
    pub fn expect_error(&mut self, code: &str) -> ErrorPayload {
        let error = self.recv().error();
        assert_eq!(error.code.as_str(), code, "{error:?}");
        error
    }

    /// The server must close the connection next (no more frames).
    pub fn expect_close(&mut self) {
        if let Some(frame) = self.next() {
            panic!(
                "expected the connection to close, got {} {}",
                frame.kind,
                String::from_utf8_lossy(&frame.payload)
            );
        }
    }

    /// A fatal ERROR with `code`, then the close.
    pub fn expect_fatal(&mut self, code: &str) {
        let error = self.expect_error(code);
        assert!(error.fatal, "{code} should be fatal: {error:?}");
        self.expect_close();
    }

    /// Counters, read the way a client reads them: HELLO again.
    pub fn stats(&mut self) -> protocol::Stats {
        self.send_json(MessageType::Hello, &json!({}));
        let reply: HelloReply =
            serde_json::from_slice(&self.expect(MessageType::Hello).payload).unwrap();
        reply.stats.expect("HELLO answers carry stats")
    }
}
