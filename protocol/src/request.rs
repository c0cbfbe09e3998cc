//! What a client asks of a server: one [`Request`] per frame, with every
//! payload rule of SPEC.md applied, so servers share one reading of it.
//!
//! The checks run in a fixed order, and the first one that fails decides
//! the error (SPEC.md 3.0):
//!
//! 1. flags: the JSON flag where a JSON payload is required;
//! 2. UTF-8, then JSON syntax (`PARSE_ERROR`, fatal);
//! 3. shape: an object, no key twice at its top level, `id` valid;
//! 4. the message's keys in the order of its table: `room` first;
//! 5. what the server knows (membership, limits), in the session.
//!
//! Payloads are read without allocating on the hot path: the top-level
//! object is walked once, the keys the message knows land in fixed slots,
//! and only unknown keys (rare) are remembered in a list, to find a key
//! given twice.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error_code::ErrorCode;
use crate::frame::{Flags, Frame, MessageType};
use crate::payload::{
    BinaryPublish, Hello, MAX_REQUEST_ID_LEN, MAX_TOKEN_LEN, RequestId, RoomError, Token,
    validate_room,
};
use crate::presence::Recipient;
use crate::sequence::{Recovery, Since, valid_epoch};

/// What a MESSAGE carries.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// Any JSON value, as its exact text.
    Json(&'a RawValue),
    /// Raw bytes, relayed byte-exact.
    Binary(&'a [u8]),
}

/// A client's frame, understood.
#[derive(Debug, Clone)]
pub enum Request<'a> {
    Hello(Hello),
    /// Join the room (name already trimmed and validated).
    Join {
        room: Cow<'a, str>,
        id: Option<RequestId>,
        /// What to replay before the live messages (SPEC.md 3.3).
        recovery: Option<Recovery>,
    },
    /// Leave the room (name already trimmed and validated).
    Leave {
        room: Cow<'a, str>,
        id: Option<RequestId>,
    },
    Publish {
        room: Cow<'a, str>,
        content: Content<'a>,
        id: Option<RequestId>,
        /// `"ack": true` (only with an `id`): answer with the `seq` given.
        ack: bool,
    },
    /// A MESSAGE to a user or a connection, not a room (SPEC.md 3.16).
    Direct {
        to: Recipient<'a>,
        content: &'a RawValue,
        id: Option<RequestId>,
    },
    /// Answer with the same flags and payload.
    Heartbeat {
        flags: Flags,
        payload: &'a [u8],
    },
    /// An ERROR frame from a client: nothing to answer.
    ClientError,
    /// Who is in the room (name already trimmed and validated).
    Who {
        room: Cow<'a, str>,
        id: Option<RequestId>,
    },
}

impl Request<'_> {
    /// The request's `id`, to be echoed in what it causes.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Request::Hello(hello) => hello.id.as_ref(),
            Request::Join { id, .. }
            | Request::Leave { id, .. }
            | Request::Publish { id, .. }
            | Request::Direct { id, .. }
            | Request::Who { id, .. } => id.as_ref(),
            Request::Heartbeat { .. } | Request::ClientError => None,
        }
    }
}

/// Why a frame is refused; carries the code to answer with, and what the
/// ERROR echoes of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    /// The request's `id`, when it had a valid one.
    pub id: Option<RequestId>,
    /// The room the request named, when it named a valid one.
    pub room: Option<String>,
}

impl RequestError {
    fn new(code: ErrorCode, message: impl Into<String>) -> RequestError {
        RequestError {
            code,
            message: message.into(),
            id: None,
            room: None,
        }
    }

    fn invalid(message: impl Into<String>) -> RequestError {
        RequestError::new(ErrorCode::InvalidPayload, message)
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RequestError {}

/// The longest `userId` a HELLO may give, in bytes of UTF-8 after unescaping.
pub const MAX_USER_ID_LEN: usize = 128;

/// How many bytes of a client's own text an ERROR message quotes.
pub const QUOTE_LEN: usize = 64;

/// A client's text, quoted for an error message: at most [`QUOTE_LEN`]
/// bytes of it, cut at a character boundary and marked with `…`, with
/// control characters escaped. However long the input, the quote is short.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut end = self.0.len().min(QUOTE_LEN);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        f.write_str("\"")?;
        for c in self.0[..end].chars() {
            write!(f, "{}", c.escape_debug())?;
        }
        if end < self.0.len() {
            f.write_str("…")?;
        }
        f.write_str("\"")
    }
}

