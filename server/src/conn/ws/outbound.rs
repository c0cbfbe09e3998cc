//! The writer's side of a WebSocket connection: each Relay frame becomes
//! one binary message.
//!
//! The write half is handed bytes, not frames, and a write may stop
//! anywhere: it walks the Relay length prefixes to find where each frame
//! starts and remembers how much of the current frame is still due. Each
//! write takes up to [`CHUNK`] bytes of the caller's frames and copies them,
//! each behind its 2 to 10 byte header, into `out`, this connection's
//! buffer, and sends that with one `send`; new frames are taken only once
//! `out` is empty, as TLS takes plaintext only once its records are out.
//! Handing the kernel a header and a payload slice per frame instead (no
//! copy) gave `bench --ws` fan-out 1→100 29% of TCP's rate, where one
//! buffer gave 46% on the same loaded 2-core machine: the socket copies
//! many tiny slices far slower than one buffer, and an extra copy of a
//! frame that is already in cache is cheap. (On a quieter machine TCP
//! gains more than WebSocket: about a third.) `out` keeps at
//! most [`OUT_RETAIN`] bytes between writes, so an idle connection holds
//! little and a chat message needs no allocation.
//!
//! Control frames (the upgrade's answer, pongs) go into `out` between Relay
//! frames only. A write tells the caller how many of *its* bytes were
//! taken, never counting headers, so the output's accounting is the same
//! as for TCP; what `out` still holds counts as unsent for the client's
//! progress.
//!
//! Closing sends a close frame after the final ERROR: its status and reason
//! come from that ERROR's code (SPEC.md 13.5), or echo the client's close.

use std::io::{self, IoSlice};
use std::sync::Arc;

use protocol::{ErrorCode, ErrorPayload, HEADER_LEN, LENGTH_PREFIX, MessageType};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::{CloseFrame, Frame};

use super::link::Link;
use crate::conn::transport::WriteHalf;

/// The caller's bytes taken per write at most (as TLS's chunk).
const CHUNK: usize = 64 * 1024;
/// An `out` buffer larger than this is given back once sent.
const OUT_RETAIN: usize = 4 * 1024;
/// The longest header the server writes: unmasked, 64-bit length.
const HEAD: usize = 10;

/// The write half.
#[derive(Debug)]
pub(crate) struct WsWrite<W> {
    inner: W,
    link: Arc<Link>,
    /// Framed bytes not yet in the socket: control frames, headers and the
    /// caller's bytes already taken.
    out: Vec<u8>,
    sent: usize,
    /// Bytes of the current Relay frame not yet taken (its header is in
    /// `out` or sent).
    frame_left: usize,
    /// The code of the last frame taken, when it was a fatal ERROR: the
    /// close frame's reason.
    last_fatal: Option<ErrorCode>,
    close_sent: bool,
}

impl<W: WriteHalf> WsWrite<W> {
    pub(crate) fn new(inner: W, link: Arc<Link>) -> WsWrite<W> {
        WsWrite {
            inner,
            link,
            out: Vec::new(),
            sent: 0,
            frame_left: 0,
            last_fatal: None,
            close_sent: false,
        }
    }

