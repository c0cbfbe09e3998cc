//! The typed payloads of every message, in both directions, and the layout of
//! BINARY messages.
//!
//! JSON field names are camelCase on the wire. Unknown fields are ignored, so
//! either side may add fields without breaking the other.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error_code::ErrorCode;

/// A client's name for one of its requests: a JSON integer or a short
/// string. The answer or ERROR the request causes carries the same id, so a
/// client that pipelines requests can tell which one an ERROR is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// Any integer from −2⁶³ to 2⁶³ − 1.
    Number(i64),
    /// 1 to [`MAX_REQUEST_ID_LEN`] bytes of UTF-8, no control characters.
    Text(String),
}

/// The longest string `id`, in bytes of UTF-8.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// The `maxFrameSize` to assume when a server's HELLO answer has none: the
/// original implementation's fixed limit, 10 MiB.
pub const ORIGINAL_MAX_FRAME: u32 = 10 * 1024 * 1024;

fn original_max_frame() -> u32 {
    ORIGINAL_MAX_FRAME
}

/// Client → server HELLO. Every field is optional; an empty payload is `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// A display name, shown to other members as `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// Whether the client wants its own MESSAGEs delivered back to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub echo: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// Credentials, for a server that requires authentication (SPEC.md 11):
    /// a static token or a signed JWT. A later HELLO with a new token
    /// refreshes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// `true`: binary deliveries carry the room's `seq` and `epoch`
    /// ([`BinaryDelivery::parse_sequenced`]). Off by default, so the
    /// original binary layout is what a client gets unless it asks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary_seq: bool,
    /// `Some(false)`: no `userJoined`/`userLeft` events for this
    /// connection. `None` (the default) and `Some(true)`: events on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_events: Option<bool>,
}

/// A HELLO's credentials. `Debug` never shows them, so a token cannot end
/// up in a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

/// The longest HELLO `token`, in bytes: room for an RS256 JWT with a large
/// permissions claim.
pub const MAX_TOKEN_LEN: usize = 8192;

impl Token {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

/// Server → client answer to HELLO.
///
/// Reading is lenient, so a client works against the original
/// implementation's server too: a missing `maxFrameSize` is its 10 MiB
/// ([`ORIGINAL_MAX_FRAME`]), a missing `idleTimeoutMs` is 0 (not announced),
/// and missing strings are empty. This server always sends every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloReply {
    /// Always `"connected"` (kept for clients of the original implementation).
    #[serde(default)]
    pub status: String,
    /// The server's name for this connection; other members see it as `from`.
    #[serde(default)]
    pub connection_id: String,
    #[serde(default)]
    pub server_version: String,
    /// The largest `length` field the server accepts, and the largest it sends.
    #[serde(default = "original_max_frame")]
    pub max_frame_size: u32,
    /// A connection that sends no complete frame for this long is closed; 0
    /// when the server did not say.
    #[serde(default)]
    pub idle_timeout_ms: u64,
    /// The server's counters when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// The HELLO's `id`, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// The server's counters, as carried in every HELLO answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Stats {
    /// Connections open now (the asking one included).
    pub connections: u64,
    pub connections_total: u64,
    /// Rooms that have at least one member now.
    pub rooms: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections cut off with SLOW_CONSUMER since start.
    pub slow_consumers: u64,
    /// ERROR frames sent, by code.
    pub errors: BTreeMap<String, u64>,
    /// Memberships now (one connection in one room); left out when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub memberships: u64,
    /// Bytes counted against the server's memory budget now (SPEC.md
    /// 11.4); left out when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub memory_used: u64,
    /// The server's memory budget in bytes; left out when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub memory_budget: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Client → server JOIN_ROOM and LEAVE_ROOM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRequest<'a> {
    #[serde(borrow)]
    pub room: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// Server → client answer to JOIN_ROOM (`status` "joined") and LEAVE_ROOM
/// (`status` "left").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomReply {
    pub status: String,
    /// The trimmed room name.
    pub room: String,
    /// Members of the room after the change (0 when the server did not say).
    #[serde(default)]
    pub members: u64,
    /// The request's `id`, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// JOIN answer: the room's epoch (SPEC.md 3.3). Absent from older
    /// servers and from LEAVE answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// JOIN answer: the last `seq` assigned in the room before this join
    /// (0: none yet); every live delivery after the answer has a higher one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// JOIN answer: the members, oldest first, at most
    /// [`MAX_MEMBER_LIST`](crate::MAX_MEMBER_LIST) of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_list: Option<Vec<crate::Member>>,
}