/// Checks that a JSON-flagged payload is UTF-8 (RFC 8259 JSON text is):
/// checked before the JSON, so a value the server would otherwise skip
/// cannot carry bytes that are not text.
fn utf8_text(kind: MessageType, payload: &[u8]) -> Result<&str, RequestError> {
    std::str::from_utf8(payload).map_err(|error| {
        RequestError::new(
            ErrorCode::ParseError,
            format!(
                "{kind} payload is not UTF-8 (invalid byte at offset {}); JSON text must be UTF-8",
                error.valid_up_to()
            ),
        )
    })
}

/// Checks that a JSON-flagged payload is one JSON text in UTF-8; returns it
/// as text.
fn json_text(kind: MessageType, payload: &[u8]) -> Result<&str, RequestError> {
    let text = utf8_text(kind, payload)?;
    serde_json::from_str::<IgnoredAny>(text).map_err(|error| {
        RequestError::new(
            ErrorCode::ParseError,
            format!("{kind} payload is not valid JSON: {error}"),
        )
    })?;
    Ok(text)
}

/// A JSON string, borrowed from the payload unless it has escapes. (serde's
/// own `Cow<str>` always allocates.)
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<CowStr<'de>, D::Error> {
        struct Strings;
        impl<'de> Visitor<'de> for Strings {
            type Value = CowStr<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(s.to_owned())))
            }

            fn visit_string<E>(self, s: String) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(Strings)
    }
}

/// Reads a JSON string value from its raw text.
fn decode_str(raw: &RawValue) -> Result<Cow<'_, str>, serde_json::Error> {
    let text = raw.get();
    // The usual room name has no escapes: the text between the quotes is
    // the string itself (the raw value is already checked JSON, so it has
    // no raw control characters either).
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<CowStr<'_>>(text).map(|s| s.0)
}

/// The top-level keys of an object payload that a message knows, each with
/// its raw value.
struct Object<'a, const N: usize> {
    names: [&'static str; N],
    values: [Option<&'a RawValue>; N],
}

/// Why an object payload was refused before its keys were read.
enum ObjectError {
    NotAnObject,
    Twice(String),
    BadKey,
}

struct ObjectSeed<'s, 'a, const N: usize> {
    object: &'s mut Object<'a, N>,
    /// Keys the message does not know, kept only to find duplicates.
    unknown: &'s mut Vec<Cow<'a, str>>,
    twice: &'s mut Option<String>,
}

impl<'de, const N: usize> DeserializeSeed<'de> for ObjectSeed<'_, 'de, N> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for ObjectSeed<'_, 'de, N> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            if self.twice.is_some() {
                continue;
            }
            match self.object.names.iter().position(|name| *name == key) {
                Some(slot) if self.object.values[slot].is_some() => {
                    *self.twice = Some(key.into_owned());
                }
                Some(slot) => self.object.values[slot] = Some(value),
                None if self.unknown.contains(&key) => *self.twice = Some(key.into_owned()),
                None => self.unknown.push(key),
            }
        }
        Ok(())
    }
}

impl<'a, const N: usize> Object<'a, N> {
    /// Reads `text` as an object with these known keys. `Err(None)`: the
    /// text is not one JSON text at all.
    fn read(text: &'a str, names: [&'static str; N]) -> Result<Object<'a, N>, Option<ObjectError>> {
        let mut object = Object {
            names,
            values: [None; N],
        };
        let mut unknown = Vec::new();
        let mut twice = None;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let seed = ObjectSeed {
            object: &mut object,
            unknown: &mut unknown,
            twice: &mut twice,
        };
        let read = seed
            .deserialize(&mut deserializer)
            .and_then(|()| deserializer.end());
        if let Err(error) = read {
            // Only walking the whole text tells bad JSON from good JSON of
            // the wrong shape (the walk stops at the first problem); this
            // runs on the error path alone.
            if serde_json::from_str::<IgnoredAny>(text).is_err() {
                return Err(None);
            }
            return Err(Some(if error.is_data() {
                ObjectError::NotAnObject
            } else {
                ObjectError::BadKey
            }));
        }
        match twice {
            Some(key) => Err(Some(ObjectError::Twice(key))),
            None => Ok(object),
        }
    }

    /// The raw value of known key `name`; `null` counts as absent.
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        let slot = self.names.iter().position(|n| *n == name)?;
        self.values[slot].filter(|raw| raw.get() != "null")
    }

    /// The raw value of known key `name`, `null` included.
    fn get_raw(&self, name: &str) -> Option<&'a RawValue> {
        let slot = self.names.iter().position(|n| *n == name)?;
        self.values[slot]
    }
}

