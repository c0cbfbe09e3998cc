//! The reader thread: reads the socket, decodes frames with the protocol
//! crate's [`Decoder`], turns each into an owned [`Event`] and hands it over a
//! bounded channel.
//!
//! The channel is bounded on purpose: a program that stops taking events stops
//! this thread, which stops reading, so TCP pushes back on the server instead
//! of this process buffering without limit. The server then treats this client
//! as the slow consumer it is.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};

use crate::tls::ReadHalf;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use protocol::{
    BinaryDelivery, DecodeError, Decoder, ErrorPayload, Frame, HelloReply, MessageType, RoomReply,
    SequencedBinaryDelivery, ServerMessage, Since, WhoReply,
};
use serde::Deserialize;

use crate::error::{DisconnectReason, ServerError};
use crate::event::{Body, DirectMessage, Event, HeartbeatReply, MemberEvent, Message, RoomAck};

/// State the reader thread shares with the [`crate::Client`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Heartbeat payloads carry microseconds since this instant, so the reply
    /// alone tells the round-trip time.
    pub epoch: Instant,
    /// Set once, by the reader thread, when the connection ends.
    pub reason: Mutex<Option<DisconnectReason>>,
    /// Set by the handle before it shuts the socket down, so the read error
    /// that follows is reported as a local close.
    pub closing: AtomicBool,
    /// The largest frame the server accepts, from its HELLO answer.
    pub server_max_frame: AtomicU32,
    /// This connection's id, from the server's HELLO answer.
    pub connection_id: Mutex<Option<String>>,
    /// Whether the server echoes HEARTBEATs: [`ECHO_UNKNOWN`] until a HELLO
    /// answer says, then [`ECHO_YES`] or [`ECHO_NO`].
    pub heartbeat_echo: AtomicU8,
    /// The HELLO asked for `seq` in binary deliveries, so they come in the
    /// sequenced layout.
    pub binary_seq: AtomicBool,
    /// The last place seen in each room's order: from its JOIN answer, then
    /// from each numbered delivery; what a JOIN after a reconnect recovers
    /// from.
    pub positions: Mutex<HashMap<String, Since>>,
}

/// No HELLO answer yet: nothing is known about HEARTBEAT echoes.
pub(crate) const ECHO_UNKNOWN: u8 = 0;
/// The server echoes HEARTBEATs: it announced `idleTimeoutMs` (as a Relay v1
/// server does), or it echoed one.
pub(crate) const ECHO_YES: u8 = 1;
/// The server announced no `idleTimeoutMs`: the original Node.js server,
/// which never answers a HEARTBEAT.
pub(crate) const ECHO_NO: u8 = 2;

impl Shared {
    pub fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            reason: Mutex::new(None),
            closing: AtomicBool::new(false),
            server_max_frame: AtomicU32::new(protocol::DEFAULT_MAX_FRAME),
            connection_id: Mutex::new(None),
            heartbeat_echo: AtomicU8::new(ECHO_UNKNOWN),
            binary_seq: AtomicBool::new(false),
            positions: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that `room` has reached `seq` of `epoch`.
    fn saw(&self, room: &str, epoch: &str, seq: u64) {
        let mut positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match positions.get_mut(room) {
            Some(position) => {
                if position.epoch != epoch {
                    position.epoch = epoch.to_owned();
                }
                position.seq = seq;
            }
            None => {
                positions.insert(
                    room.to_owned(),
                    Since {
                        epoch: epoch.to_owned(),
                        seq,
                    },
                );
            }
        }
    }

    /// A delivery as an event, its position remembered for recovery.
    fn message(&self, message: Message) -> Event {
        if let Some(position) = &message.position {
            self.saw(&message.room, &position.epoch, position.seq);
        }
        Event::Message(message)
    }

    pub fn reason(&self) -> Option<DisconnectReason> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_reason(&self, reason: DisconnectReason) {
        let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(reason);
    }
}

/// The HEARTBEAT payload this client sends: a sequence number and the send
/// time, so the echo tells which request it answers and how long it took.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeartbeatPayload {
    seq: u64,
    sent_us: u64,
}

