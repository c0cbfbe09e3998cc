//! chaos: many clients doing everything at once, then a strict audit.
//!
//! N clients act at random for D seconds: they join and leave rooms, publish
//! bursts, send heartbeats, disconnect (gracefully, with FIN, with RST, and in
//! the middle of a frame) and reconnect. Some stop reading for a while
//! (pausers), some stop for good (stuck), some send malformed frames. Every
//! client says HELLO with `echo` on, so a publisher learns when the server
//! relayed each of its messages.
//!
//! The audit uses one clock for everything (this process's `Instant`):
//! - a member is guaranteed message m if m was sent after the member's JOIN
//!   ack arrived, and m's echo reached its publisher before the member sent
//!   LEAVE (or closed): the server handled the join before m, and m before
//!   the leave;
//! - a member must never get m if m was sent after its LEAVE ack arrived and
//!   m's echo came back before it sent its next JOIN;
//! - anything else may go either way, but per publisher and room, deliveries
//!   are strictly increasing in sequence (no reordering, no duplicates), and
//!   every delivery is byte-exact one that was really sent;
//! - sessions that left their rooms and read everything the server sent
//!   (left gracefully, or open at the end) must have every guaranteed
//!   message; sessions cut short (FIN, RST, a fatal ERROR, SLOW_CONSUMER)
//!   must have them up to the last one they got from each publisher;
//! - readers that paused either caught up or were told SLOW_CONSUMER, and
//!   nobody else was; each malformed frame got its ERROR (and a close when
//!   fatal); after everyone leaves, the server reports 0 rooms and only the
//!   asking connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use protocol::{Delivery, ErrorCode, Flags, Hello, MessageType, RoomReply};
use serde::Deserialize;
use serde_json::json;

use crate::error::{Context, Result};
use crate::report::{Progress, Report};
use crate::rng::Rng;
use crate::target::{Target, TargetOptions};
use crate::wire::{Conn, RecvError, json_frame, raw_frame, room_frame};

/// Settings of a chaos run.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: TargetOptions,
    /// Logical clients (each reconnects as new sessions).
    pub clients: usize,
    pub duration: Duration,
    /// Rooms to spread over; 0 picks clients / 5 (at least 2).
    pub rooms: usize,
    pub seed: Option<u64>,
    /// No progress lines.
    pub quiet: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: TargetOptions::default(),
            clients: 50,
            duration: Duration::from_secs(20),
            rooms: 0,
            seed: None,
            quiet: false,
        }
    }
}

/// How long to wait for any answer before calling it lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the audit waits for guaranteed messages still in flight.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// A sequence number no real message has: marks the partial frame written
/// before a mid-frame disconnect, which must never be delivered.
const PARTIAL_SEQ: u64 = 999_999_999;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Acts at random and always reads.
    Healthy,
    /// Also stops reading for a while now and then.
    Pauser,
    /// Stops reading for good at some point, until the end of the run.
    Stuck,
    /// Also sends malformed frames.
    Malformed,
}

impl Role {
    fn of(client: usize) -> Role {
        match client % 10 {
            7 => Role::Pauser,
            8 => Role::Stuck,
            9 => Role::Malformed,
            _ => Role::Healthy,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Healthy => "healthy",
            Role::Pauser => "pauser",
            Role::Stuck => "stuck",
            Role::Malformed => "malformed",
        }
    }

    /// Whether SLOW_CONSUMER is an acceptable outcome for this role.
    fn may_stall(self) -> bool {
        matches!(self, Role::Pauser | Role::Stuck)
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Left every room (acked), then closed.
    Graceful,
    /// Closed with FIN without leaving.
    Fin,
    /// Closed with RST (SO_LINGER 0) without leaving.
    Rst,
    /// Wrote part of a frame, then FIN.
    MidFrameFin,
    /// Wrote part of a frame, then RST.
    MidFrameRst,
    /// Sent a malformed frame; the server answered with a fatal ERROR and closed.
    Fatal,
    /// The server cut it off with SLOW_CONSUMER.
    SlowConsumer,
    /// The server closed it for no reason we gave.
    Unexpected,
    /// Still open when the run ended (left every room at the end).
    Final,
}

impl End {
    /// Whether it must have every guaranteed message: it left its rooms
    /// and read everything the server sent. A session closed by a fatal
    /// ERROR read everything too, but a broadcast that was waiting for room
    /// in its queue when it was closed is rightly dropped, so like a cut
    /// session it is held to "no gaps before the last message it got".
    fn complete(self) -> bool {
        matches!(self, End::Graceful | End::Final)
    }

    fn name(self) -> &'static str {
        match self {
            End::Graceful => "graceful",
            End::Fin => "fin",
            End::Rst => "rst",
            End::MidFrameFin => "mid_frame_fin",
            End::MidFrameRst => "mid_frame_rst",
            End::Fatal => "fatal_error",
            End::SlowConsumer => "slow_consumer",
            End::Unexpected => "unexpected_close",
            End::Final => "open_at_end",
        }
    }
}

/// One membership of a session in a room.
#[derive(Debug, Clone)]
struct Period {
    room: u16,
    join_sent: Instant,
    join_ack: Option<Instant>,
    /// When LEAVE was sent, or the session stopped being a member some other
    /// way we caused (close, fatal frame).
    leave_sent: Option<Instant>,
    leave_ack: Option<Instant>,
}

/// A message a session published.
#[derive(Debug, Clone, Copy)]
struct Published {
    room: u16,
    seq: u64,
    sent_at: Instant,
}

/// A delivery a session received.
#[derive(Debug, Clone, Copy)]
struct Received {
    room: u16,
    /// Index of the publishing session.
    from: u32,
    seq: u64,
    at: Instant,
}

/// A non-delivery frame the actor waits for.
#[derive(Debug, Clone)]
struct Reply {
    kind: MessageType,
    payload: Vec<u8>,
    at: Instant,
}

/// A malformed frame sent and what came of it.
#[derive(Debug, Clone)]
struct BadOutcome {
    kind: &'static str,
    expected: ErrorCode,
    /// `None` when it was answered right; else what went wrong.
    problem: Option<String>,
}

#[derive(Debug, Default)]
struct SessionState {
    // Written by the reader thread.
    received: Vec<Received>,
    replies: VecDeque<Reply>,
    closed: Option<Instant>,
    /// How reading ended when it was not a clean EOF.
    read_error: Option<String>,
    slow_consumer: bool,
    member_events: u64,
    /// Deliveries that were not byte-exact, not parseable, or from nowhere.
    corrupt: Vec<String>,
    /// ERROR frames that nothing we did explains.
    unexpected_errors: Vec<String>,
    // Written by the actor.
    periods: Vec<Period>,
    published: Vec<Published>,
    end: Option<End>,
    ended_at: Option<Instant>,
    paused_for: Duration,
    /// It stopped reading at some point (pause or stuck).
    stopped_reading: bool,
    problems: Vec<String>,
    bad: Vec<BadOutcome>,
}