/// Reads a JSON object payload with keys `names`; the request's `id`, when
/// valid, rides along on later errors.
fn object<'a, const N: usize>(
    frame: &Frame<'a>,
    names: [&'static str; N],
) -> Result<(Object<'a, N>, Option<RequestId>), RequestError> {
    let kind = frame.kind;
    let text = if frame.flags.is_json() {
        utf8_text(kind, frame.payload)?
    } else if frame.flags.is_binary() {
        return Err(RequestError::invalid(format!(
            "{kind} takes a JSON payload, not BINARY"
        )));
    } else if frame.payload.is_empty() && kind == MessageType::Hello {
        "{}"
    } else {
        return Err(RequestError::invalid(format!(
            "{kind} needs a JSON payload with the JSON flag (0x01) set"
        )));
    };
    let object = Object::read(text, names).map_err(|error| {
        let Some(error) = error else {
            return match json_text(kind, text.as_bytes()) {
                Err(error) => error,
                Ok(_) => RequestError::invalid(format!("{kind} payload could not be read")),
            };
        };
        RequestError::invalid(match error {
            ObjectError::NotAnObject => format!("{kind} payload must be a JSON object"),
            ObjectError::Twice(key) => format!(
                "{kind} payload has the key {} twice; give each key once",
                Quoted(&key)
            ),
            ObjectError::BadKey => {
                format!(
                    "{kind} payload has a key that is not valid Unicode (a lone surrogate escape)"
                )
            }
        })
    })?;
    let id = match object.get("id") {
        None => None,
        Some(raw) => Some(request_id(raw)?),
    };
    Ok((object, id))
}

fn request_id(raw: &RawValue) -> Result<RequestId, RequestError> {
    let refuse = || {
        RequestError::invalid(format!(
            "\"id\" must be an integer or a string of 1 to {MAX_REQUEST_ID_LEN} bytes without control characters"
        ))
    };
    let id: RequestId = serde_json::from_str(raw.get()).map_err(|_| refuse())?;
    if let RequestId::Text(text) = &id
        && (text.is_empty()
            || text.len() > MAX_REQUEST_ID_LEN
            || text.chars().any(char::is_control))
    {
        return Err(refuse());
    }
    Ok(id)
}

/// Reads the string of key `name`: wrong type is `INVALID_PAYLOAD`.
fn string<'a>(
    kind: MessageType,
    name: &str,
    raw: &'a RawValue,
) -> Result<Cow<'a, str>, RequestError> {
    let text = raw.get();
    decode_str(raw).map_err(|_| {
        if text.starts_with('"') {
            RequestError::invalid(format!(
                "{kind} \"{name}\" is not valid Unicode (a lone surrogate escape)"
            ))
        } else {
            RequestError::invalid(format!("{kind} \"{name}\" must be a string"))
        }
    })
}

/// Reads, trims and checks the room of key `room`.
fn room<'a, const N: usize>(
    kind: MessageType,
    object: &Object<'a, N>,
) -> Result<Cow<'a, str>, RequestError> {
    let Some(raw) = object.get_raw("room") else {
        return Err(RequestError::invalid(format!(
            "{kind} payload has no \"room\" key; send {{\"room\": \"name\", ...}}"
        )));
    };
    if !raw.get().starts_with('"') {
        return Err(RequestError::invalid(format!(
            "{kind} \"room\" must be a string"
        )));
    }
    let name = decode_str(raw).map_err(|_| {
        RequestError::new(
            ErrorCode::InvalidRoom,
            format!("{kind}: room name is not valid Unicode (a lone surrogate escape)"),
        )
    })?;
    checked_room(kind, name)
}