/// Client → server MESSAGE with the JSON flag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publish<'a> {
    #[serde(borrow)]
    pub room: Cow<'a, str>,
    /// `None` only when the key is absent; JSON `null` is `Some`.
    #[serde(
        borrow,
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub content: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// Server → client MESSAGE with the JSON flag: a message another member (or,
/// with echo, this client) published. Has no `type` key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery<'a> {
    #[serde(borrow)]
    pub room: Cow<'a, str>,
    /// The publisher's `connectionId`.
    #[serde(borrow)]
    pub from: Cow<'a, str>,
    /// The publisher's HELLO `userId`, when it gave one.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub content: &'a RawValue,
    /// Server time of relay, in milliseconds since the Unix epoch; 0 when the
    /// server did not say.
    #[serde(default)]
    pub timestamp: u64,
    /// The message's place in its room (SPEC.md 5.11); absent from older
    /// servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The room's epoch: `seq` counts within it.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Cow<'a, str>>,
}

/// The part of every JSON delivery that names its publisher,
/// `"from":"c7","user":"ann"`, escaped once when the publisher says HELLO
/// instead of once for every message it sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherJson(Vec<u8>);

impl PublisherJson {
    pub fn new(connection_id: &str, user: Option<&str>) -> PublisherJson {
        let mut json = b"\"from\":".to_vec();
        push_json_str(&mut json, connection_id);
        if let Some(user) = user {
            json.extend_from_slice(b",\"user\":");
            push_json_str(&mut json, user);
        }
        PublisherJson(json)
    }
}

/// A server's JSON MESSAGE payload, written straight into a frame buffer.
///
/// The bytes are exactly those of serialising a [`Delivery`] (a test holds
/// the two together), but nothing is parsed or allocated: the content is
/// copied as the client sent it, and the publisher part was escaped at HELLO.
/// This is the relay's hot path, run once per MESSAGE whatever the room size.
#[derive(Debug, Clone, Copy)]
pub struct JsonDelivery<'a> {
    pub room: &'a str,
    pub publisher: &'a PublisherJson,
    pub content: &'a RawValue,
    /// Server time of relay, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

impl JsonDelivery<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"room\":");
        push_json_str(out, self.room);
        out.push(b',');
        out.extend_from_slice(&self.publisher.0);
        out.extend_from_slice(b",\"content\":");
        out.extend_from_slice(self.content.get().as_bytes());
        out.extend_from_slice(b",\"timestamp\":");
        push_u64(out, self.timestamp);
        out.push(b'}');
    }
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `n` in decimal, without the allocation `to_string` would make.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
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

/// Whether a member arrived or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    #[serde(rename = "userJoined")]
    Joined,
    #[serde(rename = "userLeft")]
    Left,
}

/// Server → client MESSAGE with the JSON flag and a `type` key: another member
/// joined or left (a disconnect counts as leaving).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberEvent {
    #[serde(rename = "type")]
    pub change: MemberChange,
    pub room: String,
    pub connection_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Server time, in milliseconds since the Unix epoch; 0 when the server
    /// did not say.
    #[serde(default)]
    pub timestamp: u64,
}

