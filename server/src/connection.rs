//! A connection's reader thread: reads, decodes with the protocol crate's
//! `Decoder`, handles each request, and queues what it produces.
//!
//! The reader owns everything about the connection that only it changes (its
//! rooms, its name, its decoder), so none of that needs a lock. It is also
//! the only thread that removes the connection from rooms, which makes room
//! cleanup happen exactly once however the connection ends.

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::{
    BinaryDelivery, Content, Decoder, ErrorCode, ErrorPayload, Flags, Frame, HelloReply,
    MemberChange, MemberEvent, MessageType, Request, RoomReply, begin_frame, end_frame,
};
use serde::Serialize;

use crate::outbox::{Outbox, Target};
use crate::peer::{CloseReason, Peer};
use crate::server::Shared;
use crate::state::ConnState;

/// How often a closing connection looks at how much the client still has to
/// receive.
const LINGER_POLL: Duration = Duration::from_millis(50);
/// Silence after which a connection thread gives back its spare stack (and
/// the reader its read buffer).
pub(crate) const IDLE_TRIM_AFTER: Duration = Duration::from_millis(250);

/// Why the reader stopped serving.
#[derive(Debug)]
enum Stop {
    /// End of stream or a reset from the client.
    PeerClosed,
    /// Another thread closed the connection (slow consumer, shutdown, write failure).
    External,
    /// A fatal protocol error, already queued for the client.
    Fatal,
}

/// What the reader knows about its connection.
struct Session {
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    /// `c{id}`.
    connection_id: String,
    user: Option<String>,
    echo: bool,
    /// `"from":"c7","user":"ann"` — the part of every delivery that names the
    /// publisher, escaped once at HELLO.
    publisher_json: Vec<u8>,
    rooms: HashSet<Arc<str>>,
    outbox: Outbox,
    /// Milliseconds since the Unix epoch at the last read.
    now_ms: u64,
    bytes_in: u64,
    /// Frames of the current read not yet added to the shared counter.
    frames_uncounted: u64,
}

pub(crate) fn run_reader(shared: Arc<Shared>, peer: Arc<Peer>) {
    let connection_id = format!("c{}", peer.id);
    let mut session = Session {
        publisher_json: Vec::new(),
        shared,
        peer,
        connection_id,
        user: None,
        echo: false,
        rooms: HashSet::new(),
        outbox: Outbox::default(),
        now_ms: 0,
        bytes_in: 0,
        frames_uncounted: 0,
    };
    let _exit = crate::server::ThreadExit::reader(&session.shared, &session.peer);
    let wait_mask = crate::wake::block_in_this_thread();
    let stop = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.serve(&wait_mask)))
        .unwrap_or_else(|_| {
            // A bug, not the client's doing: still close the connection
            // properly, so its rooms and counters stay right.
            log::error!(
                "c{}: reader panicked; closing the connection",
                session.peer.id
            );
            session.shared.counters.thread_panics.fetch_add(1, Relaxed);
            session.peer.close(CloseReason::Fatal);
            Stop::External
        });
    session.leave_all_rooms();
    match stop {
        Stop::PeerClosed => {
            session.peer.close(CloseReason::PeerClosed);
        }
        Stop::External | Stop::Fatal => session.linger(),
    }
    session.peer.bytes_in.store(session.bytes_in, Relaxed);
}

