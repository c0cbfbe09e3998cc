//! The reader's side of a WebSocket connection: WebSocket frames in, the
//! Relay bytes of binary messages out.
//!
//! Frames are unmasked and compacted in place, in the buffer the Relay
//! decoder lent for the read, so a WebSocket connection reads no more
//! memory than a TCP one: the headers are squeezed out and the payloads
//! slide left over them. A header cut by the end of a read (at most 13
//! bytes) waits in a small stash and goes in front of the next read.
//!
//! The headers squeezed out leave a full read short of what the decoder
//! offered, and the decoder grows its offer only after a read that fills
//! it: so a read the socket filled is topped up with what has already
//! arrived (`ReadHalf::read_now`), without waiting, until the Relay bytes
//! fill the offer. Without it the decoder never offered more than 4 KiB,
//! a busy publisher's frames were relayed a few dozen to a batch (where
//! TCP's reads grow to 256 KiB), and every batch cost each member a
//! socket write: `bench --ws` fan-out was a third of TCP's.
//!
//! Every message must be exactly one Relay frame. That is checked as the
//! bytes stream by, without buffering a message: the first four bytes of a
//! message (the Relay length) say how long it must be. A message that
//! declares more than the largest frame is refused from its header. A
//! message that is too short, too long, text, or otherwise breaks RFC 6455
//! is a [`Violation`], answered like a malformed frame (INVALID_FRAME,
//! fatal); the bytes of the frame that broke the rule are not passed on.
//! An unfragmented message is checked whole from its header and its first
//! four bytes, so nothing of a bad one is acted on; a fragmented one is
//! checked as it streams, so a whole frame in its first fragments is
//! handled before later fragments show the message too long.

use std::io::{self, Cursor};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::ErrorCode;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::WsSettings;
use super::link::Link;
use super::upgrade::Upgrade;
use crate::conn::transport::{Handshake, ReadHalf, Violation, WriterWake};
use crate::sys::wake::WaitMask;

/// The longest WebSocket frame header (RFC 6455 5.2).
const MAX_HEADER: usize = 14;
/// The Relay length prefix: the first bytes of every message.
const PREFIX: usize = protocol::LENGTH_PREFIX;
/// The longest control frame payload (RFC 6455 5.5).
const MAX_CONTROL: u64 = 125;

/// WebSocket framing, with no socket: fed the bytes of each read.
#[derive(Debug)]
pub(crate) struct Inbound {
    max_frame: u32,
    /// The start of a header the last read cut off.
    stash: [u8; MAX_HEADER],
    stash_len: usize,
    /// The frame whose payload is arriving, if any.
    frame: Option<FrameIn>,
    /// The binary message under way (between its first frame and FIN).
    message: Option<MessageIn>,
    /// A control frame's payload, gathered.
    control: Vec<u8>,
    /// Found a violation: nothing more is read; it is reported once the
    /// bytes before it are delivered.
    pub(crate) violation: Option<Violation>,
    /// The client's close frame arrived, with its status if any.
    pub(crate) closed: Option<Option<u16>>,
    /// A ping's payload, to be answered.
    pub(crate) ping: Option<Vec<u8>>,
}

#[derive(Debug)]
struct FrameIn {
    /// Payload bytes still to come.
    left: u64,
    mask: [u8; 4],
    /// Payload bytes already unmasked, modulo 4: where the mask resumes.
    phase: usize,
    kind: Kind,
    fin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Ping,
    Pong,
    Close,
}

#[derive(Debug, Default)]
struct MessageIn {
    /// The Relay length prefix, as it arrives.
    prefix: [u8; PREFIX],
    /// Bytes of the message so far.
    received: u64,
    /// The message's length when its first frame is its only one.
    whole: Option<u64>,
}

impl MessageIn {
    /// How long the message must be, once its prefix is in.
    fn expected(&self) -> Option<u64> {
        (self.received >= PREFIX as u64)
            .then(|| PREFIX as u64 + u64::from(u32::from_be_bytes(self.prefix)))
    }
}

fn violation(message: impl Into<String>) -> Violation {
    Violation {
        code: ErrorCode::InvalidFrame,
        message: message.into(),
    }
}

impl Inbound {
    pub(crate) fn new(max_frame: u32) -> Inbound {
        Inbound {
            max_frame,
            stash: [0; MAX_HEADER],
            stash_len: 0,
            frame: None,
            message: None,
            control: Vec::new(),
            violation: None,
            closed: None,
            ping: None,
        }
    }

