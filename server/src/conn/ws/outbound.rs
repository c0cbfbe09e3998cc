//! The writer's side of a WebSocket connection: each Relay frame becomes
//! one binary message, its header written from a stack array beside the
//! frame's shared bytes in one vectored write. A fan-out to a hundred
//! members costs each of them a 2 to 10 byte header and no allocation.
//!
//! The write half is handed bytes, not frames, and a write may stop
//! anywhere: it walks the Relay length prefixes to find where each frame
//! starts, remembers how much of the current frame is still due, and keeps
//! a header that a partial write cut in `prefix`, to go first next time.
//! Control frames (the upgrade's answer, pongs) go out between Relay
//! frames only. It tells the caller how many of *its* bytes were taken,
//! never counting headers, so the output's accounting is the same as for
//! TCP.
//!
//! Closing sends a close frame after the final ERROR: its status and reason
//! come from that ERROR's code (SPEC.md 13.5), or echo the client's close.

use std::io::{self, IoSlice};
use std::sync::Arc;

use protocol::{ErrorCode, ErrorPayload, HEADER_LEN, LENGTH_PREFIX, MessageType};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};

use super::link::Link;
use crate::conn::transport::WriteHalf;

/// Relay frames framed per write at most.
const MAX_FRAMES: usize = 128;
/// Slices per write: a header and a payload slice per frame, and the prefix.
const MAX_PIECES: usize = 2 * MAX_FRAMES + 1;
/// The longest header the server writes: unmasked, 64-bit length.
const HEAD: usize = 10;
/// A prefix buffer larger than this (the upgrade's answer) is given back
/// once written.
const PREFIX_RETAIN: usize = 256;

/// The write half.
#[derive(Debug)]
pub(crate) struct WsWrite<W> {
    inner: W,
    link: Arc<Link>,
    /// Bytes owed before any more of the caller's: control frames, or the
    /// rest of a header a partial write cut.
    prefix: Vec<u8>,
    prefix_sent: usize,
    /// Bytes of the current Relay frame still due (its header is written,
    /// or in `prefix`).
    frame_left: usize,
    /// The code of the last frame framed, when it was a fatal ERROR: the
    /// close frame's reason.
    last_fatal: Option<ErrorCode>,
    close_sent: bool,
}

/// One slice of a planned write.
#[derive(Debug, Clone, Copy)]
enum Piece {
    Prefix,
    /// `heads[index]`, of `len` bytes, for a Relay frame of `frame` bytes.
    Head {
        index: usize,
        len: usize,
        frame: usize,
        fatal: Option<ErrorCode>,
    },
    /// `bufs[buf][start..start + len]`.
    Payload {
        buf: usize,
        start: usize,
        len: usize,
    },
}

impl<W: WriteHalf> WsWrite<W> {
    pub(crate) fn new(inner: W, link: Arc<Link>) -> WsWrite<W> {
        WsWrite {
            inner,
            link,
            prefix: Vec::new(),
            prefix_sent: 0,
            frame_left: 0,
            last_fatal: None,
            close_sent: false,
        }
    }

    fn prefix_due(&self) -> bool {
        self.prefix_sent < self.prefix.len()
    }

    fn clear_prefix(&mut self) {
        self.prefix_sent = 0;
        if self.prefix.capacity() > PREFIX_RETAIN {
            self.prefix = Vec::new();
        } else {
            self.prefix.clear();
        }
    }

    /// Moves the reader's requests into `prefix`, between Relay frames.
    fn take_control(&mut self) {
        if self.frame_left != 0 || self.prefix_due() || !self.link.signalled() {
            return;
        }
        self.clear_prefix();
        if let Some(payload) = self.link.take(&mut self.prefix)
            && self.link.is_open()
        {
            let _ = Frame::pong(payload).format(&mut self.prefix);
        }
    }