/// Server → client ERROR.
///
/// Read leniently: the original implementation's `{"error": "..."}` is an
/// error with code `UNKNOWN`, that text as its message, and `fatal` false
/// (the connection closing says the rest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ErrorPayloadWire")]
pub struct ErrorPayload {
    pub code: ErrorCode,
    pub message: String,
    pub fatal: bool,
    /// The room the refused request named, for non-fatal errors about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The refused request's `id`, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// For RATE_LIMITED: milliseconds until a request of the same kind would
    /// be accepted.
    #[serde(rename = "retryAfterMs", skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Every shape of ERROR payload a server may send.
#[derive(Deserialize)]
struct ErrorPayloadWire {
    #[serde(default)]
    code: Option<ErrorCode>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    fatal: Option<bool>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    id: Option<RequestId>,
    #[serde(default, rename = "retryAfterMs")]
    retry_after_ms: Option<u64>,
    /// The original implementation's only key.
    #[serde(default)]
    error: Option<String>,
}

impl From<ErrorPayloadWire> for ErrorPayload {
    fn from(wire: ErrorPayloadWire) -> ErrorPayload {
        let code = wire.code.unwrap_or(ErrorCode::Unknown);
        ErrorPayload {
            code,
            message: wire.message.or(wire.error).unwrap_or_default(),
            fatal: wire
                .fatal
                .unwrap_or(code != ErrorCode::Unknown && code.is_fatal()),
            room: wire.room,
            id: wire.id,
            retry_after_ms: wire.retry_after_ms,
        }
    }
}

/// The longest ERROR `message`, in bytes, before JSON escaping.
pub const MAX_ERROR_MESSAGE: usize = 256;

impl ErrorPayload {
    /// An error whose fatality is the code's. The message is bounded: at
    /// most [`MAX_ERROR_MESSAGE`] bytes, cut at a character boundary and
    /// marked with `…`, control characters written as escapes. Whatever a
    /// message quotes, an ERROR therefore stays far below the smallest
    /// `maxFrameSize` (SPEC.md 2).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorPayload {
        ErrorPayload {
            code,
            message: bounded(message.into()),
            fatal: code.is_fatal(),
            room: None,
            id: None,
            retry_after_ms: None,
        }
    }

    /// The same error, fatal whatever its code (RATE_LIMITED for sustained
    /// abuse).
    pub fn fatal(mut self) -> ErrorPayload {
        self.fatal = true;
        self
    }

    /// The same error, telling the client when to retry.
    pub fn retry_after(mut self, ms: u64) -> ErrorPayload {
        self.retry_after_ms = Some(ms);
        self
    }

    /// The same error, naming the request's room and `id`.
    pub fn about(mut self, room: Option<String>, id: Option<RequestId>) -> ErrorPayload {
        self.room = room;
        self.id = id;
        self
    }
}

fn bounded(message: String) -> String {
    use std::fmt::Write;
    const MORE: &str = "…";
    if message.len() <= MAX_ERROR_MESSAGE && !message.chars().any(char::is_control) {
        return message;
    }
    let mut out = String::with_capacity(MAX_ERROR_MESSAGE);
    for c in message.chars() {
        let before = out.len();
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_ERROR_MESSAGE - MORE.len() {
            out.truncate(before);
            out.push_str(MORE);
            break;
        }
    }
    out
}

/// A server → client MESSAGE payload with the JSON flag, told apart by its
/// `type` key.
#[derive(Debug, Clone)]
pub enum ServerMessage<'a> {
    Delivery(Delivery<'a>),
    Member(MemberEvent),
    /// Messages of a room that are gone (SPEC.md 3.13).
    Gap(crate::Gap),
    /// A publish acknowledged (SPEC.md 3.14).
    Ack(crate::Ack),
    /// A direct message (SPEC.md 3.16).
    Direct(crate::Direct<'a>),
    /// A `type` this crate does not know, from a newer server: ignored,
    /// as SPEC.md 3.5 asks.
    Other(String),
}

impl<'a> ServerMessage<'a> {
    /// Parses a MESSAGE payload sent by a server.
    pub fn parse(payload: &'a [u8]) -> Result<ServerMessage<'a>, serde_json::Error> {
        #[derive(Deserialize)]
        struct Probe<'b> {
            #[serde(rename = "type", borrow, default)]
            kind: Option<Cow<'b, str>>,
        }
        let probe: Probe<'_> = serde_json::from_slice(payload)?;
        match probe.kind.as_deref() {
            None => serde_json::from_slice(payload).map(ServerMessage::Delivery),
            Some("userJoined" | "userLeft") => {
                serde_json::from_slice(payload).map(ServerMessage::Member)
            }
            Some("gap") => serde_json::from_slice(payload).map(ServerMessage::Gap),
            Some("ack") => serde_json::from_slice(payload).map(ServerMessage::Ack),
            Some("direct") => serde_json::from_slice(payload).map(ServerMessage::Direct),
            Some(other) => Ok(ServerMessage::Other(other.to_owned())),
        }
    }
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// The longest room name, in bytes of UTF-8, after trimming.
pub const MAX_ROOM_LEN: usize = 64;

/// Why a room name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    Empty,
    TooLong { len: usize },
    ControlCharacter,
}

impl fmt::Display for RoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomError::Empty => f.write_str("room name is empty; use 1 to 64 bytes"),
            RoomError::TooLong { len } => write!(
                f,
                "room name is {len} bytes long; use at most {MAX_ROOM_LEN}"
            ),
            RoomError::ControlCharacter => {
                f.write_str("room name contains a control character; use printable text")
            }
        }
    }
}

