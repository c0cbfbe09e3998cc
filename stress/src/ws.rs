//! WebSocket for the bench (`bench --ws`): a Relay byte stream over a
//! WebSocket connection, one Relay frame per binary message, so the swarm
//! and the publisher run unchanged over Relay's WebSocket port.
//!
//! The two directions are kept apart, sans-IO, and given the socket on
//! each call: [`WsOut`] frames (and masks) what is written, [`WsIn`] reads
//! the upgrade's answer and then unframes what the server sends. The
//! upgrade request is sent first and the first frames go right behind it,
//! without waiting for the 101 (the server reads them after the request).
//! tungstenite parses and formats the headers and the HTTP answer.

use std::io::{self, Cursor, Read, Write};
use std::net::SocketAddr;

use tungstenite::handshake::client::{Response, generate_key};
use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::machine::TryParse;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::rng::Rng;

/// The longest upgrade answer read.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes read from the socket at a time: the client side of a fan-out
/// bench must not be what limits it.
const READ_CHUNK: usize = 64 * 1024;

/// The write direction: the upgrade request, then masked binary messages.
#[derive(Debug)]
pub struct WsOut {
    out: Vec<u8>,
    sent: usize,
    /// Relay bytes written that do not yet make a whole frame.
    partial: Vec<u8>,
    rng: Rng,
}

/// The read direction: the upgrade's answer, then unmasked messages.
#[derive(Debug)]
pub struct WsIn {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The accept value the answer must carry; `None` once it did.
    expect_accept: Option<String>,
    /// Payload bytes left in the current frame, and whether they are Relay
    /// bytes (binary or continuation) or to be skipped (control).
    left: u64,
    skipping: bool,
    closed: bool,
}

