//! WebSocket for the bench (`bench --ws`): a Relay byte stream over a
//! WebSocket connection, one Relay frame per binary message, so the swarm
//! and the publisher run unchanged over Relay's WebSocket port.
//!
//! The two directions are kept apart, sans-IO: [`WsOut`] frames (and
//! masks) what is written, [`WsIn`] takes the upgrade's answer and then
//! finds each message in the bytes the caller read, as it finds each
//! frame on TCP. The upgrade request is sent first and the first frames go
//! right behind it, without waiting for the 101 (the server reads them
//! after the request). tungstenite parses and formats the headers and the
//! HTTP answer.
//!
//! The swarm reads the socket into its own buffer, as on TCP, and handles
//! each message's payload where it lies: no Relay byte is copied on the
//! way (before, each was copied from a buffer here into the swarm's, and
//! the bench's WebSocket client cost it as much as the server's writes).
//! Only a fragmented message, which the server never sends, is put
//! together in a buffer of its own.

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
/// Bytes the publisher's drain reads from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// The longest message taken: one Relay frame of the largest a client
/// accepts, so a bad length cannot make a reader buffer without end.
const MAX_MESSAGE: u64 = 4 + crate::wire::CLIENT_MAX_FRAME as u64;

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
    /// The accept value the answer must carry; `None` once it did.
    expect_accept: Option<String>,
    /// The last header parsed, to know the next one that is the same
    /// bytes without parsing it again (a fan-out's messages are alike).
    last: Option<Header>,
    /// The fragments so far of a fragmented binary message.
    fragments: Option<Vec<u8>>,
    closed: bool,
}

/// A header as tungstenite parsed it, with the bytes it was parsed from.
#[derive(Debug, Clone, Copy)]
struct Header {
    bytes: [u8; MAX_WS_HEADER],
    len: usize,
    opcode: OpCode,
    is_final: bool,
    payload: u64,
}

impl Header {
    /// Whether `bytes` start with this header's bytes. The usual lengths
    /// (2 bytes, 4 with a 16-bit length) are compared as one word: a call
    /// to `memcmp` for them cost the swarm more than the rest of the
    /// unframing.
    #[inline]
    fn starts(&self, bytes: &[u8]) -> bool {
        match self.len {
            2 => bytes.first_chunk::<2>() == self.bytes.first_chunk::<2>(),
            4 => bytes.first_chunk::<4>() == self.bytes.first_chunk::<4>(),
            len => bytes.get(..len) == self.bytes.get(..len),
        }
    }
}

/// The longest WebSocket header (RFC 6455 5.2).
const MAX_WS_HEADER: usize = 14;