/// One connection of one client, shared by its actor and its reader thread.
#[derive(Debug)]
struct Session {
    index: u32,
    client: usize,
    role: Role,
    id: String,
    /// The reader stops reading while this is set.
    paused: AtomicBool,
    /// The reader stops for good when this is set.
    abandon: AtomicBool,
    /// An ERROR with this code is expected next (set by the actor).
    expecting_error: Mutex<Option<ErrorCode>>,
    state: Mutex<SessionState>,
    changed: Condvar,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a change until `left` passes.
    fn wait<'a>(
        &self,
        state: MutexGuard<'a, SessionState>,
        left: Duration,
    ) -> MutexGuard<'a, SessionState> {
        self.changed
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }
}

/// Counters shown in progress lines and the report.
#[derive(Debug, Default)]
struct Counters {
    sessions: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    joins: AtomicU64,
    leaves: AtomicU64,
    heartbeats: AtomicU64,
    pauses: AtomicU64,
    malformed: AtomicU64,
    no_hello: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What every actor and reader shares.
struct World {
    addr: SocketAddr,
    rooms: usize,
    deadline: Instant,
    sessions: Mutex<Vec<Arc<Session>>>,
    by_id: Mutex<HashMap<String, u32>>,
    counters: Counters,
    /// Sessions still open at the end, kept for the audit, then closed.
    finals: Mutex<Vec<Live>>,
}

fn room_name(room: u16) -> String {
    format!("chaos-{room}")
}

fn room_index(name: &str) -> Option<u16> {
    name.strip_prefix("chaos-")?.parse().ok()
}

/// The content of message `seq` from `publisher`, padded to a length that
/// varies with `seq`, so a truncated or spliced delivery shows.
fn content(publisher: &str, seq: u64) -> String {
    let pad_len = (seq * 37 % 300) as usize;
    let mut out = String::with_capacity(pad_len + 40);
    out.push_str("{\"p\":");
    // Connection ids are plain ASCII ("c17"), but escape anyway.
    out.push_str(&serde_json::to_string(publisher).unwrap_or_default());
    out.push_str(&format!(",\"s\":{seq},\"x\":\""));
    out.extend((0..pad_len).map(|i| (b'a' + ((seq as usize + i) % 26) as u8) as char));
    out.push_str("\"}");
    out
}

#[derive(Deserialize)]
struct ContentProbe<'a> {
    #[serde(borrow)]
    p: std::borrow::Cow<'a, str>,
    s: u64,
}