    fn out_due(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Empties `out` once all of it is sent.
    fn reset_out(&mut self) {
        self.sent = 0;
        if self.out.capacity() > OUT_RETAIN {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
    }

    /// Moves the reader's requests into `out`, between Relay frames.
    fn take_control(&mut self) {
        if self.frame_left != 0 || !self.link.signalled() {
            return;
        }
        if let Some(payload) = self.link.take(&mut self.out)
            && self.link.is_open()
        {
            let _ = Frame::pong(payload).format(&mut self.out);
        }
    }

    /// Sends what `out` holds: with `wait`, each send waits at most a check
    /// interval (a timeout is an error); without, as far as the socket
    /// takes it now. Returns whether `out` is empty.
    fn send_out(&mut self, wait: bool) -> io::Result<bool> {
        while self.out_due() {
            let slice = [IoSlice::new(&self.out[self.sent..])];
            let result = if wait {
                self.inner.write_vectored(&slice)
            } else {
                self.inner.write_vectored_now(&slice)
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if !wait && e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.reset_out();
        Ok(true)
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
        self.take_control();
        if !self.send_out(wait)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.take_control();
        let taken = self.frame_into_out(bufs)?;
        // What the socket does not take now is sent by the next call or
        // `flush_pending`; the bytes are ours either way.
        match self.send_out(false) {
            Ok(_) => {}
            Err(e) if is_transient(&e) => {}
            Err(e) if taken == 0 => return Err(e),
            Err(_) => {}
        }
        Ok(taken)
    }

    /// Copies up to [`CHUNK`] bytes of `bufs` into `out`, a header before
    /// each Relay frame's first byte; returns how many.
    fn frame_into_out(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // One allocation for the whole write: the bytes, and room for a
        // 2-byte header per 64 bytes (more for smaller frames grows it).
        let total: usize = bufs.iter().map(|b| b.len()).sum::<usize>().min(CHUNK);
        self.out.reserve(total + total / 32 + HEAD);
        let mut taken = 0;
        'all: for (index, buf) in bufs.iter().enumerate() {
            let mut pos = 0;
            while pos < buf.len() {
                if taken >= CHUNK {
                    break 'all;
                }
                if self.frame_left == 0 {
                    let Some(length) = relay_length(bufs, index, pos) else {
                        if taken == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "a partial Relay frame handed to the WebSocket writer",
                            ));
                        }
                        break 'all;
                    };
                    let frame = LENGTH_PREFIX + length;
                    push_binary_header(&mut self.out, frame);
                    self.last_fatal = buf.get(pos..pos + frame).and_then(fatal_code);
                    self.frame_left = frame;
                }
                let take = self.frame_left.min(buf.len() - pos).min(CHUNK - taken);
                self.out.extend_from_slice(&buf[pos..pos + take]);
                pos += take;
                taken += take;
                self.frame_left -= take;
            }
        }
        Ok(taken)
    }

    /// Writes `out` and the reader's requests, waiting.
    fn flush_control(&mut self) -> io::Result<()> {
        self.take_control();
        self.send_out(true)?;
        Ok(())
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

/// The header of an unmasked, final binary frame of `len` bytes (RFC 6455
/// 5.2): written here, on the hot path, where tungstenite's
/// `FrameHeader::format` goes through `io::Write` for each part; the unit
/// tests check the two agree.
fn push_binary_header(out: &mut Vec<u8>, len: usize) {
    const FIN_BINARY: u8 = 0x82;
    match len {
        0..=125 => out.extend_from_slice(&[FIN_BINARY, len as u8]),
        126..=0xffff => {
            let [hi, lo] = (len as u16).to_be_bytes();
            out.extend_from_slice(&[FIN_BINARY, 126, hi, lo]);
        }
        _ => {
            out.extend_from_slice(&[FIN_BINARY, 127]);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Whether a send error means only "not now".
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
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
        self.out_due()
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
            self.out = self.close_frame();
            self.sent = 0;
            // Bounded: each send waits at most a check interval, and a
            // client that takes nothing makes it fail.
            let _ = self.send_out(true);
        }
        let _ = self.inner.flush_pending();
        self.inner.close_write();
    }

    fn unsent_bytes(&self) -> Option<usize> {
        // Headers included: the client's progress looks a little smaller
        // than it is, never larger.
        let held = self.out.len() - self.sent;
        self.inner.unsent_bytes().map(|in_socket| in_socket + held)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use parking_lot::Mutex;
    use tungstenite::protocol::frame::FrameHeader;
    use tungstenite::protocol::frame::coding::{Data, OpCode};

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
    fn headers_are_what_tungstenite_writes() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            let mut ours = Vec::new();
            push_binary_header(&mut ours, len);
            let mut theirs = Vec::new();
            let header = FrameHeader {
                opcode: OpCode::Data(Data::Binary),
                ..FrameHeader::default()
            };
            header.format(len as u64, &mut theirs).unwrap();
            assert_eq!(ours, theirs, "length {len}");
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