/// What the next bytes from the server held.
#[derive(Debug, PartialEq, Eq)]
pub enum Unframed<'a> {
    /// A binary message's payload: one Relay frame.
    Relay(&'a [u8]),
    /// The last fragment of a fragmented message: its payload is in
    /// [`WsIn::take_fragments`].
    Fragmented,
    /// The upgrade's answer, a control frame, a fragment before the last.
    Skipped,
    /// The server's close frame: nothing follows.
    Closed,
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
            expect_accept: Some(accept),
            last: None,
            fragments: None,
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

/// XORs a payload with its mask (RFC 6455 5.3), eight bytes at a time:
/// byte by byte, masking cost the publisher more than its socket writes.
fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let key = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ key).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so at the mask's first byte.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
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
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        if self.partial.is_empty() {
            // The publisher writes whole frames: framed from where they lie.
            let used = self.frame_whole(relay);
            self.partial.extend_from_slice(&relay[used..]);
        } else {
            let mut partial = std::mem::take(&mut self.partial);
            partial.extend_from_slice(relay);
            let used = self.frame_whole(&partial);
            partial.drain(..used);
            self.partial = partial;
        }
    }

    /// Frames the whole Relay frames at the start of `relay` into `out`;
    /// returns the bytes they took.
    fn frame_whole(&mut self, relay: &[u8]) -> usize {
        let mut at = 0;
        while let Some(prefix) = relay[at..].first_chunk::<4>() {
            let total = 4 + u32::from_be_bytes(*prefix) as usize;
            let Some(frame) = relay.get(at..at + total) else {
                break;
            };
            let mask = (self.rng.next_u64() as u32).to_ne_bytes();
            let header = FrameHeader {
                opcode: OpCode::Data(Data::Binary),
                mask: Some(mask),
                ..FrameHeader::default()
            };
            // Writing into a Vec cannot fail.
            let _ = header.format(total as u64, &mut self.out);
            let start = self.out.len();
            self.out.extend_from_slice(frame);
            apply_mask(&mut self.out[start..], mask);
            at += total;
        }
        at
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
    /// The next whole thing in `bytes`, which go on from where the last
    /// call's ended, and how many bytes it took; `None` while `bytes`
    /// hold only part of it. A binary message's payload is handed as it
    /// lies in `bytes`.
    pub fn next<'a>(&mut self, bytes: &'a [u8]) -> io::Result<Option<(Unframed<'a>, usize)>> {
        if self.closed {
            return Ok(Some((Unframed::Closed, 0)));
        }
        if self.expect_accept.is_some() {
            return Ok(self.upgrade(bytes)?.map(|used| (Unframed::Skipped, used)));
        }
        let Some(header) = self.header(bytes)? else {
            return Ok(None);
        };
        let so_far = self.fragments.as_ref().map_or(0, Vec::len) as u64;
        if so_far.saturating_add(header.payload) > MAX_MESSAGE {
            return Err(invalid(format!(
                "a message of more than {MAX_MESSAGE} bytes, longer than one Relay frame"
            )));
        }
        let Some(end) = usize::try_from(header.payload)
            .ok()
            .and_then(|payload| payload.checked_add(header.len))
            .filter(|&end| end <= bytes.len())
        else {
            return Ok(None);
        };
        let payload = &bytes[header.len..end];
        let unframed = match header.opcode {
            OpCode::Data(Data::Binary) if header.is_final && self.fragments.is_none() => {
                Unframed::Relay(payload)
            }
            OpCode::Data(Data::Binary) if self.fragments.is_none() => {
                self.fragments = Some(payload.to_vec());
                Unframed::Skipped
            }
            OpCode::Data(Data::Continue) => match self.fragments.as_mut() {
                Some(fragments) => {
                    fragments.extend_from_slice(payload);
                    if header.is_final {
                        Unframed::Fragmented
                    } else {
                        Unframed::Skipped
                    }
                }
                None => return Err(invalid("a continuation frame outside a message")),
            },
            OpCode::Data(_) => {
                return Err(invalid(
                    "a text message, or a new message inside a fragmented one",
                ));
            }
            OpCode::Control(Control::Close) => {
                self.closed = true;
                Unframed::Closed
            }
            OpCode::Control(_) => Unframed::Skipped,
        };
        Ok(Some((unframed, end)))
    }

    /// The payload of the fragmented message [`Unframed::Fragmented`]
    /// announced.
    pub fn take_fragments(&mut self) -> Vec<u8> {
        self.fragments.take().unwrap_or_default()
    }

    /// Whether the server's close frame came.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Takes the upgrade's answer if it is all there: the bytes it took.
    fn upgrade(&mut self, bytes: &[u8]) -> io::Result<Option<usize>> {
        let parsed = Response::try_parse(bytes).map_err(|e| invalid(e.to_string()))?;
        let Some((used, response)) = parsed else {
            if bytes.len() > MAX_HEAD {
                return Err(invalid("no WebSocket upgrade answer in 16 KiB"));
            }
            return Ok(None);
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
        Ok(Some(used))
    }

    /// The header at the start of `bytes`, if it is all there: the last
    /// one again when the bytes are the same, else as tungstenite parses
    /// it.
    fn header(&mut self, bytes: &[u8]) -> io::Result<Option<Header>> {
        if let Some(last) = self.last
            && last.starts(bytes)
        {
            return Ok(Some(last));
        }
        let mut cursor = Cursor::new(bytes);
        let Some((header, payload)) =
            FrameHeader::parse(&mut cursor).map_err(|e| invalid(e.to_string()))?
        else {
            return Ok(None);
        };
        if header.mask.is_some() {
            return Err(invalid("a masked frame from the server"));
        }
        let len = cursor.position() as usize;
        let mut parsed = Header {
            bytes: [0; MAX_WS_HEADER],
            len,
            opcode: header.opcode,
            is_final: header.is_final,
            payload,
        };
        parsed.bytes[..len].copy_from_slice(&bytes[..len]);
        self.last = Some(parsed);
        Ok(Some(parsed))
    }
}

/// A blocking read half (the publisher's drain thread): a Relay byte
/// stream, so each payload is copied out to the reader.
#[derive(Debug)]
pub struct WsReader<S> {
    socket: S,
    ws: WsIn,
    buf: Vec<u8>,
    /// `buf[start..end]` is read and not yet unframed.
    start: usize,
    end: usize,
    /// A payload partly copied out: its bytes, and how many went.
    payload: Vec<u8>,
    sent: usize,
}