pub(crate) fn heartbeat_payload(seq: u64, sent_us: u64) -> String {
    format!(r#"{{"seq":{seq},"sentUs":{sent_us}}}"#)
}

/// Starts the reader thread for `stream`.
/// `control` is the socket itself, to shut down: `stream` may be TLS.
pub(crate) fn spawn(
    stream: ReadHalf,
    control: TcpStream,
    max_frame: u32,
    events: Sender<Event>,
    shared: Arc<Shared>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("relay-client-reader".into())
        .stack_size(256 * 1024)
        .spawn(move || run(stream, &control, Decoder::new(max_frame), &events, &shared))
}

fn run(
    mut stream: ReadHalf,
    control: &TcpStream,
    mut decoder: Decoder,
    events: &Sender<Event>,
    shared: &Shared,
) {
    // The last fatal ERROR read: the server closes right after it, and that
    // close is reported with it.
    let mut fatal: Option<ServerError> = None;
    let reason = 'conn: loop {
        let read = stream.read(decoder.read_buf());
        let n = match read {
            Ok(0) => {
                break match fatal.take() {
                    Some(error) => DisconnectReason::ServerError(error),
                    None if shared.closing.load(Ordering::SeqCst) => DisconnectReason::Closed,
                    None => DisconnectReason::ClosedByServer,
                };
            }
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                break match fatal.take() {
                    Some(fatal) => DisconnectReason::ServerError(fatal),
                    None if shared.closing.load(Ordering::SeqCst) => DisconnectReason::Closed,
                    None => DisconnectReason::io(&error),
                };
            }
        };
        decoder.commit(n);
        loop {
            let event = match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => match to_event(frame, shared) {
                    Ok(Some(event)) => event,
                    Ok(None) => continue,
                    Err(violation) => break 'conn DisconnectReason::ProtocolViolation(violation),
                },
                Err(error) => break 'conn DisconnectReason::ProtocolViolation(describe(error)),
            };
            if let Event::Error(error) = &event
                && error.fatal
            {
                fatal = Some(error.clone());
            }
            if events.send(event).is_err() {
                // The handle is gone: nobody wants the rest.
                let _ = control.shutdown(Shutdown::Both);
                return;
            }
        }
    };
    if matches!(reason, DisconnectReason::ProtocolViolation(_)) {
        let _ = control.shutdown(Shutdown::Both);
    }
    shared.set_reason(reason.clone());
    let _ = events.send(Event::Disconnected(reason));
}

fn describe(error: DecodeError) -> String {
    match error {
        DecodeError::TooLarge { length, max } => {
            format!("it sent a frame of length {length}, above this client's limit of {max} bytes")
        }
        other => format!("bad frame: {other}"),
    }
}

fn json<'a, T: Deserialize<'a>>(frame: &Frame<'a>) -> Result<T, String> {
    serde_json::from_slice(frame.payload).map_err(|error| {
        format!(
            "its {} frame has an invalid payload ({error}): {}",
            frame.kind,
            String::from_utf8_lossy(&frame.payload[..frame.payload.len().min(200)])
        )
    })
}

/// A timestamp as the client reports it: the protocol reads a missing one as
/// 0 (the original server's membership events have none), and that is `None`.
fn given(timestamp: u64) -> Option<u64> {
    (timestamp != 0).then_some(timestamp)
}

/// A JOIN_ROOM or LEAVE_ROOM answer. The protocol reads a missing `members`
/// (the original server never sends it) as 0, which a LEAVE_ROOM answer can
/// also mean, so whether the key is there is read separately.
fn room_ack(frame: &Frame<'_>) -> Result<RoomAck, String> {
    #[derive(Deserialize)]
    struct Said {
        #[serde(default)]
        members: Option<u64>,
    }
    let reply: RoomReply = json(frame)?;
    let said: Said = json(frame)?;
    let position = match (reply.epoch, reply.seq) {
        (Some(epoch), Some(seq)) => Some(Since { epoch, seq }),
        _ => None,
    };
    Ok(RoomAck {
        room: reply.room,
        members: said.members,
        position,
        member_list: reply.member_list.unwrap_or_default(),
    })
}