fn checked_room(kind: MessageType, name: Cow<'_, str>) -> Result<Cow<'_, str>, RequestError> {
    validate_room(&name).map_err(|error| {
        let shown = match error {
            RoomError::Empty => String::new(),
            _ => format!(" {}", Quoted(name.trim())),
        };
        RequestError::new(ErrorCode::InvalidRoom, format!("{kind}{shown}: {error}"))
    })?;
    Ok(match name {
        Cow::Borrowed(name) => Cow::Borrowed(name.trim()),
        Cow::Owned(name) => Cow::Owned(name.trim().to_owned()),
    })
}

fn hello(frame: &Frame<'_>) -> Result<Hello, RequestError> {
    let kind = frame.kind;
    let (object, id) = object(
        frame,
        [
            "userId",
            "clientVersion",
            "echo",
            "id",
            "token",
            "binarySeq",
            "memberEvents",
        ],
    )?;
    let with_id = |error: RequestError| RequestError {
        id: id.clone(),
        ..error
    };
    let user_id = match object.get("userId") {
        None => None,
        Some(raw) => {
            let user = string(kind, "userId", raw).map_err(with_id)?;
            if user.len() > MAX_USER_ID_LEN {
                return Err(with_id(RequestError::invalid(format!(
                    "HELLO userId is {} bytes; use at most {MAX_USER_ID_LEN}",
                    user.len()
                ))));
            }
            if user.chars().any(char::is_control) {
                return Err(with_id(RequestError::invalid(
                    "HELLO userId contains a control character; use printable text",
                )));
            }
            Some(user.into_owned())
        }
    };
    let client_version = match object.get("clientVersion") {
        None => None,
        Some(raw) => Some(
            string(kind, "clientVersion", raw)
                .map_err(with_id)?
                .into_owned(),
        ),
    };
    let echo = match object.get("echo") {
        None => false,
        Some(raw) => serde_json::from_str::<bool>(raw.get()).map_err(|_| {
            with_id(RequestError::invalid(
                "HELLO \"echo\" must be true or false",
            ))
        })?,
    };
    let flag = |name: &str| -> Result<Option<bool>, RequestError> {
        match object.get(name) {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<bool>(raw.get())
                .map(Some)
                .map_err(|_| {
                    with_id(RequestError::invalid(format!(
                        "HELLO \"{name}\" must be true or false"
                    )))
                }),
        }
    };
    let binary_seq = flag("binarySeq")?.unwrap_or(false);
    let member_events = flag("memberEvents")?;
    let token = match object.get("token") {
        None => None,
        Some(raw) => {
            let token = string(kind, "token", raw).map_err(with_id)?;
            if token.len() > MAX_TOKEN_LEN {
                return Err(with_id(RequestError::invalid(format!(
                    "HELLO token is {} bytes; use at most {MAX_TOKEN_LEN}",
                    token.len()
                ))));
            }
            Some(Token(token.into_owned()))
        }
    };
    Ok(Hello {
        user_id,
        client_version,
        echo,
        id,
        token,
        binary_seq,
        member_events,
    })
}

/// JOIN_ROOM and LEAVE_ROOM: the room, and the id.
fn room_request<'a>(frame: &Frame<'a>) -> Result<(Cow<'a, str>, Option<RequestId>), RequestError> {
    let (object, id) = object(frame, ["room", "id"])?;
    let room = room(frame.kind, &object).map_err(|error| RequestError {
        id: id.clone(),
        ..error
    })?;
    Ok((room, id))
}

/// JOIN_ROOM: the room, the id, and what to recover.
fn join<'a>(frame: &Frame<'a>) -> Result<Request<'a>, RequestError> {
    let (object, id) = object(frame, ["room", "id", "history", "since"])?;
    let about = |error: RequestError| RequestError {
        id: id.clone(),
        ..error
    };
    let room = room(frame.kind, &object).map_err(about)?;
    let about = |error: RequestError| RequestError {
        id: id.clone(),
        room: Some(room.to_string()),
        ..error
    };
    let recovery = match (object.get("history"), object.get("since")) {
        (Some(_), Some(_)) => {
            return Err(about(RequestError::invalid(
                "JOIN_ROOM has both \"history\" and \"since\"; give one",
            )));
        }
        (Some(raw), None) => Some(Recovery::Last(
            serde_json::from_str::<u64>(raw.get()).map_err(|_| {
                about(RequestError::invalid(
                    "JOIN_ROOM \"history\" must be a non-negative integer: how many past messages to get",
                ))
            })?,
        )),
        (None, Some(raw)) => {
            let since: Since = serde_json::from_str(raw.get())
                .ok()
                .filter(|since: &Since| valid_epoch(&since.epoch))
                .ok_or_else(|| {
                    about(RequestError::invalid(
                        "JOIN_ROOM \"since\" must be {\"epoch\": the epoch string you were given, \"seq\": the last seq you have}",
                    ))
                })?;
            Some(Recovery::Since(since))
        }
        (None, None) => None,
    };
    Ok(Request::Join { room, id, recovery })
}