impl World {
    /// Creates and records the session of a connection that said HELLO.
    fn register(&self, client: usize, role: Role, id: String) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let session = Arc::new(Session {
            index: sessions.len() as u32,
            client,
            role,
            id,
            paused: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            expecting_error: Mutex::new(None),
            state: Mutex::new(SessionState::default()),
            changed: Condvar::new(),
        });
        sessions.push(Arc::clone(&session));
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.id.clone(), session.index);
        bump(&self.counters.sessions);
        session
    }

    fn session_of(&self, id: &str) -> Option<u32> {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The reader thread of one session: records everything the server sends.
fn read_loop(world: Arc<World>, session: Arc<Session>, mut conn: Conn) {
    let mut ids: HashMap<String, u32> = HashMap::new();
    loop {
        if session.abandon.load(Ordering::Acquire) {
            break;
        }
        if session.paused.load(Ordering::Acquire) {
            sleep(Duration::from_millis(5));
            continue;
        }

        let frame = match conn.recv(Duration::from_millis(50)) {
            Ok(frame) => frame,
            Err(RecvError::Timeout) => continue,
            Err(RecvError::Eof) => break,
            Err(RecvError::Io(error)) => {
                session.lock().read_error = Some(error.to_string());
                break;
            }
            Err(RecvError::Decode(error)) => {
                session
                    .lock()
                    .corrupt
                    .push(format!("undecodable bytes from the server: {error}"));
                break;
            }
        };
        let at = Instant::now();
        match frame.kind {
            MessageType::Message if frame.payload.starts_with(b"{\"type\"") => {
                session.lock().member_events += 1;
            }
            MessageType::Message => {
                let outcome = parse_delivery(&world, &mut ids, &frame.payload, frame.flags);
                let mut state = session.lock();
                match outcome {
                    Ok((room, from, seq)) => {
                        state.received.push(Received {
                            room,
                            from,
                            seq,
                            at,
                        });
                        bump(&world.counters.delivered);
                    }
                    Err(why) => state.corrupt.push(why),
                }
            }
            MessageType::Error => {
                let error = frame.error();
                let code = error.as_ref().map(|e| e.code);
                let expected = session
                    .expecting_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let mut state = session.lock();
                match code {
                    Some(ErrorCode::SlowConsumer) => {
                        state.slow_consumer = true;
                        if !session.role.may_stall() {
                            state.unexpected_errors.push(format!(
                                "{} client {} ({}) was cut off as a slow consumer",
                                session.role.name(),
                                session.client,
                                session.id
                            ));
                        }
                    }
                    Some(code) if Some(code) == expected => {}
                    _ => state.unexpected_errors.push(format!(
                        "{} client {} ({}) got an unexpected ERROR {}",
                        session.role.name(),
                        session.client,
                        session.id,
                        frame.text()
                    )),
                }
                state.replies.push_back(Reply {
                    kind: frame.kind,
                    payload: frame.payload,
                    at,
                });
                session.changed.notify_all();
            }
            _ => {
                session.lock().replies.push_back(Reply {
                    kind: frame.kind,
                    payload: frame.payload,
                    at,
                });
                session.changed.notify_all();
            }
        }
    }
    session.lock().closed = Some(Instant::now());
    session.changed.notify_all();
}

fn parse_delivery(
    world: &World,
    ids: &mut HashMap<String, u32>,
    payload: &[u8],
    flags: Flags,
) -> std::result::Result<(u16, u32, u64), String> {
    let text = || {
        String::from_utf8_lossy(payload)
            .chars()
            .take(200)
            .collect::<String>()
    };
    if !flags.is_json() {
        return Err(format!("a MESSAGE without the JSON flag: {}", text()));
    }
    let delivery: Delivery<'_> =
        serde_json::from_slice(payload).map_err(|e| format!("bad delivery ({e}): {}", text()))?;
    let room = room_index(&delivery.room)
        .ok_or_else(|| format!("delivery to a room nobody joined: {}", text()))?;
    let probe: ContentProbe<'_> = serde_json::from_str(delivery.content.get())
        .map_err(|e| format!("delivery content is not ours ({e}): {}", text()))?;
    if probe.p != delivery.from {
        return Err(format!(
            "delivery `from` differs from its content's publisher: {}",
            text()
        ));
    }
    if delivery.content.get() != content(&probe.p, probe.s) {
        return Err(format!("delivery content is not byte-exact: {}", text()));
    }
    let from = match ids.get(&*delivery.from) {
        Some(&from) => from,
        None => {
            let from = world
                .session_of(&delivery.from)
                .ok_or_else(|| format!("delivery from an unknown connection: {}", text()))?;
            ids.insert(delivery.from.to_string(), from);
            from
        }
    };
    Ok((room, from, probe.s))
}

/// Why an actor's request went unanswered.
#[derive(Debug)]
enum Broken {
    /// The server closed the session (slow consumer, or something unexpected).
    Closed,
    /// No answer in time, or a wrong one: recorded as a problem.
    Failed,
}

/// An actor's handle on its current session.
#[derive(Debug)]
struct Live {
    session: Arc<Session>,
    stream: TcpStream,
    reader: Option<JoinHandle<()>>,
    /// Rooms joined (acked), and the next sequence number per room.
    joined: Vec<u16>,
    seqs: HashMap<u16, u64>,
}

impl Live {
    fn open(world: &Arc<World>, client: usize, role: Role) -> Result<Live> {
        let mut conn = Conn::connect(world.addr)?;
        let hello = Hello {
            user_id: Some(format!("chaos-{client}")),
            client_version: Some("stress-chaos".into()),
            echo: true,
        };
        let reply = conn.hello(&hello).context("chaos client HELLO")?;
        let stream = conn.stream().try_clone()?;
        let session = world.register(client, role, reply.connection_id);
        let reader = {
            let world = Arc::clone(world);
            let session = Arc::clone(&session);
            thread::Builder::new()
                .name(format!("chaos-read-{client}"))
                .stack_size(256 * 1024)
                .spawn(move || read_loop(world, session, conn))?
        };
        Ok(Live {
            session,
            stream,
            reader: Some(reader),
            joined: Vec::new(),
            seqs: HashMap::new(),
        })
    }

    fn problem(&self, what: String) {
        self.session.lock().problems.push(what);
    }

    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), Broken> {
        match self.stream.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(_) if self.wait_closed(REPLY_TIMEOUT) => Err(Broken::Closed),
            Err(e) => {
                self.problem(format!("write failed on an open session: {e}"));
                Err(Broken::Failed)
            }
        }
    }

    /// Waits until the reader has seen the server close.
    fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.session.lock();
        while state.closed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.session.wait(state, left);
        }
        true
    }

    /// The next reply (ack, heartbeat echo or error).
    fn reply(&self, waiting_for: &str) -> std::result::Result<Reply, Broken> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut state = self.session.lock();
        loop {
            if let Some(reply) = state.replies.pop_front() {
                if reply.kind == MessageType::Error
                    && reply.payload.windows(13).any(|w| w == b"SLOW_CONSUMER")
                {
                    drop(state);
                    self.wait_closed(REPLY_TIMEOUT);
                    return Err(Broken::Closed);
                }
                return Ok(reply);
            }
            if state.closed.is_some() {
                return Err(Broken::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.problems.push(format!(
                    "client {} ({}): no answer to {waiting_for} within {} s",
                    self.session.client,
                    self.session.id,
                    REPLY_TIMEOUT.as_secs()
                ));
                return Err(Broken::Failed);
            }
            state = self.session.wait(state, left);
        }
    }

    fn room_request(&mut self, kind: MessageType, room: u16) -> std::result::Result<(), Broken> {
        let name = room_name(room);
        let sent = Instant::now();
        if kind == MessageType::JoinRoom {
            self.session.lock().periods.push(Period {
                room,
                join_sent: sent,
                join_ack: None,
                leave_sent: None,
                leave_ack: None,
            });
        } else {
            self.mark_left(room, sent);
        }
        self.write(&room_frame(kind, &name))?;
        let reply = self.reply(&format!("{kind} {name}"))?;
        let ok = reply.kind == kind
            && serde_json::from_slice::<RoomReply>(&reply.payload)
                .map(|r| r.room == name)
                .unwrap_or(false);
        if !ok {
            self.problem(format!(
                "{kind} {name}: expected its ack, got {} {}",
                reply.kind,
                String::from_utf8_lossy(&reply.payload)
            ));
            return Err(Broken::Failed);
        }
        let mut state = self.session.lock();
        if let Some(period) = state.periods.iter_mut().rev().find(|p| p.room == room) {
            if kind == MessageType::JoinRoom {
                period.join_ack = Some(reply.at);
            } else {
                period.leave_ack = Some(reply.at);
            }
        }
        drop(state);
        if kind == MessageType::JoinRoom {
            self.joined.push(room);
        } else {
            self.joined.retain(|&r| r != room);
        }
        Ok(())
    }

    /// Ends the open membership of `room` at `at`.
    fn mark_left(&self, room: u16, at: Instant) {
        let mut state = self.session.lock();
        if let Some(period) = state
            .periods
            .iter_mut()
            .rev()
            .find(|p| p.room == room && p.leave_sent.is_none())
        {
            period.leave_sent = Some(at);
        }
    }

    /// Ends every open membership at `at` (the session stops being a member).
    fn mark_all_left(&self, at: Instant) {
        let mut state = self.session.lock();
        for period in state.periods.iter_mut().filter(|p| p.leave_sent.is_none()) {
            period.leave_sent = Some(at);
        }
    }

    fn burst(&mut self, world: &World, room: u16, count: u64) -> std::result::Result<(), Broken> {
        let name = room_name(room);
        let mut bytes = Vec::new();
        let mut published = Vec::new();
        let next = self.seqs.entry(room).or_insert(0);
        for _ in 0..count {
            let seq = *next;
            *next += 1;
            let publish = format!(
                r#"{{"room":"{name}","content":{}}}"#,
                content(&self.session.id, seq)
            );
            let _ = protocol::encode(
                &mut bytes,
                MessageType::Message,
                Flags::JSON,
                publish.as_bytes(),
            );
            published.push(seq);
        }
        let sent_at = Instant::now();
        self.session
            .lock()
            .published
            .extend(
                published
                    .iter()
                    .map(|&seq| Published { room, seq, sent_at }),
            );
        world.counters.published.fetch_add(count, Ordering::Relaxed);
        self.write(&bytes)
    }

    fn heartbeat(&mut self, n: u64) -> std::result::Result<(), Broken> {
        let payload = format!("beat-{n}");
        self.write(&raw_frame(
            MessageType::Heartbeat,
            Flags::NONE,
            payload.as_bytes(),
        ))?;
        let reply = self.reply("HEARTBEAT")?;
        if reply.kind != MessageType::Heartbeat || reply.payload != payload.as_bytes() {
            self.problem(format!(
                "HEARTBEAT {payload}: got {} {}",
                reply.kind,
                String::from_utf8_lossy(&reply.payload)
            ));
            return Err(Broken::Failed);
        }
        Ok(())
    }

    /// Stops the reader and closes: FIN, or RST when `reset`.
    fn close(mut self, end: End, reset: bool) {
        let at = Instant::now();
        self.mark_all_left(at);
        if reset {
            let _ = crate::sys::set_linger_zero(&self.stream);
        } else {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        self.session.abandon.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Read);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let mut state = self.session.lock();
        state.end = Some(end);
        state.ended_at = Some(at);
        // Dropping the last descriptor sends FIN or RST.
    }

    /// The server closed us: record why and wait for the reader.
    fn closed_by_server(mut self, end: End) {
        let at = Instant::now();
        self.mark_all_left(at);
        self.wait_closed(REPLY_TIMEOUT);
        self.session.abandon.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let mut state = self.session.lock();
        let end = if state.slow_consumer {
            End::SlowConsumer
        } else {
            end
        };
        if end == End::Unexpected {
            let how = state.read_error.clone().unwrap_or_else(|| "EOF".to_owned());
            state.problems.push(format!(
                "{} client {} ({}): the server closed the connection unasked ({how})",
                self.session.role.name(),
                self.session.client,
                self.session.id
            ));
        }
        state.end = Some(end);
        state.ended_at = Some(at);
    }

    /// Closes a session kept open for the audit: FIN, then the reader ends.
    fn finish(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.session.abandon.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Read);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Leaves every room, then closes with FIN.
    fn graceful(mut self, n: u64) -> std::result::Result<(), (Live, Broken)> {
        for room in self.joined.clone() {
            if let Err(b) = self.room_request(MessageType::LeaveRoom, room) {
                return Err((self, b));
            }
        }
        if let Err(b) = self.heartbeat(n) {
            return Err((self, b));
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        // The server sees EOF and closes; the reader reads to the end.
        self.wait_closed(REPLY_TIMEOUT);
        self.close(End::Graceful, false);
        Ok(())
    }
}

