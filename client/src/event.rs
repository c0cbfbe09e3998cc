//! What a server sends, as typed, owned events.

use std::time::Duration;

use protocol::{Ack, Gap, HelloReply, Member, MemberChange, MembersNotice, Since, WhoReply};
use serde_json::value::RawValue;

use crate::error::{DisconnectReason, ServerError};

/// One thing the server said (or the end of the conversation).
///
/// Events arrive in the order the server sent them: replies in the order of
/// this client's requests, interleaved in order with deliveries and member
/// events. [`Event::Disconnected`] is always the last one.
#[derive(Debug, Clone)]
pub enum Event {
    /// The answer to HELLO (also to a HELLO sent again, with fresh stats).
    Hello(HelloReply),
    /// The answer to JOIN_ROOM.
    Joined(RoomAck),
    /// The answer to LEAVE_ROOM (also when this client was not a member).
    Left(RoomAck),
    /// A message published in a room this client is in.
    Message(Message),
    /// Messages of a room that are gone for good: sent after a JOIN that
    /// asked for recovery, before the first message after them.
    Gap(Gap),
    /// The server's acknowledgement of a MESSAGE sent with
    /// [`crate::Client::send_acked`].
    Ack(Ack),
    /// A message sent to this connection or its user, not to a room.
    Direct(DirectMessage),
    /// The answer to WHO.
    Who(WhoReply),
    /// Another member joined or left a room this client is in.
    Member(MemberEvent),
    /// The membership changes of a big room since the last notice or this
    /// client's JOIN answer, for a client that asked for them batched: a
    /// HELLO whose `member_events` is `Some(MemberEvents::Batched)`, sent
    /// with [`crate::Client::hello`].
    /// `count` is the exact member count; when [`MembersNotice::complete`]
    /// is false only the first changes are listed, and a client that keeps
    /// a member list lists the room again with [`crate::Client::who_all`].
    Members(MembersNotice),
    /// The answer to a HEARTBEAT.
    Heartbeat(HeartbeatReply),
    /// An ERROR frame. A fatal one is followed by [`Event::Disconnected`].
    Error(ServerError),
    /// The connection is over; no event follows.
    Disconnected(DisconnectReason),
}

/// The answer to a JOIN_ROOM or LEAVE_ROOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAck {
    /// The room, as the server names it (trimmed).
    pub room: String,
    /// Members of the room after the change; `None` when the server did not
    /// say (the original Node.js server never does).
    pub members: Option<u64>,
    /// JOIN answer: the room's epoch and the last `seq` given in it before
    /// the join; live messages have higher ones. `None` from servers that
    /// do not number messages.
    pub position: Option<Since>,
    /// JOIN answer: the members, oldest first, up to the server's limit
    /// (`members` counts them all); empty when the server did not list them.
    pub member_list: Vec<Member>,
}

/// A direct message: sent to this connection, or to its user.
#[derive(Debug, Clone)]
pub struct DirectMessage {
    /// The sender's connection id.
    pub from: String,
    /// The sender's user name, when it has one.
    pub user: Option<String>,
    pub body: Body,
    pub timestamp: Option<u64>,
}

/// A message relayed by the server.
#[derive(Debug, Clone)]
pub struct Message {
    pub room: String,
    /// The publisher's connection id (e.g. `c17`).
    pub from: String,
    /// The publisher's user name, when it gave one in its HELLO. Binary
    /// deliveries never carry it.
    pub user: Option<String>,
    pub body: Body,
    /// Server time of relay in milliseconds since the Unix epoch. Binary
    /// deliveries carry none, and neither does a JSON delivery without one
    /// (or with 0).
    pub timestamp: Option<u64>,
    /// Its place in the room's order (SPEC.md 5.11): the room's epoch and
    /// the message's `seq`, which a JOIN with `since` resumes after. `None`
    /// from servers that do not number messages, and for binary deliveries
    /// unless the HELLO asked for `binarySeq`.
    pub position: Option<Since>,
}

impl Message {
    /// Who sent it, for display: the user name, else the connection id.
    pub fn sender(&self) -> &str {
        self.user.as_deref().unwrap_or(&self.from)
    }
}

/// The content of a message.
#[derive(Debug, Clone)]
pub enum Body {
    /// A JSON value, exactly as the publisher wrote it.
    Json(Box<RawValue>),
    /// Raw bytes, exactly as the publisher sent them.
    Binary(Vec<u8>),
}

impl Body {
    /// The string, when the content is a JSON string.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Body::Json(raw) => serde_json::from_str::<String>(raw.get()).ok(),
            Body::Binary(_) => None,
        }
    }

    /// The JSON text, when the content is JSON.
    pub fn as_json(&self) -> Option<&str> {
        match self {
            Body::Json(raw) => Some(raw.get()),
            Body::Binary(_) => None,
        }
    }

    /// The bytes, when the content is binary.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Body::Json(_) => None,
            Body::Binary(bytes) => Some(bytes),
        }
    }
}

/// Another member arrived in or left a room (a disconnect counts as leaving).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEvent {
    pub change: MemberChange,
    pub room: String,
    pub connection_id: String,
    /// The member's user name, when it gave one.
    pub user: Option<String>,
    /// Server time in milliseconds since the Unix epoch; `None` when the
    /// server did not say (the original Node.js server never does).
    pub timestamp: Option<u64>,
}

impl MemberEvent {
    /// Who it is, for display: the user name, else the connection id.
    pub fn who(&self) -> &str {
        self.user.as_deref().unwrap_or(&self.connection_id)
    }
}

/// The answer to a HEARTBEAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The number [`crate::Client::heartbeat`] returned for the request, or
    /// `None` if the payload was not one this client wrote.
    pub seq: Option<u64>,
    /// Time from sending the HEARTBEAT to reading its answer, when known.
    pub rtt: Option<Duration>,
}