/// A MESSAGE with `toUser` or `toConnection`: a direct message.
fn direct<'a, const N: usize>(
    object: &Object<'a, N>,
    id: Option<RequestId>,
    recipient: (Option<&'a RawValue>, Option<&'a RawValue>),
) -> Result<Request<'a>, RequestError> {
    let with_id = |error: RequestError| RequestError {
        id: id.clone(),
        ..error
    };
    let kind = MessageType::Message;
    let to = match recipient {
        (Some(_), Some(_)) | (None, None) => {
            return Err(with_id(RequestError::invalid(
                "MESSAGE has both \"toUser\" and \"toConnection\"; give one",
            )));
        }
        (Some(raw), None) => Recipient::User(string(kind, "toUser", raw).map_err(with_id)?),
        (None, Some(raw)) => {
            Recipient::Connection(string(kind, "toConnection", raw).map_err(with_id)?)
        }
    };
    if object.get_raw("room").is_some() {
        return Err(with_id(RequestError::invalid(
            "MESSAGE has a \"room\" and a recipient; a message goes to a room or to a user or connection, not both",
        )));
    }
    let Some(content) = object.get_raw("content") else {
        return Err(with_id(RequestError::invalid(
            "MESSAGE payload has no \"content\" key; send {\"toUser\": ..., \"content\": ...}",
        )));
    };
    Ok(Request::Direct { to, content, id })
}

fn publish<'a>(frame: &Frame<'a>) -> Result<Request<'a>, RequestError> {
    let (object, id) = object(
        frame,
        ["room", "content", "id", "ack", "toUser", "toConnection"],
    )?;
    match (object.get("toUser"), object.get("toConnection")) {
        (None, None) => {}
        recipient => return direct(&object, id, recipient),
    }
    let room = room(frame.kind, &object).map_err(|error| RequestError {
        id: id.clone(),
        ..error
    })?;
    let Some(content) = object.get_raw("content") else {
        return Err(RequestError {
            id,
            room: Some(room.into_owned()),
            ..RequestError::invalid(
                "MESSAGE payload has no \"content\" key; send {\"room\": ..., \"content\": ...}",
            )
        });
    };
    let ack = match object.get("ack") {
        None => false,
        Some(raw) => match serde_json::from_str::<bool>(raw.get()) {
            Ok(ack) => ack,
            Err(_) => {
                return Err(RequestError {
                    id,
                    room: Some(room.into_owned()),
                    ..RequestError::invalid("MESSAGE \"ack\" must be true or false")
                });
            }
        },
    };
    if ack && id.is_none() {
        return Err(RequestError {
            room: Some(room.into_owned()),
            ..RequestError::invalid(
                "MESSAGE asks for an \"ack\" but has no \"id\"; give it an id to match the ack to",
            )
        });
    }
    Ok(Request::Publish {
        room,
        content: Content::Json(content),
        id,
        ack,
    })
}