    /// Whether reading is over (a violation or the client's close).
    pub(crate) fn stopped(&self) -> bool {
        self.violation.is_some() || self.closed.is_some()
    }

    /// Puts the stashed start of a header at the front of `buf`; the read
    /// goes after it. Returns its length.
    pub(crate) fn restore(&self, buf: &mut [u8]) -> usize {
        let n = self.stash_len.min(buf.len());
        buf[..n].copy_from_slice(&self.stash[..n]);
        n
    }

    /// Unframes `buf` (the restored stash and what was read) in place:
    /// the Relay bytes it holds end up at its front; returns how many.
    pub(crate) fn unframe(&mut self, buf: &mut [u8]) -> usize {
        self.stash_len = 0;
        let mut r = 0;
        let mut w = 0;
        while r < buf.len() && !self.stopped() {
            let Some(frame) = self.frame.as_mut() else {
                let mut cursor = Cursor::new(&buf[r..]);
                match FrameHeader::parse(&mut cursor) {
                    Ok(Some((header, len))) => {
                        r += cursor.position() as usize;
                        if let Err(v) = self.begin(&header, len) {
                            self.violation = Some(v);
                        }
                    }
                    Ok(None) => {
                        // Fewer than MAX_HEADER bytes: a header cut short.
                        let rest = &buf[r..];
                        self.stash[..rest.len()].copy_from_slice(rest);
                        self.stash_len = rest.len();
                        r = buf.len();
                    }
                    Err(error) => {
                        self.violation = Some(violation(format!(
                            "a WebSocket frame that breaks RFC 6455 ({error})"
                        )));
                    }
                }
                continue;
            };
            let take = frame.left.min((buf.len() - r) as u64) as usize;
            let bytes = &mut buf[r..r + take];
            unmask(bytes, frame.mask, frame.phase);
            frame.phase = (frame.phase + take) % 4;
            let kind = frame.kind;
            if kind == Kind::Data {
                if let Err(v) = self.message_bytes(bytes) {
                    self.violation = Some(v);
                    break;
                }
                buf.copy_within(r..r + take, w);
                w += take;
            } else {
                self.control.extend_from_slice(bytes);
            }
            r += take;
            let Some(frame) = self.frame.as_mut() else {
                break;
            };
            frame.left -= take as u64;
            if frame.left == 0 {
                self.frame_done();
            }
        }
        w
    }

    /// How many bytes of a header cut by the end of the last read wait in
    /// the stash.
    pub(crate) fn stashed(&self) -> usize {
        self.stash_len
    }

    /// One more byte of the header in the stash, read on its own: the
    /// header then starts its frame once whole, as in [`Inbound::unframe`].
    pub(crate) fn header_byte(&mut self, byte: u8) {
        let mut head = self.stash;
        let len = self.stash_len.min(MAX_HEADER - 1);
        head[len] = byte;
        // Header bytes only: no Relay bytes come out.
        self.unframe(&mut head[..len + 1]);
    }