/// The malformed frames a client sends: (name, bytes, expected code).
fn malformed_frames(max_frame: u32) -> Vec<(&'static str, Vec<u8>, ErrorCode)> {
    let mut too_long = Vec::new();
    too_long.extend_from_slice(&(max_frame + 1).to_be_bytes());
    vec![
        (
            "blank room",
            room_frame(MessageType::JoinRoom, "   "),
            ErrorCode::InvalidRoom,
        ),
        (
            "65-byte room",
            room_frame(MessageType::JoinRoom, &"r".repeat(65)),
            ErrorCode::InvalidRoom,
        ),
        (
            "JOIN without room",
            json_frame(MessageType::JoinRoom, &json!({"name": "x"})),
            ErrorCode::InvalidPayload,
        ),
        (
            "JOIN without the JSON flag",
            raw_frame(MessageType::JoinRoom, Flags::NONE, br#"{"room":"x"}"#),
            ErrorCode::InvalidPayload,
        ),
        (
            "MESSAGE without content",
            json_frame(MessageType::Message, &json!({"room": "chaos-0"})),
            ErrorCode::InvalidPayload,
        ),
        (
            "MESSAGE to a room not joined",
            json_frame(
                MessageType::Message,
                &json!({"room": "chaos-nobody", "content": 1}),
            ),
            ErrorCode::NotInRoom,
        ),
        ("length 2", vec![0, 0, 0, 2], ErrorCode::InvalidFrame),
        (
            "JSON and BINARY flags",
            vec![0, 0, 0, 3, 1, 5, 3],
            ErrorCode::InvalidFrame,
        ),
        (
            "version 2",
            vec![0, 0, 0, 3, 2, 5, 0],
            ErrorCode::UnsupportedVersion,
        ),
        (
            "type 9",
            vec![0, 0, 0, 3, 1, 9, 0],
            ErrorCode::UnknownMessageType,
        ),
        (
            "invalid JSON",
            raw_frame(MessageType::Message, Flags::JSON, br#"{"room":"chaos-0","#),
            ErrorCode::ParseError,
        ),
        ("maxFrameSize + 1", too_long, ErrorCode::InvalidFrame),
    ]
}

/// Sends one malformed frame and checks the answer. Returns whether the
/// session is still usable.
fn send_malformed(
    live: &mut Live,
    rng: &mut Rng,
    world: &World,
) -> std::result::Result<(), Broken> {
    let frames = malformed_frames(protocol::DEFAULT_MAX_FRAME);
    let (kind, bytes, code) = &frames[rng.below(frames.len() as u64) as usize];
    // A MESSAGE to chaos-0 without content needs no membership to be refused
    // as INVALID_PAYLOAD... unless the server checks membership first; keep it
    // unambiguous by only sending it when joined to chaos-0.
    if *kind == "MESSAGE without content" && !live.joined.contains(&0) {
        return Ok(());
    }
    bump(&world.counters.malformed);
    *live
        .session
        .expecting_error
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(*code);
    let sent = Instant::now();
    if code.is_fatal() {
        live.mark_all_left(sent);
    }
    let mut outcome = BadOutcome {
        kind,
        expected: *code,
        problem: None,
    };
    let result = (|| {
        live.write(bytes)?;
        let reply = live.reply(&format!("the malformed frame ({kind})"))?;
        let error = serde_json::from_slice::<protocol::ErrorPayload>(&reply.payload).ok();
        match error {
            Some(e) if reply.kind == MessageType::Error && e.code == *code => {
                if e.fatal != code.is_fatal() {
                    outcome.problem = Some(format!("{code} came with fatal={}", e.fatal));
                }
            }
            _ => {
                outcome.problem = Some(format!(
                    "expected ERROR {code}, got {} {}",
                    reply.kind,
                    String::from_utf8_lossy(&reply.payload)
                ))
            }
        }
        if code.is_fatal() {
            if !live.wait_closed(REPLY_TIMEOUT) {
                outcome.problem = Some(format!("no close after fatal {code}"));
            }
            return Err(Broken::Closed);
        }
        Ok(())
    })();
    if let Err(Broken::Closed) = &result
        && !code.is_fatal()
        && outcome.problem.is_none()
    {
        outcome.problem = Some(format!("closed after non-fatal {code}"));
    }
    if let Err(Broken::Failed) = &result
        && outcome.problem.is_none()
    {
        outcome.problem = Some("no answer".into());
    }
    live.session.lock().bad.push(outcome);
    result
}

/// A fresh connection that skips HELLO must get HELLO_REQUIRED and a close.
fn no_hello(world: &World) -> Option<String> {
    bump(&world.counters.no_hello);
    let outcome = (|| -> std::result::Result<(), String> {
        let mut conn = Conn::connect(world.addr).map_err(|e| e.to_string())?;
        conn.write_raw(&room_frame(MessageType::JoinRoom, "chaos-0"))
            .map_err(|e| e.to_string())?;
        let frame = conn
            .recv(REPLY_TIMEOUT)
            .map_err(|e| format!("waiting for HELLO_REQUIRED: {e}"))?;
        match frame.error() {
            Some(e) if e.code == ErrorCode::HelloRequired && e.fatal => {}
            _ => {
                return Err(format!(
                    "expected HELLO_REQUIRED, got {} {}",
                    frame.kind,
                    frame.text()
                ));
            }
        }
        conn.until_eof(REPLY_TIMEOUT).map_err(|e| e.to_string())?;
        Ok(())
    })();
    outcome.err()
}

/// One client's life: sessions, one after another, until the deadline.
fn actor(world: Arc<World>, client: usize, seed: u64) {
    let role = Role::of(client);
    let mut rng = Rng::new(seed ^ (client as u64).wrapping_mul(0x9E37_79B9));
    let mut beats = 0u64;
    let stuck_at = match role {
        Role::Stuck => {
            let d = world.deadline.saturating_duration_since(Instant::now());
            Some(Instant::now() + d / 4 + d.mul_f64(rng.below(1000) as f64 / 4000.0))
        }
        _ => None,
    };
    let mut live: Option<Live> = None;
    let mut stuck = false;
    let mut sent_bad = false;
    while Instant::now() < world.deadline {
        let mut l = match live.take() {
            Some(l) => l,
            None => match Live::open(&world, client, role) {
                Ok(l) => l,
                Err(_) => {
                    sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        if stuck {
            sleep(Duration::from_millis(20));
            live = Some(l);
            continue;
        }
        if let Some(at) = stuck_at
            && Instant::now() >= at
        {
            l.session.paused.store(true, Ordering::Release);
            l.session.lock().stopped_reading = true;
            bump(&world.counters.pauses);
            stuck = true;
            live = Some(l);
            continue;
        }
        let roll = rng.below(1000);
        let most_rooms = world.rooms.min(3);
        let result: std::result::Result<(), Broken> = if l.joined.is_empty()
            || (l.joined.len() < most_rooms && roll < 120)
        {
            let free: Vec<u16> = (0..world.rooms as u16)
                .filter(|r| !l.joined.contains(r))
                .collect();
            let room = free[rng.below(free.len() as u64) as usize];
            bump(&world.counters.joins);
            l.room_request(MessageType::JoinRoom, room)
        } else if roll < 200 {
            let room = l.joined[rng.below(l.joined.len() as u64) as usize];
            bump(&world.counters.leaves);
            l.room_request(MessageType::LeaveRoom, room)
        } else if roll < 800 {
            let room = l.joined[rng.below(l.joined.len() as u64) as usize];
            let count = if rng.chance(5) {
                rng.range(20, 60)
            } else {
                rng.range(1, 10)
            };
            l.burst(&world, room, count)
        } else if roll < 850 {
            beats += 1;
            bump(&world.counters.heartbeats);
            l.heartbeat(beats)
        } else if roll < 870 {
            // Disconnect, one way or another; the next turn reconnects.
            let how = rng.below(5);
            match how {
                0 => {
                    beats += 1;
                    if let Err((l, broken)) = l.graceful(beats) {
                        finish_broken(l, broken);
                    }
                }
                1 => l.close(End::Fin, false),
                2 => l.close(End::Rst, true),
                _ => {
                    let frame = json_frame(
                        MessageType::Message,
                        &json!({"room": room_name(0), "content": serde_json::from_str::<serde_json::Value>(&content(&l.session.id, PARTIAL_SEQ)).unwrap_or_default()}),
                    );
                    let cut = rng.range(1, frame.len() as u64 - 1) as usize;
                    let _ = l.stream.write_all(&frame[..cut]);
                    if how == 3 {
                        l.close(End::MidFrameFin, false);
                    } else {
                        l.close(End::MidFrameRst, true);
                    }
                }
            }
            continue;
        } else if roll < 900 && role == Role::Pauser {
            let pause = Duration::from_millis(rng.range(300, 2000));
            bump(&world.counters.pauses);
            l.session.paused.store(true, Ordering::Release);
            sleep(pause);
            l.session.paused.store(false, Ordering::Release);
            let mut state = l.session.lock();
            state.paused_for += pause;
            state.stopped_reading = true;
            Ok(())
        } else if (roll < 940 || !sent_bad) && role == Role::Malformed {
            sent_bad = true;
            if rng.chance(15) {
                if let Some(problem) = no_hello(&world) {
                    l.problem(format!("no HELLO: {problem}"));
                }
                Ok(())
            } else {
                let result = send_malformed(&mut l, &mut rng, &world);
                if let Err(Broken::Closed) = result
                    && l.session
                        .lock()
                        .bad
                        .last()
                        .is_some_and(|b| b.expected.is_fatal())
                {
                    l.closed_by_server(End::Fatal);
                    continue;
                }
                result
            }
        } else {
            Ok(())
        };
        match result {
            Ok(()) => {
                live = Some(l);
                sleep(Duration::from_millis(rng.range(2, 25)));
            }
            Err(broken) => finish_broken(l, broken),
        }
    }
    // The end: resume reading, leave every room, stay open for the audit.
    if let Some(mut l) = live {
        l.session.paused.store(false, Ordering::Release);
        let mut outcome = Ok(());
        for room in l.joined.clone() {
            outcome = l.room_request(MessageType::LeaveRoom, room);
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            beats += 1;
            outcome = l.heartbeat(beats);
        }
        match outcome {
            Ok(()) => {
                let mut state = l.session.lock();
                state.end = Some(End::Final);
                state.ended_at = Some(Instant::now());
                drop(state);
                // Kept open (the reader runs) until the audit is done.
                world
                    .finals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(l);
            }
            Err(broken) => finish_broken(l, broken),
        }
    }
}

fn finish_broken(l: Live, broken: Broken) {
    match broken {
        Broken::Closed => l.closed_by_server(End::Unexpected),
        Broken::Failed => l.close(End::Rst, true),
    }
}

/// Figures of the audit.
#[derive(Debug, Default)]
struct Audit {
    deliveries: u64,
    guaranteed: u64,
    guaranteed_received: u64,
    lost: u64,
    gaps: u64,
    out_of_order: u64,
    duplicates: u64,
    leaked: u64,
    phantom: u64,
    in_between: u64,
    complete_sessions: u64,
    cut_sessions: u64,
    failures: Vec<String>,
}

impl Audit {
    fn fail(&mut self, what: String) {
        if self.failures.len() < 200 {
            self.failures.push(what);
        }
    }
}

/// Every message sent: when, and when its publisher got its echo.
struct SentIndex {
    /// (publisher, room, seq) -> (sent_at, echo_at).
    by_key: HashMap<(u32, u16, u64), (Instant, Option<Instant>)>,
    /// Per room: (publisher, seq, sent_at, echo_at) of echoed messages.
    by_room: HashMap<u16, Vec<(u32, u64, Instant, Instant)>>,
}

impl SentIndex {
    fn build(sessions: &[Arc<Session>]) -> SentIndex {
        let mut by_key = HashMap::new();
        for s in sessions {
            let state = s.lock();
            for p in &state.published {
                by_key.insert((s.index, p.room, p.seq), (p.sent_at, None));
            }
            for r in state.received.iter().filter(|r| r.from == s.index) {
                if let Some(entry) = by_key.get_mut(&(s.index, r.room, r.seq)) {
                    entry.1.get_or_insert(r.at);
                }
            }
        }
        let mut by_room: HashMap<u16, Vec<(u32, u64, Instant, Instant)>> = HashMap::new();
        for (&(publisher, room, seq), &(sent_at, echo_at)) in &by_key {
            if let Some(echo_at) = echo_at {
                by_room
                    .entry(room)
                    .or_default()
                    .push((publisher, seq, sent_at, echo_at));
            }
        }
        SentIndex { by_key, by_room }
    }

    /// What `member` must have, per (room, publisher), ascending.
    fn guaranteed_for(&self, member: &SessionState) -> HashMap<(u16, u32), Vec<u64>> {
        let mut out: HashMap<(u16, u32), Vec<u64>> = HashMap::new();
        let rooms: HashSet<u16> = member.periods.iter().map(|p| p.room).collect();
        for room in rooms {
            let periods: Vec<(Instant, Option<Instant>)> = member
                .periods
                .iter()
                .filter(|p| p.room == room)
                .filter_map(|p| Some((p.join_ack?, p.leave_sent.or(member.ended_at))))
                .collect();
            if periods.is_empty() {
                continue;
            }
            for &(publisher, seq, sent_at, echo_at) in self.by_room.get(&room).into_iter().flatten()
            {
                let inside = periods
                    .iter()
                    .any(|&(ack, left)| ack < sent_at && left.is_none_or(|left| echo_at < left));
                if inside {
                    out.entry((room, publisher)).or_default().push(seq);
                }
            }
        }
        for seqs in out.values_mut() {
            seqs.sort_unstable();
        }
        out
    }
}

/// Whether member state `member` may not receive (room, seq) sent at
/// `sent_at` and echoed at `echo_at`: the server handled it while the member
/// was certainly outside the room.
fn forbidden(member: &SessionState, room: u16, sent_at: Instant, echo_at: Instant) -> bool {
    let periods: Vec<&Period> = member.periods.iter().filter(|p| p.room == room).collect();
    // Before the first JOIN was sent.
    if periods.first().is_none_or(|p| echo_at < p.join_sent) {
        return true;
    }
    periods.iter().enumerate().any(|(i, period)| {
        let Some(left) = period.leave_ack else {
            return false;
        };
        sent_at > left
            && periods
                .get(i + 1)
                .is_none_or(|next| echo_at < next.join_sent)
    })
}

fn audit(sessions: &[Arc<Session>]) -> Audit {
    let sent = SentIndex::build(sessions);
    let mut audit = Audit::default();
    for member in sessions {
        let state = member.lock();
        let Some(end) = state.end else { continue };
        let complete = end.complete();
        if complete {
            audit.complete_sessions += 1;
        } else {
            audit.cut_sessions += 1;
        }
        let who = format!(
            "{} client {} ({}, ended {})",
            member.role.name(),
            member.client,
            member.id,
            end.name()
        );
        // Received, per (room, publisher), in arrival order.
        let mut got: HashMap<(u16, u32), Vec<u64>> = HashMap::new();
        for r in &state.received {
            audit.deliveries += 1;
            got.entry((r.room, r.from)).or_default().push(r.seq);
            match sent.by_key.get(&(r.from, r.room, r.seq)) {
                None => {
                    audit.phantom += 1;
                    audit.fail(format!(
                        "{who} got {} #{} in {} that was never completely sent",
                        sessions[r.from as usize].id,
                        r.seq,
                        room_name(r.room)
                    ));
                }
                Some(&(sent_at, Some(echo_at))) if forbidden(&state, r.room, sent_at, echo_at) => {
                    audit.leaked += 1;
                    audit.fail(format!(
                        "{who} got {} #{} in {} while not a member",
                        sessions[r.from as usize].id,
                        r.seq,
                        room_name(r.room)
                    ));
                }
                _ => {}
            }
        }
        for (&(room, from), seqs) in &got {
            for pair in seqs.windows(2) {
                if pair[1] == pair[0] {
                    audit.duplicates += 1;
                    audit.fail(format!(
                        "{who} got {} #{} in {} twice",
                        sessions[from as usize].id,
                        pair[0],
                        room_name(room)
                    ));
                } else if pair[1] < pair[0] {
                    audit.out_of_order += 1;
                    audit.fail(format!(
                        "{who} got {} #{} after #{} in {}",
                        sessions[from as usize].id,
                        pair[1],
                        pair[0],
                        room_name(room)
                    ));
                }
            }
        }
        let must = sent.guaranteed_for(&state);
        let mut in_window = 0;
        for (key, seqs) in &must {
            let received = got.get(key);
            let have: HashSet<u64> = received
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default();
            let last = received.and_then(|v| v.iter().max().copied());
            audit.guaranteed += seqs.len() as u64;
            let mut missing = 0;
            let mut first_missing = None;
            for &seq in seqs {
                if have.contains(&seq) {
                    audit.guaranteed_received += 1;
                    in_window += 1;
                    continue;
                }
                if complete || last.is_some_and(|last| seq <= last) {
                    missing += 1;
                    first_missing.get_or_insert(seq);
                }
            }
            if missing > 0 {
                if complete {
                    audit.lost += missing;
                } else {
                    audit.gaps += missing;
                }
                audit.fail(format!(
                    "{who} is missing {missing} of {} guaranteed messages from {} in {} (first #{})",
                    seqs.len(),
                    sessions[key.1 as usize].id,
                    room_name(key.0),
                    first_missing.unwrap_or(0)
                ));
            }
        }
        audit.in_between += (state.received.len() as u64).saturating_sub(in_window);
    }
    audit
}

/// How many guaranteed messages complete sessions still lack.
fn outstanding(sessions: &[Arc<Session>]) -> u64 {
    let sent = SentIndex::build(sessions);
    let mut missing = 0;
    for member in sessions {
        let state = member.lock();
        if !state.end.is_some_and(End::complete) {
            continue;
        }
        let have: HashSet<(u16, u32, u64)> = state
            .received
            .iter()
            .map(|r| (r.room, r.from, r.seq))
            .collect();
        for ((room, from), seqs) in sent.guaranteed_for(&state) {
            let m = seqs
                .iter()
                .filter(|&&seq| !have.contains(&(room, from, seq)))
                .count() as u64;
            missing += m;
        }
    }
    missing
}

/// Two fresh clients (the `client` crate's blocking client) can still join,
/// and one's message reaches the other byte-exact.
fn still_serves(addr: SocketAddr) -> std::result::Result<(), String> {
    let t = REPLY_TIMEOUT;
    let open = || -> std::result::Result<client::Client, String> {
        let c = client::Client::connect(addr).map_err(|e| e.to_string())?;
        c.hello_as(Some("chaos-after"), false, t)
            .map_err(|e| e.to_string())?;
        c.join_and_wait("chaos-after", t)
            .map_err(|e| e.to_string())?;
        Ok(c)
    };
    let (publisher, subscriber) = (open()?, open()?);
    let content = json!({"still": "here", "n": [1, 2, 3]});
    publisher
        .send_json("chaos-after", &content)
        .map_err(|e| e.to_string())?;
    let got = subscriber
        .wait_for(t, "the message after the chaos", |event| match event {
            client::Event::Message(m) => Some(m.body.as_json().map(str::to_owned)),
            _ => None,
        })
        .map_err(|e| e.to_string())?;
    if got.as_deref() != Some(content.to_string().as_str()) {
        return Err(format!("got {got:?}, sent {content}"));
    }
    for c in [publisher, subscriber] {
        c.leave_and_wait("chaos-after", t)
            .map_err(|e| e.to_string())?;
        c.close();
    }
    Ok(())
}

/// Runs chaos against the target.
pub fn run(options: &Options) -> Result<Report> {
    let target = Target::start(&options.target)?;
    let report = run_on(&target, options);
    target.stop();
    report
}

/// Runs chaos against a server that is already there.
pub fn run_on(target: &Target, options: &Options) -> Result<Report> {
    let seed = options.seed.unwrap_or_else(Rng::clock_seed);
    let rooms = if options.rooms == 0 {
        (options.clients / 5).max(2)
    } else {
        options.rooms
    };
    let progress = Progress::new("chaos", options.quiet);
    let before = target
        .stats()
        .context("reading the server's counters before the run")?;
    let started = Instant::now();
    let world = Arc::new(World {
        addr: target.addr(),
        rooms,
        deadline: started + options.duration,
        sessions: Mutex::new(Vec::new()),
        by_id: Mutex::new(HashMap::new()),
        counters: Counters::default(),
        finals: Mutex::new(Vec::new()),
    });
    let actors: Vec<JoinHandle<()>> = (0..options.clients)
        .map(|client| {
            let world = Arc::clone(&world);
            thread::Builder::new()
                .name(format!("chaos-{client}"))
                .stack_size(256 * 1024)
                .spawn(move || actor(world, client, seed))
        })
        .collect::<io::Result<_>>()
        .context("starting the chaos clients")?;
    let mut ticker = progress;
    while actors.iter().any(|a| !a.is_finished()) {
        sleep(Duration::from_millis(100));
        let c = &world.counters;
        ticker.tick(|| {
            format!(
                "{:.0}/{} s: {} sessions, {} published, {} delivered, {} joins, {} leaves, {} pauses, {} malformed",
                started.elapsed().as_secs_f64(),
                options.duration.as_secs(),
                c.sessions.load(Ordering::Relaxed),
                c.published.load(Ordering::Relaxed),
                c.delivered.load(Ordering::Relaxed),
                c.joins.load(Ordering::Relaxed),
                c.leaves.load(Ordering::Relaxed),
                c.pauses.load(Ordering::Relaxed),
                c.malformed.load(Ordering::Relaxed),
            )
        });
    }
    let mut panicked = 0;
    for actor in actors {
        if actor.join().is_err() {
            panicked += 1;
        }
    }
    let acted = started.elapsed();
    // Let guaranteed messages still in flight arrive.
    let settle_started = Instant::now();
    let mut sessions = world.all_sessions();
    let mut missing = outstanding(&sessions);
    while missing > 0 && settle_started.elapsed() < SETTLE_TIMEOUT {
        sleep(Duration::from_millis(100));
        sessions = world.all_sessions();
        missing = outstanding(&sessions);
    }
    // Close the sessions still open, so the audit sees final states.
    for session in &sessions {
        session.abandon.store(true, Ordering::Release);
    }
    let audit_result = audit(&sessions);

    let mut report = Report::new("chaos");
    report.line(format!(
        "chaos against {}: {} clients, {} rooms, {:.1} s, seed {seed}",
        target.describe(),
        options.clients,
        rooms,
        acted.as_secs_f64()
    ));
    // Session outcomes and per-role facts.
    let mut ends: HashMap<&'static str, u64> = HashMap::new();
    let mut roles: HashMap<&'static str, u64> = HashMap::new();
    let mut bad_total = 0u64;
    let mut bad_ok = 0u64;
    let mut bad_by_code: HashMap<String, u64> = HashMap::new();
    let mut stalled_caught_up = 0u64;
    let mut stalled_cut = 0u64;
    let mut stalled_neither = 0u64;
    let mut member_events = 0u64;
    let mut published = 0u64;
    for session in &sessions {
        let state = session.lock();
        *roles.entry(session.role.name()).or_default() += 1;
        let end = state.end.unwrap_or(End::Unexpected);
        *ends.entry(end.name()).or_default() += 1;
        member_events += state.member_events;
        published += state.published.len() as u64;
        for problem in state
            .problems
            .iter()
            .chain(&state.corrupt)
            .chain(&state.unexpected_errors)
        {
            report.fail(problem.clone());
        }
        if state.end.is_none() {
            report.fail(format!(
                "client {} ({}) never finished its session",
                session.client, session.id
            ));
        }
        for bad in &state.bad {
            bad_total += 1;
            *bad_by_code.entry(bad.expected.to_string()).or_default() += 1;
            match &bad.problem {
                None => bad_ok += 1,
                Some(problem) => report.fail(format!(
                    "malformed frame ({}) from client {}: {problem}",
                    bad.kind, session.client
                )),
            }
        }
        if state.stopped_reading {
            if state.slow_consumer {
                stalled_cut += 1;
            } else if end.complete() {
                stalled_caught_up += 1;
            } else if !matches!(
                end,
                End::Fin | End::Rst | End::MidFrameFin | End::MidFrameRst
            ) {
                stalled_neither += 1;
                report.fail(format!(
                    "{} client {} ({}) stopped reading and neither caught up nor got SLOW_CONSUMER (ended {})",
                    session.role.name(),
                    session.client,
                    session.id,
                    end.name()
                ));
            }
        }
    }
    drop(sessions);
    let a = &audit_result;
    for failure in &a.failures {
        report.fail(failure.clone());
    }
    let c = &world.counters;
    report.line(format!(
        "  sessions {} (by end: {}), joins {}, leaves {}, heartbeats {}, published {}, deliveries {}, membership events {}",
        c.sessions.load(Ordering::Relaxed),
        sorted(&ends),
        c.joins.load(Ordering::Relaxed),
        c.leaves.load(Ordering::Relaxed),
        c.heartbeats.load(Ordering::Relaxed),
        published,
        a.deliveries,
        member_events
    ));
    report.line(format!(
        "  guaranteed deliveries {} received {}, lost {}, gaps before a cut {}, out of order {}, duplicated {}, leaked outside membership {}, never sent {}, timing-ambiguous {}",
        a.guaranteed, a.guaranteed_received, a.lost, a.gaps, a.out_of_order, a.duplicates, a.leaked, a.phantom, a.in_between
    ));
    report.line(format!(
        "  readers that stopped: {} caught up, {} cut off with SLOW_CONSUMER, {} neither; pauses {}",
        stalled_caught_up,
        stalled_cut,
        stalled_neither,
        c.pauses.load(Ordering::Relaxed)
    ));
    report.line(format!(
        "  malformed frames {bad_total}, answered right {bad_ok} ({}); HELLO skipped {}",
        sorted(&bad_by_code),
        c.no_hello.load(Ordering::Relaxed)
    ));
    report.check(
        missing == 0 || a.lost > 0,
        format!("{missing} guaranteed messages still missing after settling"),
    );
    report.check(
        panicked == 0,
        format!("{panicked} chaos client threads panicked"),
    );
    report.check(
        bad_total > 0 || options.clients < 10,
        "no malformed frame was sent",
    );
    // Close every session still open, then check the server.
    let finals = std::mem::take(&mut *world.finals.lock().unwrap_or_else(|p| p.into_inner()));
    for live in finals {
        live.finish();
    }
    let serves = still_serves(target.addr());
    report.line(format!(
        "  server still serves a new client: {}",
        match &serves {
            Ok(()) => "yes".to_owned(),
            Err(e) => format!("NO ({e})"),
        }
    ));
    if let Err(e) = &serves {
        report.fail(format!("the server no longer serves a new client: {e}"));
    }
    let (after, settled) =
        crate::wire::wait_for_stats(target.addr(), Duration::from_secs(15), |s| {
            s.rooms == 0 && s.connections == 1
        })?;
    report.line(format!(
        "  after everyone left: {} rooms, {} connections (the asking one included); server counted {} slow consumers, errors {:?}",
        after.rooms,
        after.connections,
        after.slow_consumers - before.slow_consumers,
        after.errors
    ));
    report.check(
        settled,
        format!(
            "after everyone left the server still reports {} rooms and {} connections (want 0 and 1)",
            after.rooms, after.connections
        ),
    );
    report.set("target", target.mode());
    report.set("clients", options.clients);
    report.set("rooms", rooms);
    report.set("duration_s", options.duration.as_secs_f64());
    report.set("seed", seed);
    report.set("sessions", c.sessions.load(Ordering::Relaxed));
    report.set("roles", json!(roles));
    report.set("session_ends", json!(ends));
    report.set("joins", c.joins.load(Ordering::Relaxed));
    report.set("leaves", c.leaves.load(Ordering::Relaxed));
    report.set("heartbeats", c.heartbeats.load(Ordering::Relaxed));
    report.set("published", published);
    report.set("deliveries", a.deliveries);
    report.set("membership_events", member_events);
    report.set("guaranteed", a.guaranteed);
    report.set("guaranteed_received", a.guaranteed_received);
    report.set("lost", a.lost);
    report.set("gaps_before_cut", a.gaps);
    report.set("out_of_order", a.out_of_order);
    report.set("duplicates", a.duplicates);
    report.set("leaked", a.leaked);
    report.set("never_sent", a.phantom);
    report.set("timing_ambiguous", a.in_between);
    report.set("complete_sessions", a.complete_sessions);
    report.set("cut_sessions", a.cut_sessions);
    report.set("pauses", c.pauses.load(Ordering::Relaxed));
    report.set("stopped_readers_caught_up", stalled_caught_up);
    report.set("stopped_readers_cut_off", stalled_cut);
    report.set("stopped_readers_neither", stalled_neither);
    report.set("malformed_sent", bad_total);
    report.set("malformed_answered", bad_ok);
    report.set("malformed_by_code", json!(bad_by_code));
    report.set("hello_skipped", c.no_hello.load(Ordering::Relaxed));
    report.set("still_serves", serves.is_ok());
    report.set("final_rooms", after.rooms);
    report.set("final_connections", after.connections);
    report.set(
        "server_slow_consumers",
        after.slow_consumers - before.slow_consumers,
    );
    report.set("server_errors", json!(after.errors));
    report.set(
        "seconds",
        crate::report::round(started.elapsed().as_secs_f64(), 3),
    );
    Ok(report)
}

fn sorted(map: &HashMap<impl AsRef<str>, u64>) -> String {
    let mut items: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{} {v}", k.as_ref()))
        .collect();
    items.sort();
    items.join(", ")
}
