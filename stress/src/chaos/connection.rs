//! One session's connection: the actor's side that writes requests and waits
//! for their answers, and the reader thread that records everything the
//! server sends, with the time it arrived.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use protocol::{ErrorCode, Flags, Hello, MessageType, RoomReply, ServerMessage};

use super::REPLY_TIMEOUT;
use super::model::{
    ContentProbe, End, Period, Published, Received, Reply, Role, Session, World, bump, content,
    room_index, room_name,
};
use crate::error::{Context, Result};
use crate::server_message;
use crate::wire::{Conn, RecvError, raw_frame, room_frame};

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
            MessageType::Message => {
                let outcome = sort_message(&world, &mut ids, &frame.payload, frame.flags);
                let mut state = session.lock();
                match outcome {
                    Ok(Inbound::Member) => state.member_events += 1,
                    Ok(Inbound::Gap { room, messages }) => {
                        *state.gap_notices.entry(room).or_default() += messages;
                    }
                    Ok(Inbound::Delivery { room, from, seq }) => {
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

/// What a MESSAGE from the server was.
enum Inbound {
    Member,
    /// A cluster's live gap notice: `messages` of `room` are gone.
    Gap {
        room: u16,
        messages: u64,
    },
    /// One of ours, byte-exact; `from` is the publishing session's index.
    Delivery {
        room: u16,
        from: u32,
        seq: u64,
    },
}

/// Sorts a MESSAGE from the server, and checks a delivery is byte-exact
/// one that a session of this run published.
fn sort_message(
    world: &World,
    ids: &mut HashMap<String, u32>,
    payload: &[u8],
    flags: Flags,
) -> std::result::Result<Inbound, String> {
    let text = || {
        String::from_utf8_lossy(payload)
            .chars()
            .take(200)
            .collect::<String>()
    };
    let delivery = match server_message::parse(flags, payload) {
        Ok(ServerMessage::Member(_)) => return Ok(Inbound::Member),
        Ok(ServerMessage::Gap(gap)) if gap.previous_epoch.is_none() => {
            let room = room_index(&gap.room)
                .ok_or_else(|| format!("gap notice for a room nobody joined: {}", text()))?;
            let messages = match (gap.from, gap.to) {
                (Some(from), Some(to)) if from <= to => to - from + 1,
                _ => return Err(format!("a gap notice without a range: {}", text())),
            };
            return Ok(Inbound::Gap { room, messages });
        }
        Ok(ServerMessage::Delivery(delivery)) => delivery,
        Ok(other) => return Err(format!("a notice chaos never asks for ({other:?})")),
        Err(why) => return Err(format!("{why}: {}", text())),
    };
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
    Ok(Inbound::Delivery {
        room,
        from,
        seq: probe.s,
    })
}

/// Why an actor's request went unanswered.
#[derive(Debug)]
pub(super) enum Broken {
    /// The server closed the session (slow consumer, or something unexpected).
    Closed,
    /// No answer in time, or a wrong one: recorded as a problem.
    Failed,
}

/// An actor's handle on its current session.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) session: Arc<Session>,
    pub(super) stream: TcpStream,
    pub(super) reader: Option<JoinHandle<()>>,
    /// Rooms joined (acked), and the next sequence number per room.
    pub(super) joined: Vec<u16>,
    pub(super) seqs: HashMap<u16, u64>,
}

impl Live {
    pub(super) fn open(world: &Arc<World>, client: usize, role: Role) -> Result<Live> {
        let mut conn = Conn::connect(world.node_of(client).1)?;
        let hello = Hello {
            user_id: Some(format!("chaos-{client}")),
            client_version: Some("stress-chaos".into()),
            echo: true,
            ..Hello::default()
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

    pub(super) fn problem(&self, what: String) {
        self.session.lock().problems.push(what);
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), Broken> {
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
    pub(super) fn wait_closed(&self, timeout: Duration) -> bool {
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
    pub(super) fn reply(&self, waiting_for: &str) -> std::result::Result<Reply, Broken> {
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

    pub(super) fn room_request(
        &mut self,
        kind: MessageType,
        room: u16,
    ) -> std::result::Result<(), Broken> {
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
    pub(super) fn mark_all_left(&self, at: Instant) {
        let mut state = self.session.lock();
        for period in state.periods.iter_mut().filter(|p| p.leave_sent.is_none()) {
            period.leave_sent = Some(at);
        }
    }

    pub(super) fn burst(
        &mut self,
        world: &World,
        room: u16,
        count: u64,
    ) -> std::result::Result<(), Broken> {
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

    pub(super) fn heartbeat(&mut self, n: u64) -> std::result::Result<(), Broken> {
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
    pub(super) fn close(mut self, end: End, reset: bool) {
        let at = Instant::now();
        self.mark_all_left(at);
        if reset {
            let _ = testkit::conn::reset_on_close(&self.stream);
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
    pub(super) fn closed_by_server(mut self, end: End) {
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
    pub(super) fn finish(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.session.abandon.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Read);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Leaves every room, then closes with FIN.
    pub(super) fn graceful(mut self, n: u64) -> std::result::Result<(), (Live, Broken)> {
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

pub(super) fn finish_broken(l: Live, broken: Broken) {
    match broken {
        Broken::Closed => l.closed_by_server(End::Unexpected),
        Broken::Failed => l.close(End::Rst, true),
    }
}