    /// Checks a frame's header against the rules, and starts its payload.
    fn begin(&mut self, header: &FrameHeader, len: u64) -> Result<(), Violation> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(violation(
                "a WebSocket frame with reserved bits set; no extension is negotiated (permessage-deflate is not offered)",
            ));
        }
        let Some(mask) = header.mask else {
            return Err(violation(
                "an unmasked WebSocket frame; a client masks every frame (RFC 6455 5.1)",
            ));
        };
        let kind = match header.opcode {
            OpCode::Data(Data::Text) => {
                return Err(violation(
                    "a text WebSocket message; send each Relay frame as one binary message",
                ));
            }
            OpCode::Data(Data::Binary) => {
                if self.message.is_some() {
                    return Err(violation(
                        "a new WebSocket message before the last one ended (a continuation frame was due)",
                    ));
                }
                self.message = Some(MessageIn {
                    whole: header.is_final.then_some(len),
                    ..MessageIn::default()
                });
                Kind::Data
            }
            OpCode::Data(Data::Continue) => {
                if self.message.is_none() {
                    return Err(violation(
                        "a WebSocket continuation frame outside a message",
                    ));
                }
                Kind::Data
            }
            OpCode::Control(control) => {
                if !header.is_final || len > MAX_CONTROL {
                    return Err(violation(
                        "a WebSocket control frame fragmented or longer than 125 bytes",
                    ));
                }
                match control {
                    Control::Ping => Kind::Ping,
                    Control::Pong => Kind::Pong,
                    Control::Close => Kind::Close,
                    Control::Reserved(_) => {
                        return Err(violation("a WebSocket frame with a reserved opcode"));
                    }
                }
            }
            OpCode::Data(Data::Reserved(_)) => {
                return Err(violation("a WebSocket frame with a reserved opcode"));
            }
        };
        if kind == Kind::Data {
            let limit = PREFIX as u64 + u64::from(self.max_frame);
            let so_far = self.message.as_ref().map_or(0, |m| m.received);
            if so_far.saturating_add(len) > limit {
                return Err(violation(format!(
                    "a WebSocket message of more than {limit} bytes, over the frame limit (maxFrameSize {} + 4)",
                    self.max_frame
                )));
            }
        }
        self.control.clear();
        self.frame = Some(FrameIn {
            left: len,
            mask,
            phase: 0,
            kind,
            fin: header.is_final,
        });
        if len == 0 {
            self.frame_done();
        }
        Ok(())
    }

    /// Counts a data frame's bytes into its message; refuses them if they
    /// carry the message past the one Relay frame it may hold.
    fn message_bytes(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let Some(message) = self.message.as_mut() else {
            return Err(violation("WebSocket data outside a message"));
        };
        let before = message.received as usize;
        if before < PREFIX {
            let n = (PREFIX - before).min(bytes.len());
            message.prefix[before..before + n].copy_from_slice(&bytes[..n]);
        }
        message.received += bytes.len() as u64;
        if let Some(expected) = message.expected() {
            let too_long = message.received > expected;
            let mismatch = message.whole.is_some_and(|whole| whole != expected);
            if too_long || mismatch {
                return Err(violation(format!(
                    "a WebSocket message that is not exactly one Relay frame (the frame is {expected} bytes); send each frame as one binary message"
                )));
            }
        }
        Ok(())
    }

    /// A frame's payload is complete.
    fn frame_done(&mut self) {
        let Some(frame) = self.frame.take() else {
            return;
        };
        match frame.kind {
            Kind::Data => {
                if !frame.fin {
                    return;
                }
                let message = self.message.take().unwrap_or_default();
                if message.expected() != Some(message.received) {
                    self.violation = Some(violation(format!(
                        "a WebSocket message of {} bytes, not one whole Relay frame; send each frame as one binary message",
                        message.received
                    )));
                }
            }
            Kind::Ping => self.ping = Some(std::mem::take(&mut self.control)),
            Kind::Pong => {}
            Kind::Close => {
                let status = self
                    .control
                    .first_chunk::<2>()
                    .map(|code| u16::from_be_bytes(*code));
                self.closed = Some(status);
            }
        }
    }
}

/// XORs `bytes` with the mask, starting `phase` bytes into it.
fn unmask(bytes: &mut [u8], mask: [u8; 4], phase: usize) {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(phase + i) % 4];
    }
    let key64 = u64::from_ne_bytes(key);
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ key64).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i];
    }
}

/// What one read of the source brought.
#[derive(Debug, Clone, Copy)]
struct ReadOnce {
    /// Relay bytes, unframed at the front of the buffer read into.
    relay: usize,
    /// Whether the source filled all the room it was given: more may be
    /// waiting.
    filled: bool,
}

/// The reader thread's half.
#[derive(Debug)]
pub(crate) struct WsRead<R> {
    inner: R,
    link: Arc<Link>,
    settings: Arc<WsSettings>,
    upgrade: Option<Upgrade>,
    handshake_deadline: Option<Instant>,
    /// Bytes that came after the upgrade request in its reads (a client
    /// that did not wait for the 101), read before the socket.
    early: Vec<u8>,
    inbound: Inbound,
    /// An error a top-up read met (see [`WsRead::top_up`]), for the next
    /// read to report after the bytes read before it.
    deferred: Option<io::Error>,
    /// A violation was reported: the stream has no frame boundaries any
    /// more, so what follows is passed through raw, for the reader's
    /// lingering to discard (never to be parsed into a close or a ping).
    broken: bool,
}