impl std::error::Error for RoomError {}

/// The room a name means: the name with surrounding white space trimmed,
/// 1 to 64 bytes, without control characters (Unicode category Cc).
pub fn validate_room(name: &str) -> Result<&str, RoomError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(RoomError::Empty);
    }
    if trimmed.len() > MAX_ROOM_LEN {
        return Err(RoomError::TooLong { len: trimmed.len() });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(RoomError::ControlCharacter);
    }
    Ok(trimmed)
}

/// A BINARY payload that does not follow its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryLayoutError {
    /// The payload ends inside a length-prefixed field.
    Truncated,
    /// A name field is not UTF-8.
    NotUtf8,
    /// A name is longer than its one-byte length can say.
    NameTooLong,
}

impl fmt::Display for BinaryLayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BinaryLayoutError::Truncated => {
                "binary message is truncated; it must start with a room length byte and the room name"
            }
            BinaryLayoutError::NotUtf8 => "binary message room name is not UTF-8",
            BinaryLayoutError::NameTooLong => "a name in a binary message is longer than 255 bytes",
        })
    }
}

impl std::error::Error for BinaryLayoutError {}

pub(crate) fn take_name(bytes: &[u8]) -> Result<(&str, &[u8]), BinaryLayoutError> {
    let (&len, rest) = bytes.split_first().ok_or(BinaryLayoutError::Truncated)?;
    if rest.len() < len as usize {
        return Err(BinaryLayoutError::Truncated);
    }
    let (name, rest) = rest.split_at(len as usize);
    let name = std::str::from_utf8(name).map_err(|_| BinaryLayoutError::NotUtf8)?;
    Ok((name, rest))
}

pub(crate) fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), BinaryLayoutError> {
    let len = u8::try_from(name.len()).map_err(|_| BinaryLayoutError::NameTooLong)?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// A client's BINARY MESSAGE payload: `| room_len u8 | room | body |`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryPublish<'a> {
    pub room: &'a str,
    pub body: &'a [u8],
}

impl<'a> BinaryPublish<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<BinaryPublish<'a>, BinaryLayoutError> {
        let (room, body) = take_name(payload)?;
        Ok(BinaryPublish { room, body })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), BinaryLayoutError> {
        put_name(out, self.room)?;
        out.extend_from_slice(self.body);
        Ok(())
    }
}

/// A server's BINARY MESSAGE payload:
/// `| room_len u8 | room | from_len u8 | from | body |`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryDelivery<'a> {
    pub room: &'a str,
    /// The publisher's `connectionId`.
    pub from: &'a str,
    pub body: &'a [u8],
}