    /// Writes as much of `bufs` as the connection takes, framed; returns
    /// the caller's bytes taken.
    fn write(&mut self, bufs: &[IoSlice<'_>], wait: bool) -> io::Result<usize> {
        if !self.link.is_open() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the WebSocket upgrade has not finished",
            ));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        loop {
            self.take_control();
            let mut heads = [[0u8; HEAD]; MAX_FRAMES];
            let mut pieces = [Piece::Prefix; MAX_PIECES];
            let count = self.plan(bufs, &mut heads, &mut pieces)?;
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_PIECES];
                for (slice, piece) in slices.iter_mut().zip(&pieces[..count]) {
                    *slice = match *piece {
                        Piece::Prefix => IoSlice::new(&self.prefix[self.prefix_sent..]),
                        Piece::Head { index, len, .. } => IoSlice::new(&heads[index][..len]),
                        Piece::Payload { buf, start, len } => {
                            IoSlice::new(&bufs[buf][start..start + len])
                        }
                    };
                }
                if wait {
                    self.inner.write_vectored(&slices[..count])?
                } else {
                    self.inner.write_vectored_now(&slices[..count])?
                }
            };
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket accepted no bytes",
                ));
            }
            let taken = self.settle(written, &heads, &pieces[..count]);
            if taken > 0 {
                return Ok(taken);
            }
            if !wait {
                // Only headers or control frames went: the writer goes on.
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    /// Lays out the next write: the prefix, then for each Relay frame its
    /// header and its bytes. Returns how many pieces.
    fn plan(
        &self,
        bufs: &[IoSlice<'_>],
        heads: &mut [[u8; HEAD]; MAX_FRAMES],
        pieces: &mut [Piece; MAX_PIECES],
    ) -> io::Result<usize> {
        let mut count = 0;
        if self.prefix_due() {
            pieces[0] = Piece::Prefix;
            count = 1;
        }
        let mut left = self.frame_left;
        let mut framed = 0;
        'all: for (index, buf) in bufs.iter().enumerate() {
            let mut pos = 0;
            while pos < buf.len() {
                if count + 2 > MAX_PIECES {
                    break 'all;
                }
                if left == 0 {
                    if framed == MAX_FRAMES {
                        break 'all;
                    }
                    let Some(length) = relay_length(bufs, index, pos) else {
                        if count == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "a partial Relay frame handed to the WebSocket writer",
                            ));
                        }
                        break 'all;
                    };
                    let frame = LENGTH_PREFIX + length;
                    let header = FrameHeader {
                        opcode: OpCode::Data(Data::Binary),
                        ..FrameHeader::default()
                    };
                    let mut out = &mut heads[framed][..];
                    let before = out.len();
                    header
                        .format(frame as u64, &mut out)
                        .map_err(io::Error::other)?;
                    let len = before - out.len();
                    pieces[count] = Piece::Head {
                        index: framed,
                        len,
                        frame,
                        fatal: buf.get(pos..pos + frame).and_then(fatal_code),
                    };
                    count += 1;
                    framed += 1;
                    left = frame;
                }
                let take = left.min(buf.len() - pos);
                pieces[count] = Piece::Payload {
                    buf: index,
                    start: pos,
                    len: take,
                };
                count += 1;
                pos += take;
                left -= take;
            }
        }
        Ok(count)
    }

    /// Records what a write of `written` bytes of `pieces` sent; returns
    /// the caller's bytes among them.
    fn settle(
        &mut self,
        mut written: usize,
        heads: &[[u8; HEAD]; MAX_FRAMES],
        pieces: &[Piece],
    ) -> usize {
        let mut taken = 0;
        for piece in pieces {
            if written == 0 {
                break;
            }
            match *piece {
                Piece::Prefix => {
                    let due = self.prefix.len() - self.prefix_sent;
                    let n = written.min(due);
                    self.prefix_sent += n;
                    written -= n;
                    if n == due {
                        self.clear_prefix();
                    }
                }
                Piece::Head {
                    index,
                    len,
                    frame,
                    fatal,
                } => {
                    self.frame_left = frame;
                    self.last_fatal = fatal;
                    if written < len {
                        // The rest of the header goes first next time.
                        self.prefix.clear();
                        self.prefix.extend_from_slice(&heads[index][written..len]);
                        self.prefix_sent = 0;
                        written = 0;
                    } else {
                        written -= len;
                    }
                }
                Piece::Payload { len, .. } => {
                    let n = written.min(len);
                    taken += n;
                    self.frame_left -= n;
                    written -= n;
                }
            }
        }
        taken
    }

    /// Writes the prefix and the reader's requests, waiting.
    fn flush_control(&mut self) -> io::Result<()> {
        loop {
            self.take_control();
            if !self.prefix_due() {
                return Ok(());
            }
            let n = self
                .inner
                .write_vectored(&[IoSlice::new(&self.prefix[self.prefix_sent..])])?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.prefix_sent += n;
            if !self.prefix_due() {
                self.clear_prefix();
            }
        }
    }

    /// The close frame: the final ERROR's code, else the client's close
    /// echoed, else a normal close.
    fn close_frame(&self) -> Vec<u8> {
        let (code, reason) = match (self.last_fatal, self.link.client_close()) {
            (Some(code), _) => (close_code(code), code.as_str()),
            (None, Some(Some(status))) if CloseCode::from(status).is_allowed() => {
                (CloseCode::from(status), "")
            }
            _ => (CloseCode::Normal, ""),
        };
        let mut out = Vec::with_capacity(32);
        let _ = Frame::close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
        .format(&mut out);
        out
    }
}