impl<R: ReadHalf> WsRead<R> {
    pub(crate) fn new(inner: R, link: Arc<Link>, settings: Arc<WsSettings>) -> WsRead<R> {
        let inbound = Inbound::new(settings.max_frame);
        WsRead {
            inner,
            link,
            settings,
            upgrade: Some(Upgrade::default()),
            handshake_deadline: None,
            early: Vec::new(),
            inbound,
            deferred: None,
            broken: false,
        }
    }

    /// Reads once, from `early` or the socket (waiting, or only for what
    /// has arrived), into `buf` behind the stashed start of a header, and
    /// unframes it there. `None` at the end of the stream.
    fn read_once(&mut self, buf: &mut [u8], wait: bool) -> io::Result<Option<ReadOnce>> {
        let kept = self.inbound.restore(buf);
        if kept >= buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a read buffer too small for a WebSocket header",
            ));
        }
        let room = buf.len() - kept;
        let n = if self.early.is_empty() {
            let read = if wait {
                self.inner.read(&mut buf[kept..])
            } else {
                self.inner.read_now(&mut buf[kept..])
            };
            match read? {
                0 => return Ok(None),
                n => n,
            }
        } else {
            let n = self.early.len().min(room);
            buf[kept..kept + n].copy_from_slice(&self.early[..n]);
            self.early.drain(..n);
            if self.early.is_empty() {
                self.early = Vec::new();
            }
            n
        };
        let relay = self.inbound.unframe(&mut buf[..kept + n]);
        self.pass_on();
        Ok(Some(ReadOnce {
            relay,
            filled: n == room,
        }))
    }

    /// Reads on behind the `last.relay` Relay bytes at the front of `buf`
    /// while the last read filled its room and more has already arrived,
    /// until `buf` is full, so that a WebSocket read fills the decoder's
    /// offer whenever a TCP one would (see the module doc). Returns the
    /// Relay bytes now at the front of `buf`.
    fn top_up(&mut self, buf: &mut [u8], last: ReadOnce) -> usize {
        let mut relay = last.relay;
        let mut filled = last.filled;
        while filled && relay < buf.len() && !self.inbound.stopped() {
            let read = if buf.len() - relay > self.inbound.stashed() {
                self.read_once(&mut buf[relay..], false)
            } else {
                // No room for the cut header in front of the next read:
                // its other bytes come one at a time (a read must not
                // take payload bytes there is no room for).
                self.header_byte()
            };
            match read {
                Ok(Some(read)) => {
                    relay += read.relay;
                    filled = read.filled;
                }
                // The end of the stream: the next read finds it again.
                Ok(None) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    break;
                }
                // Reported by the next read, after these bytes.
                Err(e) => {
                    self.deferred = Some(e);
                    break;
                }
            }
        }
        relay
    }

    /// Reads one more byte of the stashed header, if it has arrived.
    fn header_byte(&mut self) -> io::Result<Option<ReadOnce>> {
        let mut byte = [0u8; 1];
        let n = if self.early.is_empty() {
            self.inner.read_now(&mut byte)?
        } else {
            byte[0] = self.early.remove(0);
            1
        };
        if n == 0 {
            return Ok(None);
        }
        self.inbound.header_byte(byte[0]);
        self.pass_on();
        Ok(Some(ReadOnce {
            relay: 0,
            filled: true,
        }))
    }

    /// Hands what the last unframing found to the writer.
    fn pass_on(&mut self) {
        if let Some(payload) = self.inbound.ping.take() {
            self.link.pong(payload);
        }
        if let Some(status) = self.inbound.closed {
            self.link.client_closed(status);
        }
    }
}

