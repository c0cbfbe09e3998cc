//! The writer's side of a WebSocket connection: each Relay frame goes as
//! one binary message.
//!
//! The output hands this write half each batch already framed (see
//! `framed`): the framing of a broadcast is the same bytes for every
//! WebSocket member, made once and shared, so a write here is the socket
//! write TCP does, one slice per batch. Every handing ends at a message
//! boundary (whole batches, the first perhaps resumed partway); a write
//! the socket takes only part of is walked, from where the last one ended,
//! to learn whether the stream now stands between messages.
//!
//! Control frames (the upgrade's answer, pongs) go into `out`, and out to
//! the socket, only between messages, before the next batch bytes; batch
//! bytes are taken only once `out` is empty. What `out` still holds counts
//! as unsent for the client's progress. `out` keeps at most
//! [`OUT_RETAIN`] bytes between writes, so an idle connection holds little.
//!
//! Closing sends a close frame after the final ERROR, when the stream
//! stands between messages: its status and reason come from that ERROR's
//! code, which the output names ([`WriteHalf::ended_with`]; SPEC.md
//! 13.5), or echo the client's close.
//!
//! Before, each member's writer copied every frame behind its header into a
//! buffer of its own (up to 64 KiB) and sent that: `bench --ws` fan-out
//! 1→100 was about a third of TCP's on a quiet machine (6.84 M against
//! 22.5 M deliveries/s). Handing the kernel a header and a payload slice
//! per frame instead was worse still (29% where the copy gave 46%). The
//! shared framing made a member's write TCP's, yet fan-out stayed near a
//! third (6.59 M against 19.25 M, quiet machine): the rest was elsewhere.
//! The server's reads of a publisher never grew past 4 KiB (see `inbound`:
//! the squeezed-out headers kept each one short of the decoder's offer), so a
//! batch carried a few dozen frames and cost every member a socket write:
//! some 70,000 `sendmsg` a second for a third of the deliveries TCP made
//! with 4,000. And the bench's own WebSocket client copied every payload
//! once more and parsed every header, on the same two cores. With reads
//! topped up and the client taking payloads where they lie, the server
//! spends per delivery over WebSocket what it spends over TCP (perf, same
//! run). Seven runs of `bench --ws --only fanout,latency --repeat 3`,
//! interleaved with seven of the build before, on the shared 2-core machine
//! (load average 3 to 17, other engineers building), gave WebSocket a
//! median 95% of TCP's fan-out 1→100 (before 48%) and 98% at 1→10 (before
//! 41%); ranges 74–110% (before 31–64%) and 54–116% (before 27–50%),
//! leaving out of the first one run in which TCP's fan-out fell to 3 M
//! (127% before, 182% after). Latency p50 was 104 µs against TCP's 92
//! (before 110 against 102), p99 as noisy as the load. Not yet measured on
//! a quiet machine.

use std::io::{self, Cursor, IoSlice};
use std::sync::Arc;

use protocol::ErrorCode;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};

use super::link::Link;
use crate::conn::transport::{Framing, WriteHalf};

/// An `out` buffer larger than this is given back once sent.
const OUT_RETAIN: usize = 4 * 1024;
/// The longest WebSocket header (a masked one; the server's are at most
/// 10 bytes).
const MAX_HEAD: usize = 14;

/// The write half.
#[derive(Debug)]
pub(crate) struct WsWrite<W> {
    inner: W,
    link: Arc<Link>,
    /// Control frames not yet in the socket.
    out: Vec<u8>,
    sent: usize,
    /// Where the batch bytes written so far end.
    position: Position,
    /// The code of the last frame written, when the output named it a
    /// fatal ERROR: the close frame's reason.
    last_fatal: Option<ErrorCode>,
    close_sent: bool,
}

/// Where the batch bytes written so far end, within the messages they
/// make up: between two, or partway through one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Position {
    /// The current message's header as far as written, when a write ended
    /// inside it.
    head: [u8; MAX_HEAD],
    head_len: usize,
    /// Payload bytes of the current message not yet written.
    payload_left: u64,
    /// The bytes stopped making sense as messages (a bug): no control
    /// frame may go in any more, since no boundary is known.
    lost: bool,
}