impl<'a> BinaryDelivery<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<BinaryDelivery<'a>, BinaryLayoutError> {
        let (room, rest) = take_name(payload)?;
        let (from, body) = take_name(rest)?;
        Ok(BinaryDelivery { room, from, body })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), BinaryLayoutError> {
        put_name(out, self.room)?;
        put_name(out, self.from)?;
        out.extend_from_slice(self.body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_bounded_and_printable() {
        let long = ErrorPayload::new(ErrorCode::InvalidPayload, "é".repeat(1000));
        assert!(long.message.len() <= MAX_ERROR_MESSAGE);
        assert!(long.message.ends_with('…'));
        let control = ErrorPayload::new(ErrorCode::InvalidPayload, "a\u{1b}[2J\r\nb");
        assert_eq!(control.message, "a\\u{1b}[2J\\r\\nb");
        let short = ErrorPayload::new(ErrorCode::NotInRoom, "fine");
        assert_eq!(short.message, "fine");
    }

    #[test]
    fn json_delivery_with_its_seq_is_what_serde_writes_for_a_delivery() {
        let content = RawValue::from_string(r#"{"t":"hi \"you\"","n":[1,2]}"#.to_owned()).unwrap();
        for (room, user, timestamp) in [
            ("chat", Some("ann"), 0),
            ("r\u{e9}\"q\\", None, u64::MAX),
            ("x", Some("line\nbreak"), 1_700_000_000_123),
        ] {
            let publisher = PublisherJson::new("c7", user);
            let mut ours = Vec::new();
            JsonDelivery {
                room,
                publisher: &publisher,
                content: &content,
                timestamp,
            }
            .encode(&mut ours);
            // The server writes seq and epoch in before the closing brace.
            let brace = ours.pop();
            crate::push_seq_json(&mut ours, timestamp / 7, "0f1e2d3c4b5a6978");
            ours.extend(brace);
            let theirs = serde_json::to_vec(&Delivery {
                room: room.into(),
                from: "c7".into(),
                user: user.map(Into::into),
                content: &content,
                timestamp,
                seq: Some(timestamp / 7),
                epoch: Some("0f1e2d3c4b5a6978".into()),
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
    }

    #[test]
    fn publish_tells_null_content_from_missing_content() {
        let with_null: Publish<'_> =
            serde_json::from_str(r#"{"room":"a","content":null}"#).unwrap();
        assert_eq!(with_null.content.map(RawValue::get), Some("null"));
        let missing: Publish<'_> = serde_json::from_str(r#"{"room":"a"}"#).unwrap();
        assert!(missing.content.is_none());
    }

    #[test]
    fn rooms_are_trimmed_and_checked() {
        assert_eq!(validate_room("  physics \t"), Ok("physics"));
        assert_eq!(validate_room("   "), Err(RoomError::Empty));
        assert_eq!(validate_room(&"x".repeat(64)), Ok(&*"x".repeat(64)));
        assert_eq!(
            validate_room(&"x".repeat(65)),
            Err(RoomError::TooLong { len: 65 })
        );
        assert_eq!(validate_room("a\u{7f}b"), Err(RoomError::ControlCharacter));
        assert_eq!(validate_room("a\u{85}b"), Err(RoomError::ControlCharacter));
        assert_eq!(validate_room("Café ☕"), Ok("Café ☕"));
    }

    #[test]
    fn server_messages_are_told_apart_by_type() {
        let delivery = br#"{"room":"a","from":"c1","content":{"x":1},"timestamp":5}"#;
        match ServerMessage::parse(delivery).unwrap() {
            ServerMessage::Delivery(d) => assert_eq!(d.content.get(), r#"{"x":1}"#),
            other => panic!("expected a delivery, got {other:?}"),
        }
        let event = br#"{"type":"userLeft","room":"a","connectionId":"c2","timestamp":5}"#;
        match ServerMessage::parse(event).unwrap() {
            ServerMessage::Member(e) => assert_eq!(e.change, MemberChange::Left),
            other => panic!("expected a member event, got {other:?}"),
        }
    }

    #[test]
    fn binary_layouts_round_trip() {
        let mut out = Vec::new();
        BinaryDelivery {
            room: "r",
            from: "c9",
            body: &[0, 255, 10],
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(out, [1, b'r', 2, b'c', b'9', 0, 255, 10]);
        let parsed = BinaryDelivery::parse(&out).unwrap();
        assert_eq!(parsed.body, &[0, 255, 10]);
        assert_eq!(
            BinaryPublish::parse(&[5, b'a']),
            Err(BinaryLayoutError::Truncated)
        );
        assert_eq!(BinaryPublish::parse(&[]), Err(BinaryLayoutError::Truncated));
    }
}