impl<R: ReadHalf> ReadHalf for WsRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.broken {
            return self.inner.read(buf);
        }
        loop {
            if let Some(error) = self.deferred.take() {
                return Err(error);
            }
            if let Some(v) = self.inbound.violation.take() {
                self.broken = true;
                return Err(v.into_io());
            }
            if self.inbound.closed.is_some() {
                return Ok(0);
            }
            let Some(read) = self.read_once(buf, true)? else {
                return Ok(0);
            };
            if read.relay > 0 {
                return Ok(self.top_up(buf, read));
            }
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.inner.set_read_timeout(timeout)
    }

    fn wait_readable(&mut self, timeout: Duration, mask: &WaitMask) -> io::Result<bool> {
        if !self.broken
            && (!self.early.is_empty() || self.inbound.stopped() || self.deferred.is_some())
        {
            return Ok(true);
        }
        self.inner.wait_readable(timeout, mask)
    }

    fn unsent_bytes(&self) -> Option<usize> {
        self.inner.unsent_bytes()
    }

    fn handshake(&mut self, mask: &WaitMask) -> io::Result<Handshake> {
        let done = self.inner.handshake(mask)?;
        let deadline = *self
            .handshake_deadline
            .get_or_insert_with(|| Instant::now() + self.settings.handshake_timeout);
        let Some(upgrade) = self.upgrade.as_mut() else {
            return Ok(done);
        };
        let early = upgrade.run(&mut self.inner, &self.link, &self.settings, deadline, mask)?;
        self.upgrade = None;
        self.early = early;
        Ok(done)
    }

    fn set_writer_wake(&mut self, wake: WriterWake) {
        self.link.set_wake(wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, with `first` as its first byte.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn heartbeat() -> Vec<u8> {
        vec![0, 0, 0, 3, 1, 5, 0]
    }

    /// Feeds `wire` split at every `step` bytes, as reads would bring it.
    fn feed(inbound: &mut Inbound, wire: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            let mut buf = vec![0u8; 64 + piece.len()];
            let kept = inbound.restore(&mut buf);
            buf[kept..kept + piece.len()].copy_from_slice(piece);
            let n = inbound.unframe(&mut buf[..kept + piece.len()]);
            out.extend_from_slice(&buf[..n]);
            if inbound.stopped() {
                break;
            }
        }
        out
    }

    #[test]
    fn binary_messages_come_out_as_relay_bytes_however_the_reads_split_them() {
        let mut wire = frame(0x82, &heartbeat());
        wire.extend(frame(0x89, b"hi"));
        // A fragmented message: two frames of one Relay frame.
        let long = [vec![0, 0, 0, 203, 1, 4, 2], vec![7u8; 200]].concat();
        wire.extend(frame(0x02, &long[..5]));
        wire.extend(frame(0x80, &long[5..]));
        let expected = [heartbeat(), long.clone()].concat();
        for step in 1..=wire.len() {
            let mut inbound = Inbound::new(1024);
            assert_eq!(feed(&mut inbound, &wire, step), expected, "step {step}");
            assert!(inbound.violation.is_none(), "step {step}");
            assert_eq!(inbound.ping.as_deref(), Some(&b"hi"[..]));
        }
    }

    #[test]
    fn a_message_that_is_not_one_frame_is_a_violation() {
        let two = [heartbeat(), heartbeat()].concat();
        let half = heartbeat()[..5].to_vec();
        let cases: [(&str, Vec<u8>); 6] = [
            ("two frames", frame(0x82, &two)),
            ("half a frame", frame(0x82, &half)),
            ("empty", frame(0x82, &[])),
            ("text", frame(0x81, &heartbeat())),
            ("unmasked", [vec![0x82, 7], heartbeat()].concat()),
            (
                "over the limit",
                frame(0x82, &[vec![0, 0, 4, 1, 1, 4, 2], vec![0; 1025]].concat()),
            ),
        ];
        for (what, wire) in cases {
            let mut inbound = Inbound::new(1024);
            let out = feed(&mut inbound, &wire, wire.len());
            let v = inbound.violation.as_ref().expect(what);
            assert_eq!(v.code, ErrorCode::InvalidFrame, "{what}");
            // Nothing a decoder could act on got through.
            assert!(out.is_empty(), "{what}: {out:?}");
        }
    }

    #[test]
    fn a_close_frame_ends_the_input_with_its_status() {
        let mut wire = frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']);
        wire.extend(frame(0x82, &heartbeat()));
        let mut inbound = Inbound::new(1024);
        assert!(feed(&mut inbound, &wire, 3).is_empty());
        assert_eq!(inbound.closed, Some(Some(1000)));
    }

    #[test]
    fn unmasking_resumes_at_any_phase() {
        let mask = [1, 2, 3, 4];
        let plain: Vec<u8> = (0..37).collect();
        let masked: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        for cut in 0..plain.len() {
            let mut bytes = masked.clone();
            let (a, b) = bytes.split_at_mut(cut);
            unmask(a, mask, 0);
            unmask(b, mask, cut % 4);
            assert_eq!(bytes, plain, "cut {cut}");
        }
    }

    /// A socket on which `wire[..arrived]` has come in: a read takes what
    /// has and never waits (nothing is `WouldBlock`, as a timeout), and
    /// counts the reads that could have waited; past `arrived`, a read
    /// that may not wait meets `then` if set.
    struct Arrived {
        wire: Vec<u8>,
        at: usize,
        arrived: usize,
        waiting_reads: usize,
        then: Option<io::ErrorKind>,
    }

    impl Arrived {
        fn new(wire: Vec<u8>) -> Arrived {
            Arrived {
                arrived: wire.len(),
                wire,
                at: 0,
                waiting_reads: 0,
                then: None,
            }
        }

        fn take(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.arrived - self.at);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            buf[..n].copy_from_slice(&self.wire[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl ReadHalf for Arrived {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.waiting_reads += 1;
            self.take(buf)
        }

        fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.take(buf), self.then) {
                (Err(e), Some(kind)) if e.kind() == io::ErrorKind::WouldBlock => Err(kind.into()),
                (result, _) => result,
            }
        }

        fn set_read_timeout(&mut self, _timeout: Duration) -> io::Result<()> {
            Ok(())
        }

        fn wait_readable(&mut self, _timeout: Duration, _mask: &WaitMask) -> io::Result<bool> {
            Ok(self.at < self.arrived)
        }

        fn unsent_bytes(&self) -> Option<usize> {
            None
        }
    }

    fn ws_read(inner: Arrived) -> WsRead<Arrived> {
        let settings = WsSettings {
            origins: super::super::origin::Origins::Any,
            handshake_timeout: Duration::from_secs(1),
            max_frame: 1024,
        };
        WsRead::new(inner, Arc::default(), Arc::new(settings))
    }

    /// `count` binary messages, each one Relay frame numbered in its
    /// payload; and their Relay bytes.
    fn numbered(count: u32) -> (Vec<u8>, Vec<u8>) {
        let mut wire = Vec::new();
        let mut relay = Vec::new();
        for k in 0..count {
            let mut message = vec![0, 0, 0, 7, 1, 4, 0];
            message.extend_from_slice(&k.to_be_bytes());
            wire.extend(frame(0x82, &message));
            relay.extend(message);
        }
        (wire, relay)
    }

    #[test]
    fn a_busy_clients_reads_fill_the_decoders_offer_so_it_grows_as_on_tcp() {
        let (wire, relay) = numbered(40_000);
        let mut read = ws_read(Arrived::new(wire));
        let mut decoder = protocol::Decoder::new(1024);
        let mut offers = Vec::new();
        let mut frames = 0u32;
        loop {
            let buf = decoder.read_buf();
            offers.push(buf.len());
            let n = match read.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            };
            decoder.commit(n);
            while let Some(frame) = decoder.next_frame().unwrap() {
                assert_eq!(frame.payload, &frames.to_be_bytes()[..]);
                frames += 1;
            }
        }
        assert_eq!(frames, 40_000);
        assert_eq!(read.inner.waiting_reads, offers.len(), "one wait per read");
        // The offer doubles from its smallest to the largest read, as it
        // does when a TCP client's reads fill it.
        assert_eq!(offers[..3], [4096, 8192, 16_384]);
        assert!(
            offers.contains(&protocol::decoder::MAX_READ),
            "offers {offers:?}, {} Relay bytes",
            relay.len()
        );
    }

    #[test]
    fn a_read_is_topped_up_only_with_what_has_arrived_and_resumes_exactly() {
        let (wire, relay) = numbered(50);
        // A message cut anywhere: in its header, its mask, its payload.
        for arrived in 0..=wire.len() {
            let mut inner = Arrived::new(wire.clone());
            inner.arrived = arrived;
            let mut read = ws_read(inner);
            let mut out = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                match read.read(&mut buf) {
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Nothing more has arrived: let the rest in.
                        if read.inner.arrived == wire.len() {
                            break;
                        }
                        read.inner.arrived = wire.len();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(out, relay, "arrived {arrived}");
        }
    }

    #[test]
    fn an_error_met_topping_up_comes_after_the_bytes_read_before_it() {
        let (wire, relay) = numbered(20);
        let mut inner = Arrived::new(wire);
        // The first read fills its room exactly; the top-up meets a reset.
        inner.arrived = 64;
        inner.then = Some(io::ErrorKind::ConnectionReset);
        let mut read = ws_read(inner);
        let mut buf = [0u8; 64];
        let first = read.read(&mut buf).unwrap();
        assert!(first > 0);
        assert_eq!(buf[..first], relay[..first]);
        let error = read.read(&mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }
}
