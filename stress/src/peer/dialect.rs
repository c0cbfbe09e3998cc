//! What a client of each system says and hears, as bytes and [`Event`]s, so
//! the swarm, the setup workload and the publishers drive Relay, Redis and
//! NATS with one loop.
//!
//! Every publisher sends the same content ([`crate::swarm::content`]): for
//! Relay it is a JSON string inside a MESSAGE, for the peers the payload
//! itself. A subscriber finds it without allocating in all three.

use protocol::{Flags, MessageType};

use super::{System, nats, resp};
use crate::server_message;
use crate::swarm::content::{self, find_content};
use crate::wire::CLIENT_MAX_FRAME;

/// One thing a client heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A delivered message: its content (the fixed layout, quotes included).
    Delivery(&'a [u8]),
    /// A join answered: Relay's JOIN answer (with the room's member count),
    /// Redis's subscribe confirmation, or NATS's PONG to the PING that ends
    /// the greeting.
    Ack { members: Option<u64> },
    /// The server checks the client is alive (NATS): answer [`pong`].
    Ping,
    /// An error from the server: Relay's code, Redis's first word, NATS's text.
    Error(String),
    /// A Relay member event (userJoined / userLeft).
    MemberEvent,
    /// A message that is not one this tool sent.
    Foreign,
    /// Anything else: HELLO answers, PUBLISH counts, INFO, +OK, heartbeats.
    Other,
}

/// Reads the next event from the start of `bytes`: `Ok(Some((event, bytes
/// used)))`, `Ok(None)` when more bytes are needed, or `Err` when the stream
/// is not the system's protocol (no later boundary in it can be trusted).
/// `hint` speeds up finding Relay's content; keep one per connection.
pub fn next_event<'a>(
    system: System,
    bytes: &'a [u8],
    hint: &mut usize,
) -> Result<Option<(Event<'a>, usize)>, String> {
    match system {
        System::Relay => relay_event(bytes, hint),
        System::Redis => match resp::parse(bytes) {
            Ok(Some((reply, used))) => Ok(Some((redis_event(&reply), used))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        },
        System::Nats => match nats::parse(bytes) {
            Ok(Some((op, used))) => Ok(Some((nats_event(&op), used))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    }
}

fn relay_event<'a>(
    bytes: &'a [u8],
    hint: &mut usize,
) -> Result<Option<(Event<'a>, usize)>, String> {
    let (frame, used) = match protocol::parse_frame(bytes, CLIENT_MAX_FRAME) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("not a Relay frame stream: {e}")),
    };
    let event = match frame.kind {
        // Only a delivery has a `content` key; the rare rest (member
        // events, anything foreign) gets the full parse.
        MessageType::Message => {
            let found = if frame.flags.is_json() {
                find_content(frame.payload, hint)
            } else {
                None
            };
            match found {
                Some(content) => Event::Delivery(content),
                None if server_message::is_member_event(frame.flags, frame.payload) => {
                    Event::MemberEvent
                }
                None => Event::Foreign,
            }
        }
        MessageType::JoinRoom => Event::Ack {
            members: Some(
                serde_json::from_slice::<protocol::RoomReply>(frame.payload)
                    .map(|r| r.members)
                    .unwrap_or(0),
            ),
        },
        MessageType::Error => Event::Error(
            serde_json::from_slice::<protocol::ErrorPayload>(frame.payload)
                .map(|e| e.code.to_string())
                .unwrap_or_else(|_| "UNREADABLE".into()),
        ),
        _ => Event::Other,
    };
    Ok(Some((event, used)))
}

fn redis_event<'a>(reply: &resp::Reply<'a>) -> Event<'a> {
    match *reply {
        resp::Reply::Aggregate {
            kind: b'>' | b'*',
            len,
            ..
        } => {
            let mut items = reply.items();
            match items.next().and_then(|i| i.text()) {
                Some(b"message") if len == 3 => match items.nth(1).and_then(|i| i.text()) {
                    Some(payload) if is_content(payload) => Event::Delivery(payload),
                    _ => Event::Foreign,
                },
                Some(b"subscribe") => Event::Ack { members: None },
                _ => Event::Other,
            }
        }
        resp::Reply::Error(text) => Event::Error(first_word(text)),
        _ => Event::Other,
    }
}

fn nats_event<'a>(op: &nats::Op<'a>) -> Event<'a> {
    match *op {
        nats::Op::Msg { payload, .. } if is_content(payload) => Event::Delivery(payload),
        nats::Op::Msg { .. } => Event::Foreign,
        nats::Op::Pong => Event::Ack { members: None },
        nats::Op::Ping => Event::Ping,
        nats::Op::Err(text) => Event::Error(
            String::from_utf8_lossy(&text[..text.len().min(64)])
                .trim_matches('\'')
                .to_owned(),
        ),
        nats::Op::Info(_) | nats::Op::Ok => Event::Other,
    }
}

fn is_content(payload: &[u8]) -> bool {
    payload.len() >= content::MIN_LEN && payload[0] == b'"'
}

fn first_word(text: &[u8]) -> String {
    let word = text.split(|&b| b == b' ').next().unwrap_or_default();
    String::from_utf8_lossy(&word[..word.len().min(32)]).into_owned()
}