/// Reads one server frame into an event (`None`: one to ignore); `Err`
/// describes a protocol violation.
fn to_event(frame: Frame<'_>, shared: &Shared) -> Result<Option<Event>, String> {
    Ok(Some(match frame.kind {
        MessageType::Hello => {
            let reply: HelloReply = json(&frame)?;
            shared
                .server_max_frame
                .store(reply.max_frame_size, Ordering::Relaxed);
            *shared
                .connection_id
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(reply.connection_id.clone());
            if reply.idle_timeout_ms > 0 {
                shared.heartbeat_echo.store(ECHO_YES, Ordering::Relaxed);
            } else {
                // Not announced: the original server. An echo already seen
                // says otherwise, and wins.
                let _ = shared.heartbeat_echo.compare_exchange(
                    ECHO_UNKNOWN,
                    ECHO_NO,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Event::Hello(reply)
        }
        MessageType::JoinRoom => {
            let ack = room_ack(&frame)?;
            if let Some(position) = &ack.position {
                // A JOIN after a recovery restarts from where it left off;
                // a fresh one from the room's present.
                let positions = shared
                    .positions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let known = positions.get(&ack.room).cloned();
                drop(positions);
                if known.is_none_or(|known| known.epoch != position.epoch) {
                    shared.saw(&ack.room, &position.epoch, position.seq);
                }
            }
            Event::Joined(ack)
        }
        MessageType::Who => {
            let reply: WhoReply = json(&frame)?;
            Event::Who(reply)
        }
        MessageType::LeaveRoom => Event::Left(room_ack(&frame)?),
        MessageType::Message if frame.flags.is_binary() => {
            let malformed = |error| format!("its binary MESSAGE is malformed: {error}");
            if shared.binary_seq.load(Ordering::Relaxed) {
                let delivery = SequencedBinaryDelivery::parse(frame.payload).map_err(malformed)?;
                shared.message(Message {
                    room: delivery.room.to_owned(),
                    from: delivery.from.to_owned(),
                    user: None,
                    body: Body::Binary(delivery.body.to_vec()),
                    timestamp: None,
                    position: Some(Since {
                        epoch: delivery.epoch.to_owned(),
                        seq: delivery.seq,
                    }),
                })
            } else {
                let delivery = BinaryDelivery::parse(frame.payload).map_err(malformed)?;
                Event::Message(Message {
                    room: delivery.room.to_owned(),
                    from: delivery.from.to_owned(),
                    user: None,
                    body: Body::Binary(delivery.body.to_vec()),
                    timestamp: None,
                    position: None,
                })
            }
        }
        MessageType::Message => match ServerMessage::parse(frame.payload) {
            Ok(ServerMessage::Delivery(delivery)) => {
                let position = match (delivery.epoch, delivery.seq) {
                    (Some(epoch), Some(seq)) => Some(Since {
                        epoch: epoch.into_owned(),
                        seq,
                    }),
                    _ => None,
                };
                shared.message(Message {
                    room: delivery.room.into_owned(),
                    from: delivery.from.into_owned(),
                    user: delivery.user.map(|user| user.into_owned()),
                    body: Body::Json(delivery.content.to_owned()),
                    timestamp: given(delivery.timestamp),
                    position,
                })
            }
            Ok(ServerMessage::Gap(gap)) => {
                // What is gone is gone: recovery later starts after it.
                if let Some(to) = gap.to {
                    shared.saw(&gap.room, &gap.epoch, to);
                } else {
                    shared.saw(&gap.room, &gap.epoch, 0);
                }
                Event::Gap(gap)
            }
            Ok(ServerMessage::Ack(ack)) => {
                shared.saw(&ack.room, &ack.epoch, ack.seq);
                Event::Ack(ack)
            }
            Ok(ServerMessage::Members(notice)) => Event::Members(notice),
            Ok(ServerMessage::Direct(direct)) => Event::Direct(DirectMessage {
                from: direct.from.into_owned(),
                user: direct.user.map(|user| user.into_owned()),
                body: Body::Json(direct.content.to_owned()),
                timestamp: given(direct.timestamp),
            }),
            // A notice of a kind this client does not know: ignored, as
            // SPEC.md 3.5 asks.
            Ok(ServerMessage::Other(_)) => return Ok(None),
            Ok(ServerMessage::Member(event)) => Event::Member(MemberEvent {
                change: event.change,
                room: event.room,
                connection_id: event.connection_id,
                user: event.user,
                timestamp: given(event.timestamp),
            }),
            Err(error) => {
                return Err(format!(
                    "its MESSAGE frame has an invalid payload ({error}): {}",
                    String::from_utf8_lossy(&frame.payload[..frame.payload.len().min(200)])
                ));
            }
        },
        MessageType::Heartbeat => {
            shared.heartbeat_echo.store(ECHO_YES, Ordering::Relaxed);
            let ours = serde_json::from_slice::<HeartbeatPayload>(frame.payload).ok();
            let now_us = u64::try_from(shared.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            Event::Heartbeat(HeartbeatReply {
                seq: ours.as_ref().map(|p| p.seq),
                rtt: ours.map(|p| Duration::from_micros(now_us.saturating_sub(p.sent_us))),
            })
        }
        MessageType::Error => {
            let payload: ErrorPayload = json(&frame)?;
            Event::Error(payload.into())
        }
    }))
}

#[cfg(test)]
mod tests {
    use protocol::Flags;

    use super::*;

    fn event(kind: MessageType, payload: &str) -> Event {
        let frame = Frame {
            kind,
            flags: Flags::JSON,
            payload: payload.as_bytes(),
        };
        to_event(frame, &Shared::new())
            .expect("a valid frame")
            .expect("an event")
    }

    #[test]
    fn a_timestamp_of_0_or_none_is_absent() {
        for payload in [
            r#"{"room":"r","from":"conn-2","content":"hi"}"#,
            r#"{"room":"r","from":"conn-2","content":"hi","timestamp":0}"#,
        ] {
            match event(MessageType::Message, payload) {
                Event::Message(message) => assert_eq!(message.timestamp, None, "{payload}"),
                other => panic!("{other:?}"),
            }
        }
        match event(
            MessageType::Message,
            r#"{"type":"userJoined","room":"r","connectionId":"conn-2"}"#,
        ) {
            Event::Member(member) => assert_eq!(member.timestamp, None),
            other => panic!("{other:?}"),
        }
        match event(
            MessageType::Message,
            r#"{"room":"r","from":"c2","content":1,"timestamp":1700000000000}"#,
        ) {
            Event::Message(message) => assert_eq!(message.timestamp, Some(1_700_000_000_000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn members_are_known_only_when_the_server_says() {
        match event(MessageType::LeaveRoom, r#"{"status":"left","room":"r"}"#) {
            Event::Left(ack) => assert_eq!(ack.members, None),
            other => panic!("{other:?}"),
        }
        match event(
            MessageType::LeaveRoom,
            r#"{"status":"left","room":"r","members":0}"#,
        ) {
            Event::Left(ack) => assert_eq!(ack.members, Some(0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_hello_answer_tells_whether_heartbeats_are_echoed() {
        let shared = Shared::new();
        let hello = |payload: &str| {
            let frame = Frame {
                kind: MessageType::Hello,
                flags: Flags::JSON,
                payload: payload.as_bytes(),
            };
            to_event(frame, &shared).expect("a valid HELLO answer");
        };
        hello(r#"{"status":"connected","connectionId":"conn-1","serverVersion":"1.0.0"}"#);
        assert_eq!(shared.heartbeat_echo.load(Ordering::Relaxed), ECHO_NO);
        assert_eq!(
            shared.server_max_frame.load(Ordering::Relaxed),
            protocol::ORIGINAL_MAX_FRAME
        );
        hello(r#"{"connectionId":"c1","maxFrameSize":1048576,"idleTimeoutMs":60000}"#);
        assert_eq!(shared.heartbeat_echo.load(Ordering::Relaxed), ECHO_YES);
    }
}