impl Position {
    fn between_messages(&self) -> bool {
        !self.lost && self.head_len == 0 && self.payload_left == 0
    }

    /// Moves past the first `n` bytes of `bufs`.
    fn advance(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        for buf in bufs {
            if n == 0 || self.lost {
                return;
            }
            let mut bytes = &buf[..buf.len().min(n)];
            n -= bytes.len();
            while !bytes.is_empty() {
                if self.payload_left > 0 {
                    let skip = bytes.len().min(self.payload_left as usize);
                    bytes = &bytes[skip..];
                    self.payload_left -= skip as u64;
                    continue;
                }
                let take = bytes.len().min(MAX_HEAD - self.head_len);
                let have = self.head_len;
                self.head[have..have + take].copy_from_slice(&bytes[..take]);
                let mut cursor = Cursor::new(&self.head[..have + take]);
                match FrameHeader::parse(&mut cursor) {
                    Ok(Some((_, len))) => {
                        bytes = &bytes[cursor.position() as usize - have..];
                        self.head_len = 0;
                        self.payload_left = len;
                    }
                    Ok(None) if have + take < MAX_HEAD => {
                        // The header goes on in the next write.
                        self.head_len = have + take;
                        bytes = &[];
                    }
                    _ => {
                        self.lost = true;
                        return;
                    }
                }
            }
        }
    }
}

impl Position {
    /// How many bytes of `buf`, which goes on from this position, finish
    /// the current message; `None` if it does not end within `buf`.
    fn to_message_end(&self, buf: &[u8]) -> Option<usize> {
        let mut walked = self.clone();
        let mut n = 0;
        while !walked.between_messages() {
            if walked.lost {
                return None;
            }
            if walked.head_len == 0 {
                n += usize::try_from(walked.payload_left).ok()?;
                return (n <= buf.len()).then_some(n);
            }
            // Inside a header: a byte at a time until it is whole.
            let byte = buf.get(n..n + 1)?;
            walked.advance(&[IoSlice::new(byte)], 1);
            n += 1;
        }
        Some(n)
    }
}