/// The WebSocket close status for a fatal ERROR (SPEC.md 13.5).
pub(crate) fn close_code(code: ErrorCode) -> CloseCode {
    match code {
        ErrorCode::ShuttingDown => CloseCode::Away,
        ErrorCode::ServerFull | ErrorCode::Overloaded => CloseCode::Again,
        ErrorCode::InvalidFrame
        | ErrorCode::UnsupportedVersion
        | ErrorCode::UnknownMessageType
        | ErrorCode::ParseError
        | ErrorCode::InvalidPayload => CloseCode::Protocol,
        ErrorCode::Unknown => CloseCode::Error,
        _ => CloseCode::Policy,
    }
}

/// The Relay length field of the frame starting `pos` bytes into
/// `bufs[index]`, read across slices if it must be.
fn relay_length(bufs: &[IoSlice<'_>], index: usize, pos: usize) -> Option<usize> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    let mut got = 0;
    let mut skip = pos;
    for buf in &bufs[index..] {
        let bytes = buf.get(skip..).unwrap_or_default();
        skip = 0;
        let n = (LENGTH_PREFIX - got).min(bytes.len());
        prefix[got..got + n].copy_from_slice(&bytes[..n]);
        got += n;
        if got == LENGTH_PREFIX {
            return Some(u32::from_be_bytes(prefix) as usize);
        }
    }
    None
}

/// The code of a whole Relay `frame` that is a fatal ERROR. Only ERROR
/// frames are decoded: one type byte is all the hot path looks at.
fn fatal_code(frame: &[u8]) -> Option<ErrorCode> {
    if frame.get(5) != Some(&(MessageType::Error as u8)) {
        return None;
    }
    let payload = frame.get(HEADER_LEN..)?;
    let error: ErrorPayload = serde_json::from_slice(payload).ok()?;
    error.fatal.then_some(error.code)
}

impl<W: WriteHalf> WriteHalf for WsWrite<W> {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write(bufs, true)
    }

    fn write_vectored_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write(bufs, false)
    }

    fn has_pending(&self) -> bool {
        self.prefix_due()
            || (self.frame_left == 0 && self.link.signalled())
            || self.inner.has_pending()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.flush_control()?;
        self.inner.flush_pending()
    }

    fn close_write(&mut self) {
        let flushed = self.flush_control().is_ok();
        if flushed && self.link.is_open() && self.frame_left == 0 && !self.close_sent {
            self.close_sent = true;
            let frame = self.close_frame();
            let mut sent = 0;
            // Bounded: each write waits at most a check interval, and a
            // client that takes nothing makes it fail.
            while sent < frame.len() {
                match self.inner.write_vectored(&[IoSlice::new(&frame[sent..])]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sent += n,
                }
            }
        }
        self.inner.close_write();
    }

    fn unsent_bytes(&self) -> Option<usize> {
        self.inner.unsent_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use parking_lot::Mutex;

    use super::*;

    /// Takes at most `budget` bytes per write, records them.
    #[derive(Clone, Default)]
    struct Script {
        written: Arc<Mutex<Vec<u8>>>,
        budget: Arc<AtomicUsize>,
    }

    impl WriteHalf for Script {
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let budget = self.budget.load(Ordering::Relaxed);
            let mut out = self.written.lock();
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(budget - n);
                out.extend_from_slice(&buf[..take]);
                n += take;
                if n == budget {
                    break;
                }
            }
            Ok(n)
        }

        fn write_vectored_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.write_vectored(bufs)
        }

        fn close_write(&mut self) {}
    }

    fn relay(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 3) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&[1, kind, 0]);
        out.extend_from_slice(payload);
        out
    }

    fn framed(relay: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        header.format(relay.len() as u64, &mut out).unwrap();
        out.extend_from_slice(relay);
        out
    }

    fn open_writer(budget: usize) -> (WsWrite<Script>, Script) {
        let script = Script::default();
        script.budget.store(budget, Ordering::Relaxed);
        let link = Arc::new(Link::default());
        link.respond(b"101!".to_vec(), true);
        (WsWrite::new(script.clone(), link), script)
    }

    #[test]
    fn every_relay_frame_becomes_one_message_whatever_the_writes_take() {
        let a = relay(4, &[7; 300]);
        let b = relay(5, &[]);
        let batch = [a.clone(), b.clone()].concat();
        let c = relay(4, &[9; 70_000]);
        let expected = [b"101!".to_vec(), framed(&a), framed(&b), framed(&c)].concat();
        for budget in [1, 2, 3, 5, 11, 64, 1000, usize::MAX] {
            let (mut writer, script) = open_writer(budget);
            let bufs = [batch.clone(), c.clone()];
            let total = batch.len() + c.len();
            let mut done = 0;
            while done < total {
                let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
                let mut view = &mut slices[..];
                IoSlice::advance_slices(&mut view, done);
                done += writer.write_vectored(view).unwrap();
            }
            assert_eq!(*script.written.lock(), expected, "budget {budget}");
        }
    }

    #[test]
    fn the_close_frame_carries_the_final_errors_code() {
        let (mut writer, script) = open_writer(usize::MAX);
        let error = ErrorPayload::new(ErrorCode::SlowConsumer, "too slow").fatal();
        let mut frame = Vec::new();
        protocol::encode_json(&mut frame, MessageType::Error, &error).unwrap();
        writer.write_vectored(&[IoSlice::new(&frame)]).unwrap();
        writer.close_write();
        let written = script.written.lock().clone();
        let close = &written[4 + framed(&frame).len()..];
        // FIN + close, length 2 + 13, status 1008, reason.
        assert_eq!(&close[..4], &[0x88, 15, 0x03, 0xf0]);
        assert_eq!(&close[4..], b"SLOW_CONSUMER");
    }

    #[test]
    fn nothing_is_written_before_the_upgrade() {
        let script = Script::default();
        script.budget.store(usize::MAX, Ordering::Relaxed);
        let mut writer = WsWrite::new(script.clone(), Arc::new(Link::default()));
        let frame = relay(5, &[]);
        let error = writer.write_vectored(&[IoSlice::new(&frame)]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotConnected);
        writer.close_write();
        assert!(script.written.lock().is_empty());
    }
}