impl<S> WsReader<S> {
    pub fn new(socket: S, ws: WsIn) -> WsReader<S> {
        WsReader {
            socket,
            ws,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            payload: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: Read> Read for WsReader<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.sent < self.payload.len() {
                let n = out.len().min(self.payload.len() - self.sent);
                out[..n].copy_from_slice(&self.payload[self.sent..self.sent + n]);
                self.sent += n;
                return Ok(n);
            }
            let next = self.ws.next(&self.buf[self.start..self.end])?;
            match next {
                Some((Unframed::Closed, _)) => return Ok(0),
                Some((unframed, used)) => {
                    self.payload = match unframed {
                        Unframed::Relay(payload) => payload.to_vec(),
                        Unframed::Fragmented => self.ws.take_fragments(),
                        _ => Vec::new(),
                    };
                    self.sent = 0;
                    self.start += used;
                }
                None => {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                    if self.end == self.buf.len() {
                        // One message longer than the buffer.
                        self.buf.resize(self.buf.len() * 2, 0);
                    }
                    match self.socket.read(&mut self.buf[self.end..])? {
                        0 => return Ok(0),
                        n => self.end += n,
                    }
                }
            }
        }
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
        // Whole and split, long enough for whole words of mask: unmasked
        // byte by byte, the messages are the frames.
        let long = [vec![0, 0, 0, 40, 1, 1, 1], (0..37).collect()].concat();
        let relay = [relay.clone(), long.clone(), relay].concat();
        for split in [relay.len(), 5, 20] {
            out.out.clear();
            out.sent = 0;
            let (first, second) = relay.split_at(split.min(relay.len()));
            out.frame(first);
            out.frame(second);
            let mut cursor = Cursor::new(&out.out[..]);
            let mut unmasked = Vec::new();
            while let Some((header, len)) = FrameHeader::parse(&mut cursor).unwrap() {
                let at = cursor.position() as usize;
                let mask = header.mask.unwrap();
                let payload = &out.out[at..at + len as usize];
                unmasked.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
                cursor.set_position((at + len as usize) as u64);
            }
            assert_eq!(unmasked, relay, "split at {split}");
        }
    }

    /// The upgrade's answer to `input`, then: a binary message, a ping, a
    /// message of another length (a new header), a message fragmented
    /// around a ping, the first again, and a close; and the Relay bytes
    /// in them.
    fn server_stream(input: &WsIn) -> (Vec<u8>, Vec<u8>) {
        let accept = input.expect_accept.clone().unwrap();
        let mut wire = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        let long = [vec![0, 0, 0, 203, 1, 4, 2], vec![7u8; 200]].concat();
        wire.extend_from_slice(&[0x82, 7, 0, 0, 0, 3, 1, 5, 0]);
        wire.extend_from_slice(&[0x89, 2, b'h', b'i']);
        wire.extend_from_slice(&[0x82, 126, 0, 207]);
        wire.extend_from_slice(&long);
        wire.extend_from_slice(&[0x02, 3, 0, 0, 0]);
        wire.extend_from_slice(&[0x89, 0]);
        wire.extend_from_slice(&[0x80, 4, 3, 1, 5, 1]);
        wire.extend_from_slice(&[0x82, 7, 0, 0, 0, 3, 1, 5, 2]);
        wire.extend_from_slice(&[0x88, 2, 0x03, 0xe8]);
        let relay = [
            vec![0, 0, 0, 3, 1, 5, 0],
            long,
            vec![0, 0, 0, 3, 1, 5, 1],
            vec![0, 0, 0, 3, 1, 5, 2],
        ]
        .concat();
        (wire, relay)
    }

    #[test]
    fn each_payload_is_found_where_it_lies_however_the_reads_split_the_stream() {
        let (input, _) = pair(SocketAddr::from(([127, 0, 0, 1], 1)));
        let len = server_stream(&input).0.len();
        for step in 1..=len {
            let (mut input, _) = pair(SocketAddr::from(([127, 0, 0, 1], 1)));
            let (wire, relay) = server_stream(&input);
            // Reads of `step` bytes behind what is not yet used, as the
            // swarm keeps them.
            let mut got = Vec::new();
            let mut buffered = Vec::new();
            let mut closed = false;
            for piece in wire.chunks(step) {
                buffered.extend_from_slice(piece);
                let mut at = 0;
                while let Some((unframed, used)) = input.next(&buffered[at..]).unwrap() {
                    match unframed {
                        Unframed::Relay(payload) => got.extend_from_slice(payload),
                        Unframed::Fragmented => got.extend(input.take_fragments()),
                        Unframed::Skipped => {}
                        Unframed::Closed => {
                            closed = true;
                            break;
                        }
                    }
                    at += used;
                }
                buffered.drain(..at);
            }
            assert_eq!(got, relay, "step {step}");
            assert!(closed && input.closed(), "step {step}");
        }
    }

    #[test]
    fn the_drain_reads_the_relay_bytes_until_the_close() {
        let (input, _) = pair(SocketAddr::from(([127, 0, 0, 1], 1)));
        let (wire, relay) = server_stream(&input);
        let mut reader = WsReader::new(Cursor::new(wire), input);
        let mut out = [0u8; 5];
        let mut got = Vec::new();
        loop {
            let n = reader.read(&mut out).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(got, relay);
    }

    #[test]
    fn a_server_message_longer_than_any_relay_frame_is_refused_from_its_header() {
        let (mut input, _) = pair(SocketAddr::from(([127, 0, 0, 1], 1)));
        input.expect_accept = None;
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&(MAX_MESSAGE + 1).to_be_bytes());
        let error = input.next(&header).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