/// Bytes sent but not yet acknowledged by the client (`SIOCOUTQ`).
fn unsent_bytes(stream: &std::net::TcpStream) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut unsent: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int for a TCP socket.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut unsent) };
    (rc == 0).then_some(usize::try_from(unsent).unwrap_or(0))
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl Session {
    fn count_frames_in(&mut self) {
        let frames = std::mem::take(&mut self.frames_uncounted);
        if frames > 0 {
            self.shared.counters.frames_in.fetch_add(frames, Relaxed);
        }
    }

    fn config(&self) -> &crate::Config {
        &self.shared.config
    }

    fn serve(&mut self, wait_mask: &libc::sigset_t) -> Stop {
        let idle = self.config().idle_timeout;
        let mut decoder = Decoder::new(self.config().max_frame);
        let mut last_frame = Instant::now();
        // Whether the connection is idle: no read buffer, waiting in ppoll.
        let mut trimmed = false;
        let mut stack = crate::thread::StackTrim::default();
        let mut timeout_set = IDLE_TRIM_AFTER.min(idle);
        if self
            .peer
            .stream
            .set_read_timeout(Some(timeout_set))
            .is_err()
        {
            return Stop::PeerClosed;
        }
        loop {
            if self.peer.is_closing() {
                return Stop::External;
            }
            // The idle clock runs from the last complete frame, so a partial
            // frame trickling in does not keep a connection alive.
            let left = idle.saturating_sub(last_frame.elapsed());
            if left.is_zero() {
                return self.fatal(
                    ErrorCode::IdleTimeout,
                    format!(
                        "no complete frame for {} s; send HEARTBEAT frames to stay connected",
                        idle.as_secs_f64()
                    ),
                );
            }
            // Never block in read() for long: a close from another thread
            // is only seen between reads or inside the idle wait below.
            let wanted = if trimmed {
                left
            } else {
                left.min(IDLE_TRIM_AFTER)
            };
            if wanted.abs_diff(timeout_set) > Duration::from_millis(5) {
                if self
                    .peer
                    .stream
                    .set_read_timeout(Some(wanted.max(Duration::from_millis(1))))
                    .is_err()
                {
                    return Stop::PeerClosed;
                }
                timeout_set = wanted;
            }
            if trimmed {
                // Idle: wait for input without holding a read buffer, in a
                // wait that a close from another thread interrupts.
                match crate::wake::wait_readable(&self.peer.stream, wanted, wait_mask) {
                    Ok(ready) => trimmed = !ready,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::debug!("{}: wait failed: {e}", self.connection_id);
                        return Stop::PeerClosed;
                    }
                }
                continue;
            }
            let n = match (&self.peer.stream).read(decoder.read_buf()) {
                Ok(0) => return Stop::PeerClosed,
                Ok(n) => n,
                Err(e) if is_timeout(&e) => {
                    // Quiet for a while: give back the read buffer and
                    // the stack pages this thread is not using.
                    decoder.release_if_empty();
                    stack.trim();
                    trimmed = true;
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("{}: read failed: {e}", self.connection_id);
                    return Stop::PeerClosed;
                }
            };
            decoder.commit(n);
            self.bytes_in += n as u64;
            self.shared.counters.bytes_in.fetch_add(n as u64, Relaxed);
            self.now_ms = unix_ms();
            self.outbox.hint = n + n / 2 + 256;
            let mut frames = 0u64;
            let stop = loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if self.peer.is_closing() {
                            // Closed by another thread mid-read: nothing more
                            // from this client is served.
                            break Some(Stop::External);
                        }
                        frames += 1;
                        self.frames_uncounted += 1;
                        if let Some(stop) = self.handle(&frame) {
                            break Some(stop);
                        }
                    }
                    Ok(None) => break None,
                    Err(error) => break Some(self.fatal(error.code(), error.to_string())),
                }
            };
            if frames > 0 {
                last_frame = Instant::now();
            }
            // One shared-counter update per read, not per frame.
            self.count_frames_in();
            if let Some(stop) = stop {
                return stop;
            }
            self.flush();
        }
    }

    /// Handles one frame; `Some` ends the connection.
    #[inline(never)]
    fn handle(&mut self, frame: &Frame<'_>) -> Option<Stop> {
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "{} → {} v1 flags={:?} payload={}B",
                self.connection_id,
                frame.kind,
                frame.flags,
                frame.payload.len()
            );
        }
        let request = Request::parse(frame);
        let state = self.peer.state.get();
        if state == ConnState::Init && frame.kind != MessageType::Hello {
            return Some(match request {
                Err(error) if error.code == ErrorCode::ParseError => {
                    self.fatal(error.code, error.message)
                }
                _ => self.fatal(
                    ErrorCode::HelloRequired,
                    format!("{} before HELLO; send HELLO first", frame.kind),
                ),
            });
        }
        let request = match request {
            Ok(request) => request,
            Err(error) if error.code.is_fatal() => {
                return Some(self.fatal(error.code, error.message));
            }
            Err(error) => {
                self.reply_error(error.code, &error.message);
                return None;
            }
        };
        match request {
            Request::Hello(hello) => {
                if state == ConnState::Init {
                    if self.peer.state.advance(ConnState::Open).is_err() {
                        return Some(Stop::External);
                    }
                    log::debug!("{}: INIT → OPEN", self.connection_id);
                    self.set_identity(hello.user_id, hello.echo);
                }
                let reply = HelloReply {
                    status: "connected".to_owned(),
                    connection_id: self.connection_id.clone(),
                    server_version: env!("CARGO_PKG_VERSION").to_owned(),
                    max_frame_size: self.config().max_frame,
                    idle_timeout_ms: self.config().idle_timeout.as_millis() as u64,
                    stats: {
                        // Include this HELLO and the frames before it.
                        self.count_frames_in();
                        Some(self.shared.counters.snapshot())
                    },
                };
                self.reply(MessageType::Hello, &reply);
            }
            Request::Join(room) => self.join(&room),
            Request::Leave(room) => self.leave(&room),
            Request::Publish { room, content } => self.publish(&room, content),
            Request::Heartbeat { flags, payload } => {
                self.to(Target::Myself);
                let start = begin_frame(&mut self.outbox.buf, MessageType::Heartbeat, flags);
                self.outbox.buf.extend_from_slice(payload);
                self.finish_frame(start);
                self.flush_if_large();
            }
            Request::ClientError => {
                log::debug!("{}: ERROR frame from client ignored", self.connection_id);
            }
        }
        None
    }

    fn set_identity(&mut self, user: Option<String>, echo: bool) {
        self.echo = echo;
        self.publisher_json.clear();
        self.publisher_json.extend_from_slice(b"\"from\":");
        push_json_str(&mut self.publisher_json, &self.connection_id);
        if let Some(user) = &user {
            self.publisher_json.extend_from_slice(b",\"user\":");
            push_json_str(&mut self.publisher_json, user);
        }
        self.user = user;
    }

    fn join(&mut self, room: &str) {
        let member = self.rooms.contains(room);
        if !member && self.rooms.len() >= self.config().max_rooms_per_connection {
            let message = format!(
                "JOIN_ROOM {room:?}: already in {} rooms, the most one connection may join; leave one first",
                self.rooms.len()
            );
            self.reply_error(ErrorCode::InvalidRoom, &message);
            return;
        }
        self.flush();
        let joined = self
            .shared
            .rooms
            .join(room, &self.peer, &self.shared.counters);
        if joined.new {
            self.rooms.insert(Arc::clone(&joined.name));
            log::debug!(
                "{} joined {room:?} ({} members)",
                self.connection_id,
                joined.members
            );
        }
        let reply = RoomReply {
            status: "joined".to_owned(),
            room: room.to_owned(),
            members: joined.members as u64,
        };
        self.reply(MessageType::JoinRoom, &reply);
        if joined.new && joined.members > 1 {
            self.member_event(joined.name, MemberChange::Joined);
        }
    }

    fn leave(&mut self, room: &str) {
        self.flush();
        let members = match self.rooms.take(room) {
            Some(name) => self.depart(name),
            None => self.shared.rooms.members(room),
        };
        let reply = RoomReply {
            status: "left".to_owned(),
            room: room.to_owned(),
            members: members as u64,
        };
        self.reply(MessageType::LeaveRoom, &reply);
    }

    /// Takes this connection out of the registry's `room` (already removed
    /// from `self.rooms`) and tells whoever remains; returns how many do.
    fn depart(&mut self, room: Arc<str>) -> usize {
        let left = self
            .shared
            .rooms
            .leave(&room, self.peer.id, &self.shared.counters);
        if left > 0 {
            self.member_event(room, MemberChange::Left);
        }
        left
    }

    /// Tells the other members of `room` that this connection came or went.
    fn member_event(&mut self, room: Arc<str>, change: MemberChange) {
        let event = MemberEvent {
            change,
            room: room.to_string(),
            connection_id: self.connection_id.clone(),
            user: self.user.clone(),
            timestamp: self.now_ms,
        };
        self.to(Target::Room {
            name: room,
            include_self: false,
        });
        let start = begin_frame(&mut self.outbox.buf, MessageType::Message, Flags::JSON);
        let _ = serde_json::to_writer(&mut self.outbox.buf, &event);
        self.finish_frame(start);
        self.flush();
    }

    #[inline(never)]
    fn leave_all_rooms(&mut self) {
        self.flush();
        let rooms: Vec<Arc<str>> = self.rooms.drain().collect();
        for room in rooms {
            self.depart(room);
        }
    }

    fn publish(&mut self, room: &str, content: Content<'_>) {
        let target_is_room = matches!(&self.outbox.target, Target::Room { name, include_self } if **name == *room && *include_self == self.echo);
        let name = if target_is_room && self.outbox.frames > 0 {
            None
        } else {
            match self.rooms.get(room) {
                Some(name) => Some(Arc::clone(name)),
                None => {
                    let message = format!(
                        "MESSAGE to {room:?}, which you have not joined; send JOIN_ROOM first"
                    );
                    self.reply_error(ErrorCode::NotInRoom, &message);
                    return;
                }
            }
        };
        if let Some(name) = name {
            self.to(Target::Room {
                name,
                include_self: self.echo,
            });
        }
        let buf = &mut self.outbox.buf;
        let mark = buf.len();
        match content {
            Content::Json(raw) => {
                let start = begin_frame(buf, MessageType::Message, Flags::JSON);
                buf.extend_from_slice(b"{\"room\":");
                push_json_str(buf, room);
                buf.push(b',');
                buf.extend_from_slice(&self.publisher_json);
                buf.extend_from_slice(b",\"content\":");
                buf.extend_from_slice(raw.get().as_bytes());
                buf.extend_from_slice(b",\"timestamp\":");
                push_u64(buf, self.now_ms);
                buf.push(b'}');
                let _ = end_frame(buf, start);
            }
            Content::Binary(body) => {
                let start = begin_frame(buf, MessageType::Message, Flags::BINARY);
                let delivery = BinaryDelivery {
                    room,
                    from: &self.connection_id,
                    body,
                };
                let _ = delivery.encode(buf);
                let _ = end_frame(buf, start);
            }
        }
        let length = buf.len() - mark - protocol::LENGTH_PREFIX;
        if length > self.shared.config.max_frame as usize {
            buf.truncate(mark);
            let message = format!(
                "MESSAGE would be {length} bytes once relayed, over the {} byte maximum; send smaller content",
                self.shared.config.max_frame
            );
            self.reply_error(ErrorCode::InvalidPayload, &message);
            return;
        }
        self.outbox.frames += 1;
        self.flush_if_large();
    }

    /// Flushes once the batch passes a size that keeps it well inside one
    /// member's queue, however much a single read expands when relayed.
    fn flush_if_large(&mut self) {
        let cap = (self.shared.config.queue_bytes / 8).max(64 * 1024);
        if self.outbox.buf.len() >= cap {
            self.flush();
        }
    }

    /// Makes the outbox gather for `target`, flushing what it held for another.
    fn to(&mut self, target: Target) {
        if !self.outbox.is_for(&target) {
            self.flush();
        }
        self.outbox.start(target);
    }

    fn finish_frame(&mut self, start: protocol::FrameStart) {
        match end_frame(&mut self.outbox.buf, start) {
            Ok(_) => self.outbox.frames += 1,
            Err(error) => log::error!("{}: frame not encoded: {error}", self.connection_id),
        }
    }

    fn reply<T: Serialize>(&mut self, kind: MessageType, value: &T) {
        self.to(Target::Myself);
        let start = begin_frame(&mut self.outbox.buf, kind, Flags::JSON);
        let _ = serde_json::to_writer(&mut self.outbox.buf, value);
        self.finish_frame(start);
    }

    fn reply_error(&mut self, code: ErrorCode, message: &str) {
        // Debug only: a client can cause these as fast as it can send.
        log::debug!("{}: error {code}: {message}", self.connection_id);
        self.shared.counters.error_sent(code);
        self.reply(MessageType::Error, &ErrorPayload::new(code, message));
    }

    /// Queues what the outbox gathered.
    #[inline(never)]
    fn flush(&mut self) {
        let Some((target, batch)) = self.outbox.take() else {
            return;
        };
        let config = &self.shared.config;
        match target {
            Target::Nowhere => {}
            Target::Myself => {
                self.peer
                    .push_or_cut(&batch, config.stall_timeout, &self.shared.counters);
            }
            Target::Room { name, include_self } => {
                let skip = (!include_self).then_some(self.peer.id);
                self.shared.rooms.broadcast(
                    &name,
                    &batch,
                    skip,
                    config.stall_timeout,
                    &self.shared.counters,
                );
            }
        }
    }

    /// Queues a fatal ERROR after everything already produced, and closes.
    #[inline(never)]
    fn fatal(&mut self, code: ErrorCode, message: String) -> Stop {
        log::info!("{}: closing: {code}: {message}", self.connection_id);
        self.flush();
        // Out of every room before the client can see the ERROR, so a client
        // that reconnects at once never finds its old self still a member.
        self.leave_all_rooms();
        // The writer sends it after everything already queued.
        self.peer.close_fatal(code, &message);
        Stop::Fatal
    }

    /// Reads and discards input after the connection was closed, until the
    /// client has received everything we sent, or closes its side, or stops
    /// making progress for the write timeout.
    ///
    /// Closing a socket that has unread input, or that receives input after
    /// the close, makes the kernel reset the connection and throw away what
    /// is still in its send buffer: the end of the backlog and the final
    /// ERROR. So the socket is only closed once that buffer is empty
    /// (`SIOCOUTQ`), and input is read until then.
    #[inline(never)]
    fn linger(&self) {
        let write_timeout = self.shared.config.write_timeout;
        let mut sink = [0u8; 4096];
        let mut unsent = usize::MAX;
        let mut progress_at = Instant::now();
        loop {
            let now = Instant::now();
            if self.peer.writer_done() {
                let left = unsent_bytes(&self.peer.stream).unwrap_or(0);
                if left == 0 {
                    return;
                }
                if left < unsent {
                    unsent = left;
                    progress_at = now;
                }
            } else {
                // The writer has its own write timeout.
                progress_at = now;
            }
            if now - progress_at >= write_timeout {
                return;
            }
            if self
                .peer
                .stream
                .set_read_timeout(Some(LINGER_POLL))
                .is_err()
            {
                return;
            }
            match (&self.peer.stream).read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}