/// A fresh pair for a connection to `addr`: the request is already queued.
pub fn pair(addr: SocketAddr) -> (WsIn, WsOut) {
    let key = generate_key();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let accept = derive_accept_key(key.as_bytes());
    (
        WsIn {
            buf: Vec::new(),
            start: 0,
            end: 0,
            expect_accept: Some(accept),
            left: 0,
            skipping: false,
            closed: false,
        },
        WsOut {
            out: request.into_bytes(),
            sent: 0,
            partial: Vec::new(),
            rng: Rng::new(Rng::clock_seed()),
        },
    )
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl WsOut {
    /// Bytes queued and not yet sent.
    pub fn pending(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Frames the whole Relay frames of `relay` (keeping a partial tail for
    /// later) as masked binary messages, queued.
    pub fn frame(&mut self, relay: &[u8]) {
        self.partial.extend_from_slice(relay);
        let mut at = 0;
        while let Some(prefix) = self.partial.get(at..at + 4) {
            let total =
                4 + u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
            let Some(frame) = self.partial.get(at..at + total) else {
                break;
            };
            let mask = (self.rng.next_u64() as u32).to_ne_bytes();
            let header = FrameHeader {
                opcode: OpCode::Data(Data::Binary),
                mask: Some(mask),
                ..FrameHeader::default()
            };
            if self.sent == self.out.len() {
                self.out.clear();
                self.sent = 0;
            }
            // Writing into a Vec cannot fail.
            let _ = header.format(total as u64, &mut self.out);
            let start = self.out.len();
            self.out.extend_from_slice(frame);
            for (i, byte) in self.out[start..].iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
            at += total;
        }
        self.partial.drain(..at);
    }

    /// Sends what is queued as far as `socket` takes it; `WouldBlock` from
    /// a non-blocking socket passes up.
    pub fn send(&mut self, socket: &mut impl Write) -> io::Result<()> {
        while self.sent < self.out.len() {
            match socket.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.sent = 0;
        Ok(())
    }
}

impl WsIn {
    /// Relay bytes into `out`, read from `socket` as needed; 0 at the end
    /// (a close frame, or the socket's end).
    /// As many whole or partial payloads as are buffered and fit go out in
    /// one call, so the caller sees reads as large as on TCP.
    pub fn read(&mut self, socket: &mut impl Read, out: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            if self.left > 0 && self.start < self.end && filled < out.len() {
                let n = (self.left as usize)
                    .min(self.end - self.start)
                    .min(out.len() - filled);
                let bytes = &self.buf[self.start..self.start + n];
                self.start += n;
                self.left -= n as u64;
                if !self.skipping {
                    out[filled..filled + n].copy_from_slice(bytes);
                    filled += n;
                }
                continue;
            }
            if self.left == 0 && self.start < self.end && !self.closed {
                let took = if self.expect_accept.is_some() {
                    self.upgrade()?
                } else {
                    self.header()?
                };
                if took {
                    continue;
                }
            }
            if filled > 0 || out.is_empty() {
                return Ok(filled);
            }
            if self.closed {
                return Ok(0);
            }
            self.fill(socket)?;
        }
    }

    /// Reads more from `socket`, after what is buffered.
    fn fill(&mut self, socket: &mut impl Read) -> io::Result<()> {
        if self.buf.is_empty() {
            self.buf = vec![0; READ_CHUNK];
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_HEAD {
                return Err(invalid("no WebSocket upgrade answer in 16 KiB"));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match socket.read(&mut self.buf[self.end..])? {
            0 => {
                self.closed = true;
                Ok(())
            }
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Takes the upgrade's answer if it is all there; true if it was.
    fn upgrade(&mut self) -> io::Result<bool> {
        let parsed = Response::try_parse(&self.buf[self.start..self.end])
            .map_err(|e| invalid(e.to_string()))?;
        let Some((used, response)) = parsed else {
            return Ok(false);
        };
        if response.status().as_u16() != 101 {
            return Err(invalid(format!(
                "the server refused the WebSocket upgrade: {}",
                response.status()
            )));
        }
        let accept = response
            .headers()
            .get("Sec-WebSocket-Accept")
            .and_then(|v| v.to_str().ok());
        if accept != self.expect_accept.as_deref() {
            return Err(invalid(
                "a wrong Sec-WebSocket-Accept in the upgrade answer",
            ));
        }
        self.expect_accept = None;
        self.start += used;
        Ok(true)
    }

    /// Takes the next frame header if it is all there; true if it was.
    fn header(&mut self) -> io::Result<bool> {
        let mut cursor = Cursor::new(&self.buf[self.start..self.end]);
        let Some((header, len)) =
            FrameHeader::parse(&mut cursor).map_err(|e| invalid(e.to_string()))?
        else {
            return Ok(false);
        };
        if header.mask.is_some() {
            return Err(invalid("a masked frame from the server"));
        }
        self.start += cursor.position() as usize;
        self.left = len;
        self.skipping = !matches!(header.opcode, OpCode::Data(Data::Binary | Data::Continue));
        if header.opcode == OpCode::Control(Control::Close) {
            self.closed = true;
        }
        Ok(true)
    }
}

/// A blocking read half (the publisher's drain thread).
#[derive(Debug)]
pub struct WsReader<S> {
    pub socket: S,
    pub ws: WsIn,
}

impl<S: Read> Read for WsReader<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.ws.read(&mut self.socket, buf)
    }
}

/// A blocking write half (the publisher).
#[derive(Debug)]
pub struct WsWriter<S> {
    pub socket: S,
    pub ws: WsOut,
}

impl<S: Write> Write for WsWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ws.frame(buf);
        self.ws.send(&mut self.socket)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ws.send(&mut self.socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_the_round_trip_whatever_the_split() {
        let (_, mut out) = pair(SocketAddr::from(([127, 0, 0, 1], 1)));
        out.out.clear();
        let relay = [
            vec![0, 0, 0, 5, 1, 1, 1, b'{', b'}'],
            vec![0, 0, 0, 3, 1, 5, 0],
        ]
        .concat();
        for piece in relay.chunks(3) {
            out.frame(piece);
        }
        assert!(out.partial.is_empty());
        // Two masked binary messages of 9 and 7 bytes.
        assert_eq!(out.out.len(), 2 + 4 + 9 + 2 + 4 + 7);
        assert_eq!(&out.out[..2], &[0x82, 0x80 | 9]);
    }

    #[test]
    fn the_answer_then_frames_come_out_as_relay_bytes() {
        let (mut input, _) = pair(SocketAddr::from(([127, 0, 0, 1], 1)));
        let accept = input.expect_accept.clone().unwrap();
        let mut wire = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        wire.extend_from_slice(&[0x82, 7, 0, 0, 0, 3, 1, 5, 0]);
        wire.extend_from_slice(&[0x8a, 2, b'h', b'i']);
        wire.extend_from_slice(&[0x82, 7, 0, 0, 0, 3, 1, 5, 1]);
        let mut socket = Cursor::new(wire);
        let mut out = [0u8; 64];
        let mut got = Vec::new();
        loop {
            let n = input.read(&mut socket, &mut out).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(got, [0, 0, 0, 3, 1, 5, 0, 0, 0, 0, 3, 1, 5, 1]);
    }
}