/// What a client sends right after connecting to be in `rooms`; `publishes`
/// says whether it will also publish on this connection (Redis then needs
/// RESP3, where a subscribed connection may still PUBLISH).
pub fn greeting(system: System, out: &mut Vec<u8>, rooms: &[String], publishes: bool) {
    match system {
        System::Relay => {
            crate::wire::push_json(
                out,
                MessageType::Hello,
                &serde_json::json!({"clientVersion": "stress-swarm"}),
            );
            for room in rooms {
                crate::wire::push_json(
                    out,
                    MessageType::JoinRoom,
                    &serde_json::json!({ "room": room }),
                );
            }
        }
        System::Redis => {
            if publishes {
                resp::command(out, &[b"HELLO", b"3"]);
            }
            if !rooms.is_empty() {
                let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                args.extend(rooms.iter().map(|r| r.as_bytes()));
                resp::command(out, &args);
            }
        }
        System::Nats => {
            nats::connect(out, false);
            for (sid, room) in rooms.iter().enumerate() {
                nats::sub(out, room, sid + 1);
            }
            out.extend_from_slice(nats::PING);
        }
    }
}

/// How many [`Event::Ack`]s the greeting for `rooms` rooms is answered with.
pub fn acks_needed(system: System, rooms: usize) -> usize {
    match system {
        System::Relay | System::Redis => rooms,
        System::Nats => 1,
    }
}

/// A whole publish of a `len`-byte content to `room`, and the offset of the
/// content in it (where [`content::fill`] writes each message's fields).
pub fn publish_frame(system: System, room: &str, len: usize) -> (Vec<u8>, usize) {
    match system {
        System::Relay => content::publish_frame(room, len),
        System::Redis => resp::publish(room, &content::template(len)),
        System::Nats => nats::publish(room, &content::template(len)),
    }
}

/// A keep-alive for a connection that has been quiet: Relay closes idle
/// connections, the peers don't (NATS asks with PING instead).
pub fn heartbeat(system: System, out: &mut Vec<u8>) {
    if system == System::Relay {
        let _ = protocol::encode(out, MessageType::Heartbeat, Flags::NONE, b"");
    }
}

/// The answer to [`Event::Ping`].
pub fn pong(system: System, out: &mut Vec<u8>) {
    if system == System::Nats {
        out.extend_from_slice(nats::PONG);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(system: System, bytes: &[u8]) -> Vec<Event<'_>> {
        let mut hint = 0;
        let mut at = 0;
        let mut out = Vec::new();
        while let Some((event, used)) = next_event(system, &bytes[at..], &mut hint).unwrap() {
            at += used;
            out.push(event);
        }
        assert_eq!(at, bytes.len());
        out
    }

    fn filled(len: usize) -> Vec<u8> {
        let mut c = content::template(len);
        content::fill(&mut c, 5, 2, 1234);
        c
    }

    #[test]
    fn each_system_hears_its_acks_and_deliveries() {
        let c = filled(40);
        // Redis, RESP3: HELLO map, subscribe push, delivery, PUBLISH count.
        let mut redis = b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n>3\r\n$9\r\nsubscribe\r\n$2\r\nr1\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$2\r\nr1\r\n$40\r\n".to_vec();
        redis.extend_from_slice(&c);
        redis.extend_from_slice(
            b"\r\n:10\r\n>3\r\n$7\r\nmessage\r\n$2\r\nr1\r\n$2\r\nhi\r\n-ERR no\r\n",
        );
        assert_eq!(
            events(System::Redis, &redis),
            [
                Event::Other,
                Event::Ack { members: None },
                Event::Delivery(&c),
                Event::Other,
                Event::Foreign,
                Event::Error("ERR".into()),
            ]
        );
        let mut nats_bytes = b"INFO {}\r\nPONG\r\nMSG r1 1 40\r\n".to_vec();
        nats_bytes.extend_from_slice(&c);
        nats_bytes.extend_from_slice(b"\r\nPING\r\n-ERR 'Slow Consumer'\r\n");
        assert_eq!(
            events(System::Nats, &nats_bytes),
            [
                Event::Other,
                Event::Ack { members: None },
                Event::Delivery(&c),
                Event::Ping,
                Event::Error("Slow Consumer".into()),
            ]
        );
        let mut relay = crate::wire::json_frame(
            MessageType::JoinRoom,
            &serde_json::json!({"status": "joined", "room": "r1", "members": 3}),
        );
        let mut delivery = br#"{"room":"r1","from":"c1","content":"#.to_vec();
        delivery.extend_from_slice(&c);
        delivery.extend_from_slice(br#","timestamp":1}"#);
        relay.extend(crate::wire::raw_frame(
            MessageType::Message,
            Flags::JSON,
            &delivery,
        ));
        let got = events(System::Relay, &relay);
        assert_eq!(got[0], Event::Ack { members: Some(3) });
        assert!(matches!(got[1], Event::Delivery(d) if d.starts_with(&c)));
    }

    #[test]
    fn greetings_and_publishes_are_each_systems_bytes() {
        let rooms = ["a".to_owned(), "b".to_owned()];
        let mut out = Vec::new();
        greeting(System::Redis, &mut out, &rooms, false);
        assert_eq!(out, b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n");
        out.clear();
        greeting(System::Nats, &mut out, &rooms, true);
        assert!(out.ends_with(b"SUB a 1\r\nSUB b 2\r\nPING\r\n"));
        assert_eq!(acks_needed(System::Nats, 2), 1);
        assert_eq!(acks_needed(System::Redis, 2), 2);
        for system in System::ALL {
            let (frame, at) = publish_frame(system, "a", 64);
            assert_eq!(
                &frame[at..at + 64],
                &content::template(64)[..],
                "{system:?}"
            );
        }
    }
}