impl<'a> Request<'a> {
    /// Reads a client's frame. Errors carry the code to answer with:
    /// `PARSE_ERROR` (fatal) for a JSON-flagged payload that is not one JSON
    /// text in UTF-8, and `INVALID_PAYLOAD`, `INVALID_ROOM` (non-fatal) for
    /// the rest.
    pub fn parse(frame: &Frame<'a>) -> Result<Request<'a>, RequestError> {
        match frame.kind {
            MessageType::Hello => hello(frame).map(Request::Hello),
            MessageType::JoinRoom => join(frame),
            MessageType::LeaveRoom => {
                let (room, id) = room_request(frame)?;
                Ok(Request::Leave { room, id })
            }
            MessageType::Who => {
                let (room, id) = room_request(frame)?;
                Ok(Request::Who { room, id })
            }
            MessageType::Message if frame.flags.is_binary() => {
                let publish = BinaryPublish::parse(frame.payload)
                    .map_err(|error| RequestError::invalid(error.to_string()))?;
                Ok(Request::Publish {
                    room: checked_room(frame.kind, Cow::Borrowed(publish.room))?,
                    content: Content::Binary(publish.body),
                    id: None,
                    ack: false,
                })
            }
            MessageType::Message => publish(frame),
            MessageType::Heartbeat => {
                if frame.flags.is_json() {
                    json_text(frame.kind, frame.payload)?;
                }
                Ok(Request::Heartbeat {
                    flags: frame.flags,
                    payload: frame.payload,
                })
            }
            MessageType::Error => {
                if frame.flags.is_json() {
                    json_text(frame.kind, frame.payload)?;
                }
                Ok(Request::ClientError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(kind: MessageType, payload: &str) -> Result<Request<'_>, RequestError> {
        Request::parse(&Frame::json(kind, payload.as_bytes()))
    }

    fn code(result: Result<Request<'_>, RequestError>) -> ErrorCode {
        result.expect_err("the request should be refused").code
    }

    #[test]
    fn hello_accepts_an_empty_payload_without_flags() {
        let request = Request::parse(&Frame::new(MessageType::Hello, Flags::NONE, b"")).unwrap();
        assert!(matches!(request, Request::Hello(hello) if hello == Hello::default()));
    }

    #[test]
    fn bad_json_is_a_parse_error_and_bad_shape_an_invalid_payload() {
        assert_eq!(
            code(parse_json(MessageType::Hello, "{not json")),
            ErrorCode::ParseError
        );
        assert_eq!(
            code(parse_json(MessageType::JoinRoom, "[1]")),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(parse_json(MessageType::JoinRoom, "{}")),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(parse_json(MessageType::JoinRoom, r#"{"room":5}"#)),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(parse_json(MessageType::Heartbeat, "{")),
            ErrorCode::ParseError
        );
        assert_eq!(
            code(parse_json(MessageType::Message, r#"{"room":"a"} x"#)),
            ErrorCode::ParseError
        );
        // A shape error met first must not hide broken JSON further on.
        for broken in [
            r#"{"room":5 garbage"#,
            r#"{"room":"a","room":"b""#,
            r#"{"room":[1,"#,
        ] {
            assert_eq!(
                code(parse_json(MessageType::JoinRoom, broken)),
                ErrorCode::ParseError,
                "{broken}"
            );
        }
        assert_eq!(
            code(parse_json(MessageType::Hello, r#"{"userId":5,"#)),
            ErrorCode::ParseError
        );
        assert_eq!(
            code(parse_json(
                MessageType::JoinRoom,
                r#"{"room":"a","room":"b"}"#
            )),
            ErrorCode::InvalidPayload
        );
    }

    #[test]
    fn arrays_are_not_objects() {
        // serde would read these as the struct's fields in order.
        for (kind, payload) in [
            (MessageType::Hello, r#"["alice","v1",true]"#),
            (MessageType::Hello, "[]"),
            (MessageType::JoinRoom, r#"["test"]"#),
            (MessageType::LeaveRoom, r#" ["test"] "#),
            (MessageType::Message, r#"["test",{"a":1}]"#),
            (MessageType::Message, "\"text\""),
            (MessageType::Message, "null"),
        ] {
            assert_eq!(
                code(parse_json(kind, payload)),
                ErrorCode::InvalidPayload,
                "{kind} {payload}"
            );
        }
        for (kind, payload) in [
            (MessageType::JoinRoom, r#"["test""#),
            (MessageType::Hello, ""),
            (MessageType::Hello, " "),
        ] {
            assert_eq!(
                code(parse_json(kind, payload)),
                ErrorCode::ParseError,
                "{kind} {payload:?}"
            );
        }
        match parse_json(MessageType::JoinRoom, " \r\n\t{\"room\":\"test\"}").unwrap() {
            Request::Join { room, .. } => assert_eq!(room, "test"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn message_content_may_be_any_json_value_but_must_be_present() {
        for content in ["null", "0", "\"\"", "[]", "{\"a\":[1,2]}"] {
            let payload = format!(r#"{{"room":"r","content":{content}}}"#);
            match parse_json(MessageType::Message, &payload).unwrap() {
                Request::Publish {
                    content: Content::Json(raw),
                    ..
                } => assert_eq!(raw.get(), content),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            code(parse_json(MessageType::Message, r#"{"room":"r"}"#)),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(parse_json(MessageType::Message, r#"{"content":1}"#)),
            ErrorCode::InvalidPayload
        );
    }

    #[test]
    fn rooms_are_trimmed_and_validated() {
        match parse_json(MessageType::JoinRoom, r#"{"room":"  lobby "}"#).unwrap() {
            Request::Join { room, .. } => assert_eq!(room, "lobby"),
            other => panic!("unexpected {other:?}"),
        }
        match parse_json(MessageType::JoinRoom, r#"{"room":" caf\u00e9 "}"#).unwrap() {
            Request::Join { room, .. } => assert_eq!(room, "café"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            code(parse_json(MessageType::JoinRoom, r#"{"room":"  "}"#)),
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            code(parse_json(MessageType::LeaveRoom, r#"{"room":"a\u0001"}"#)),
            ErrorCode::InvalidRoom
        );
    }

    #[test]
    fn binary_messages_carry_room_and_body() {
        let frame = Frame::new(
            MessageType::Message,
            Flags::BINARY,
            &[2, b'h', b'i', 0, 1, 2],
        );
        match Request::parse(&frame).unwrap() {
            Request::Publish {
                room,
                content: Content::Binary(body),
                ..
            } => {
                assert_eq!(room, "hi");
                assert_eq!(body, &[0, 1, 2]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let truncated = Frame::new(MessageType::Message, Flags::BINARY, &[9, b'h']);
        assert_eq!(code(Request::parse(&truncated)), ErrorCode::InvalidPayload);
    }

    #[test]
    fn long_user_ids_are_refused() {
        let payload = format!(r#"{{"userId":"{}"}}"#, "u".repeat(MAX_USER_ID_LEN + 1));
        assert_eq!(
            code(parse_json(MessageType::Hello, &payload)),
            ErrorCode::InvalidPayload
        );
    }

    fn refused(kind: MessageType, payload: &str) -> RequestError {
        parse_json(kind, payload).expect_err("the request should be refused")
    }

    fn published(payload: &str) -> String {
        match parse_json(MessageType::Message, payload).unwrap() {
            Request::Publish {
                content: Content::Json(raw),
                ..
            } => raw.get().to_owned(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_key_twice_at_the_top_level_is_refused_known_or_not() {
        for payload in [
            r#"{"room":"a","room":"a"}"#,
            r#"{"room":"a","x":1,"x":2}"#,
            r#"{"room":"a","id":1,"id":1}"#,
            r#"{"room":"a","r\u006fom":"a"}"#,
        ] {
            let error = refused(MessageType::JoinRoom, payload);
            assert_eq!(error.code, ErrorCode::InvalidPayload, "{payload}");
            assert!(error.message.contains("twice"), "{}", error.message);
        }
        // Inside content the publisher's JSON is relayed as written.
        assert_eq!(
            published(r#"{"room":"a","content":{"k":1,"k":2}}"#),
            r#"{"k":1,"k":2}"#
        );
    }

    #[test]
    fn invalid_utf8_is_a_parse_error_wherever_it_is() {
        for payload in [
            &b"{\"room\":\"a\",\"x\":\"\xff\xfe\"}"[..],
            &b"[\"\xff\"]"[..],
            &b"{\"room\":\"a\",\"content\":\"\xc3\"}"[..],
        ] {
            let error = Request::parse(&Frame::json(MessageType::Message, payload)).unwrap_err();
            assert_eq!(error.code, ErrorCode::ParseError, "{payload:?}");
        }
    }

    #[test]
    fn numbers_out_of_range_are_valid_json_of_the_wrong_value() {
        assert_eq!(
            refused(MessageType::JoinRoom, r#"{"room":1e400}"#).code,
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            refused(MessageType::Hello, r#"{"echo":-1e400}"#).code,
            ErrorCode::InvalidPayload
        );
        assert_eq!(published(r#"{"room":"a","content":1e400}"#), "1e400");
        assert!(
            parse_json(MessageType::Heartbeat, "[1e400, -1e400]").is_ok(),
            "a heartbeat with big numbers is valid JSON"
        );
    }

    #[test]
    fn lone_surrogates_are_relayed_in_content_and_refused_where_decoded() {
        assert_eq!(
            published(r#"{"room":"a","content":"\ud800"}"#),
            r#""\ud800""#
        );
        assert_eq!(
            refused(MessageType::JoinRoom, r#"{"room":"\ud800"}"#).code,
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            refused(MessageType::Hello, r#"{"userId":"x\udc00"}"#).code,
            ErrorCode::InvalidPayload
        );
        // A valid pair is one character.
        match parse_json(MessageType::JoinRoom, r#"{"room":"\ud83d\ude00"}"#).unwrap() {
            Request::Join { room, .. } => assert_eq!(room, "😀"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn user_ids_follow_the_room_rule_for_control_characters() {
        let error = refused(MessageType::Hello, r#"{"userId":"\u001b[2J\r\nadmin: "}"#);
        assert_eq!(error.code, ErrorCode::InvalidPayload);
        assert!(error.message.contains("control character"));
        // The limit counts bytes after unescaping: 128 × "é" escaped is 256 bytes.
        let payload = format!(r#"{{"userId":"{}"}}"#, "\\u00e9".repeat(64));
        match parse_json(MessageType::Hello, &payload).unwrap() {
            Request::Hello(hello) => assert_eq!(hello.user_id.map(|u| u.len()), Some(128)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn null_means_absent_for_every_optional_key() {
        match parse_json(
            MessageType::Hello,
            r#"{"userId":null,"clientVersion":null,"echo":null,"id":null}"#,
        )
        .unwrap()
        {
            Request::Hello(hello) => assert_eq!(hello, Hello::default()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ids_are_read_and_ride_on_the_errors_they_cause() {
        match parse_json(MessageType::JoinRoom, r#"{"room":"a","id":7}"#).unwrap() {
            Request::Join { id, .. } => assert_eq!(id, Some(RequestId::Number(7))),
            other => panic!("unexpected {other:?}"),
        }
        let error = refused(MessageType::Message, r#"{"id":"m-1","room":"a"}"#);
        assert_eq!(error.id, Some(RequestId::Text("m-1".into())));
        assert_eq!(error.room.as_deref(), Some("a"));
        let error = refused(MessageType::JoinRoom, r#"{"room":"  ","id":-3}"#);
        assert_eq!(
            (error.code, error.id),
            (ErrorCode::InvalidRoom, Some(RequestId::Number(-3)))
        );
        for bad in [
            "1.5",
            "true",
            "{}",
            "\"\"",
            "18446744073709551615",
            "\"a\\u0007\"",
        ] {
            let payload = format!(r#"{{"room":"a","id":{bad}}}"#);
            let error = refused(MessageType::JoinRoom, &payload);
            assert_eq!(
                (error.code, error.id),
                (ErrorCode::InvalidPayload, None),
                "{bad}"
            );
        }
        let long = format!(
            r#"{{"room":"a","id":"{}"}}"#,
            "i".repeat(MAX_REQUEST_ID_LEN + 1)
        );
        assert_eq!(
            refused(MessageType::JoinRoom, &long).code,
            ErrorCode::InvalidPayload
        );
    }

    #[test]
    fn the_room_is_checked_before_the_content() {
        assert_eq!(
            refused(MessageType::Message, r#"{"room":"   "}"#).code,
            ErrorCode::InvalidRoom
        );
    }

    #[test]
    fn errors_quote_a_short_prefix_of_what_the_client_sent() {
        let long = "r".repeat(10_000);
        let error = refused(MessageType::JoinRoom, &format!(r#"{{"room":"{long}"}}"#));
        assert_eq!(error.code, ErrorCode::InvalidRoom);
        assert!(error.message.len() < 200, "{}", error.message.len());
        assert!(error.message.contains('…'));
        let error = refused(MessageType::Hello, &format!(r#"{{"echo":"{long}"}}"#));
        assert!(error.message.len() < 200, "{}", error.message);
        assert_eq!(Quoted("a\u{7}b").to_string(), r#""a\u{7}b""#);
        assert_eq!(Quoted(&"é".repeat(40)).to_string().len(), 2 + 64 + 3);
    }
}