impl<W: WriteHalf> WsWrite<W> {
    pub(crate) fn new(inner: W, link: Arc<Link>) -> WsWrite<W> {
        WsWrite {
            inner,
            link,
            out: Vec::new(),
            sent: 0,
            position: Position::default(),
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

    /// Moves the reader's requests into `out`, between messages.
    fn take_control(&mut self) {
        if !self.position.between_messages() || !self.link.signalled() {
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

    /// Writes what the connection takes of `bufs`, framed messages that
    /// end at a message boundary, after any control frame due.
    fn write(&mut self, bufs: &[IoSlice<'_>], wait: bool) -> io::Result<usize> {
        if !self.link.is_open() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the WebSocket upgrade has not finished",
            ));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        self.take_control();
        if !self.send_out(wait)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // A control frame waits for the end of the message under way: this
        // write goes no further, so the next sends it. Handings are whole
        // batches, so that end is in the first slice.
        let first = bufs.iter().find(|buf| !buf.is_empty());
        let to_end = match first {
            Some(first) if self.link.signalled() && !self.position.between_messages() => self
                .position
                .to_message_end(first)
                .map(|end| [IoSlice::new(&first[..end])]),
            _ => None,
        };
        let bufs = to_end.as_ref().map_or(bufs, |slice| &slice[..]);
        let total = if to_end.is_some() {
            bufs[0].len()
        } else {
            total
        };
        let n = if wait {
            self.inner.write_vectored(bufs)?
        } else {
            self.inner.write_vectored_now(bufs)?
        };
        if n > 0 {
            self.last_fatal = None;
        }
        if n == total {
            // Handings end at a message boundary: nothing to walk.
            debug_assert!(
                {
                    let mut walked = self.position.clone();
                    walked.advance(bufs, n);
                    walked.between_messages()
                },
                "handed bytes that end inside a WebSocket message"
            );
            self.position = Position::default();
        } else {
            self.position.advance(bufs, n);
        }
        Ok(n)
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

impl<W: WriteHalf> WriteHalf for WsWrite<W> {
    fn framing(&self) -> Framing {
        Framing::WebSocket
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write(bufs, true)
    }

    fn write_vectored_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write(bufs, false)
    }

    fn ended_with(&mut self, code: ErrorCode) {
        self.last_fatal = Some(code);
    }

    fn has_pending(&self) -> bool {
        self.out_due()
            || (self.position.between_messages() && self.link.signalled())
            || self.inner.has_pending()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.flush_control()?;
        self.inner.flush_pending()
    }

    fn close_write(&mut self) {
        let flushed = self.flush_control().is_ok();
        if flushed && self.link.is_open() && self.position.between_messages() && !self.close_sent {
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
        // Control frames are not counted as written by the output: while
        // they are in flight the client's progress looks a little smaller
        // than it is, never larger.
        let held = self.out.len() - self.sent;
        self.inner.unsent_bytes().map(|in_socket| in_socket + held)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use parking_lot::Mutex;
    use protocol::{ErrorPayload, Flags, MessageType};
    use tungstenite::protocol::frame::coding::{Data, OpCode};

    use super::*;
    use crate::budget::MemoryBudget;
    use crate::conn::batch::{Batch, Outgoing};
    use crate::conn::output::{Accounts, Flushed, Output};
    use crate::counters::Counters;

    /// Takes at most `budget` bytes per write (a write that may not wait
    /// takes none at 0), and records them.
    #[derive(Clone, Default)]
    struct Script {
        written: Arc<Mutex<Vec<u8>>>,
        budget: Arc<AtomicUsize>,
    }

    impl Script {
        fn take(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let budget = self.budget.load(Ordering::Relaxed);
            if budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
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
    }

    impl WriteHalf for Script {
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.take(bufs)
        }

        fn write_vectored_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.take(bufs)
        }

        fn close_write(&mut self) {}
    }

    /// The queue's side of the accounting: the Relay bytes it was told
    /// were written.
    #[derive(Default)]
    struct Ledger(AtomicUsize);

    impl Accounts for Ledger {
        fn id(&self) -> u64 {
            1
        }

        fn written(&self, len: usize) {
            self.0.fetch_add(len, Ordering::Relaxed);
        }

        fn reserve_unbounded(&self, _len: usize) {}

        fn ring(&self) {}
    }

    impl Ledger {
        fn get(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    /// A member: its queue, its output, what reached its socket.
    struct Member {
        tx: crossbeam_channel::Sender<Outgoing>,
        output: Output,
        script: Script,
        link: Option<Arc<Link>>,
        ledger: Ledger,
    }

    impl Member {
        /// A WebSocket member past its upgrade (an empty answer, so the
        /// socket sees only messages), or a TCP one.
        fn new(ws: bool, memory: &Arc<MemoryBudget>) -> Member {
            let (tx, rx) = crossbeam_channel::bounded(16);
            let output = Output::new(rx);
            let script = Script::default();
            script.budget.store(usize::MAX, Ordering::Relaxed);
            let link = ws.then(|| {
                let link = Arc::new(Link::default());
                link.respond(Vec::new(), true);
                link
            });
            let sink: Box<dyn WriteHalf> = match &link {
                Some(link) => Box::new(WsWrite::new(script.clone(), Arc::clone(link))),
                None => Box::new(script.clone()),
            };
            output.attach(sink, Duration::from_secs(30), memory);
            Member {
                tx,
                output,
                script,
                link,
                ledger: Ledger::default(),
            }
        }

        fn budget(&self, budget: usize) {
            self.script.budget.store(budget, Ordering::Relaxed);
        }

        /// Writes everything, as the writer thread does.
        fn write_all(&self) {
            self.budget(usize::MAX);
            while self.output.has_work() {
                self.output
                    .write_waiting(&self.ledger, &Counters::default())
                    .unwrap();
            }
        }

        fn written(&self) -> Vec<u8> {
            self.script.written.lock().clone()
        }
    }

    fn relay(payload: usize) -> Vec<u8> {
        let mut frame = Vec::new();
        let start = protocol::begin_frame(&mut frame, MessageType::Message, Flags::BINARY);
        frame.extend((0..payload).map(|i| i as u8));
        protocol::end_frame(&mut frame, start).unwrap();
        frame
    }

    fn message(relay: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::message(relay.to_vec(), OpCode::Data(Data::Binary), true)
            .format(&mut out)
            .unwrap();
        out
    }

    /// For each framed byte of `frames`' messages, whether it is a Relay
    /// byte (not a header's); and where each message ends.
    fn layout(frames: &[Vec<u8>]) -> (Vec<bool>, Vec<usize>) {
        let mut is_relay = Vec::new();
        let mut ends = Vec::new();
        for frame in frames {
            let head = message(frame).len() - frame.len();
            is_relay.extend(std::iter::repeat_n(false, head));
            is_relay.extend(std::iter::repeat_n(true, frame.len()));
            ends.push(is_relay.len());
        }
        (is_relay, ends)
    }

    #[test]
    fn a_write_stopped_at_any_byte_resumes_exactly_and_a_pong_waits_for_the_message_end() {
        let frames = [relay(0), relay(5), relay(130), relay(2)];
        let framed: Vec<u8> = frames.iter().flat_map(|f| message(f)).collect();
        let (is_relay, ends) = layout(&frames);
        let pong = {
            let mut out = Vec::new();
            Frame::pong(b"hi".to_vec()).format(&mut out).unwrap();
            out
        };
        for k in 0..=framed.len() {
            let memory = Arc::new(MemoryBudget::unlimited());
            let member = Member::new(true, &memory);
            member
                .tx
                .send(Arc::new(Batch::new(frames.concat(), None)))
                .unwrap();
            // A publisher's write that the socket takes only `k` bytes of.
            member.budget(k);
            let flushed = member
                .output
                .flush_now(&member.ledger, &Counters::default());
            assert_eq!(flushed == Flushed::All, k == framed.len(), "at {k}");
            assert_eq!(member.written(), framed[..k], "at {k}");
            let relay_so_far = is_relay[..k].iter().filter(|&&r| r).count();
            assert_eq!(member.ledger.get(), relay_so_far, "credited at {k}");
            assert_eq!(member.output.sent().bytes(), relay_so_far as u64);
            // A ping arrives now: its pong goes at the next message end.
            member.link.as_ref().unwrap().pong(b"hi".to_vec());
            member.write_all();
            let at = std::iter::once(0)
                .chain(ends.iter().copied())
                .find(|&end| end >= k)
                .unwrap();
            let expected = [&framed[..at], &pong[..], &framed[at..]].concat();
            assert_eq!(member.written(), expected, "stopped at {k}");
            assert_eq!(member.ledger.get(), frames.concat().len());
            assert_eq!(member.output.sent().frames(), frames.len() as u64);
            assert_eq!(memory.used(), 0, "the framing went with the batch");
        }
    }

    #[test]
    fn one_batch_goes_to_a_tcp_member_as_is_and_to_websocket_members_framed_once() {
        let memory = Arc::new(MemoryBudget::unlimited());
        let tcp = Member::new(false, &memory);
        let ws = [Member::new(true, &memory), Member::new(true, &memory)];
        let frames = [relay(10), relay(300), relay(0)];
        let framed: Vec<u8> = frames.iter().flat_map(|f| message(f)).collect();
        let batch = Arc::new(Batch::new(frames.concat(), None));
        for member in ws.iter().chain([&tcp]) {
            member.tx.send(Arc::clone(&batch)).unwrap();
        }
        tcp.write_all();
        assert_eq!(tcp.written(), frames.concat());
        assert_eq!(memory.used(), 0, "no framing for TCP");
        // Both WebSocket members part way, at different bytes.
        ws[0].budget(3);
        ws[1].budget(150);
        for member in &ws {
            member
                .output
                .flush_now(&member.ledger, &Counters::default());
        }
        assert_eq!(memory.used(), framed.len() as u64, "framed once, shared");
        for member in &ws {
            member.write_all();
            assert_eq!(member.written(), framed);
            assert_eq!(member.ledger.get(), frames.concat().len());
        }
        assert_eq!(tcp.ledger.get(), frames.concat().len());
        assert_eq!(memory.used(), framed.len() as u64, "still queued here");
        drop(batch);
        assert_eq!(memory.used(), 0);
    }

    fn close_frame(code: CloseCode, reason: &str) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
        .format(&mut out)
        .unwrap();
        out
    }

    #[test]
    fn the_close_frame_follows_the_final_error_and_carries_its_code() {
        let memory = Arc::new(MemoryBudget::unlimited());
        let member = Member::new(true, &memory);
        let chat = relay(40);
        member
            .tx
            .send(Arc::new(Batch::new(chat.clone(), None)))
            .unwrap();
        let error = ErrorPayload::new(ErrorCode::SlowConsumer, "too slow").fatal();
        let last = Arc::new(Batch::error_payload(&error));
        // The socket takes a few bytes at a time: the ERROR is written in
        // parts, and the close comes only after its last byte.
        member.budget(5);
        assert!(member.output.finish(
            &member.ledger,
            &Counters::default(),
            Some(Arc::clone(&last))
        ));
        let expected = [
            message(&chat),
            message(&last.bytes),
            close_frame(CloseCode::Policy, "SLOW_CONSUMER"),
        ]
        .concat();
        assert_eq!(member.written(), expected);
        assert_eq!(
            &expected[expected.len() - 17..][..4],
            &[0x88, 15, 0x03, 0xf0]
        );
    }

    #[test]
    fn without_a_final_error_the_close_is_normal_or_echoes_the_client() {
        for (client, code) in [(None, CloseCode::Normal), (Some(1001), CloseCode::Away)] {
            let member = Member::new(true, &Arc::default());
            let link = member.link.as_ref().unwrap();
            if let Some(status) = client {
                link.client_closed(Some(status));
            }
            // A non-fatal ERROR last is not a reason.
            let error = ErrorPayload::new(ErrorCode::RateLimited, "slow down");
            let batch = Arc::new(Batch::error_payload(&error));
            member.tx.send(Arc::clone(&batch)).unwrap();
            assert!(
                !member
                    .output
                    .finish(&member.ledger, &Counters::default(), None)
            );
            let expected = [message(&batch.bytes), close_frame(code, "")].concat();
            assert_eq!(member.written(), expected);
        }
    }

    #[test]
    fn a_stream_cut_inside_a_message_gets_no_close_frame() {
        let member = Member::new(true, &Arc::default());
        member
            .tx
            .send(Arc::new(Batch::new(relay(100), None)))
            .unwrap();
        member.budget(7);
        member
            .output
            .flush_now(&member.ledger, &Counters::default());
        // The socket takes nothing more: the output gives up.
        member.budget(0);
        member
            .output
            .shed(&member.ledger, &Counters::default(), None);
        assert_eq!(
            member.written().len(),
            7,
            "no close frame after part of a message"
        );
    }

    #[test]
    fn nothing_is_written_before_the_upgrade() {
        let script = Script::default();
        script.budget.store(usize::MAX, Ordering::Relaxed);
        let mut writer = WsWrite::new(script.clone(), Arc::new(Link::default()));
        let frame = message(&relay(5));
        let error = writer.write_vectored(&[IoSlice::new(&frame)]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotConnected);
        writer.close_write();
        assert!(script.written.lock().is_empty());
    }

    #[test]
    fn a_position_walked_in_pieces_knows_the_message_ends() {
        let frames = [relay(0), relay(200), relay(70_000), relay(1)];
        let framed: Vec<u8> = frames.iter().flat_map(|f| message(f)).collect();
        let (_, ends) = layout(&frames);
        for step in [1, 2, 3, 9, 4_000] {
            let mut position = Position::default();
            let mut at = 0;
            while at < framed.len() {
                let n = step.min(framed.len() - at);
                // Handed as two slices, split in the middle.
                let (a, b) = framed[at..].split_at((framed.len() - at) / 2);
                position.advance(&[IoSlice::new(a), IoSlice::new(b)], n);
                at += n;
                assert_eq!(
                    position.between_messages(),
                    ends.contains(&at),
                    "{step}: {at}"
                );
            }
        }
    }
}
