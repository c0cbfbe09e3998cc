//! What a client asks of a server: one [`Request`] per frame, with every
//! payload rule of SPEC.md applied, so servers share one reading of it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::error_code::ErrorCode;
use crate::frame::{Flags, Frame, MessageType};
use crate::payload::{BinaryPublish, Hello, Publish, RoomRequest, validate_room};

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
    Join(Cow<'a, str>),
    /// Leave the room (name already trimmed and validated).
    Leave(Cow<'a, str>),
    Publish {
        room: Cow<'a, str>,
        content: Content<'a>,
    },
    /// Answer with the same flags and payload.
    Heartbeat {
        flags: Flags,
        payload: &'a [u8],
    },
    /// An ERROR frame from a client: nothing to answer.
    ClientError,
}

/// Why a frame is refused; carries the code to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    fn new(code: ErrorCode, message: impl Into<String>) -> RequestError {
        RequestError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RequestError {}

/// The longest `userId` a HELLO may give, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;

/// Reads a JSON payload into `T`, telling bad JSON (`PARSE_ERROR`) from good
/// JSON of the wrong shape (`INVALID_PAYLOAD`).
///
/// serde stops at the first problem it meets, so a shape error early in the
/// text (`{"room":5 garbage`) can hide a syntax error later on; a payload
/// that is not valid JSON as a whole is always `PARSE_ERROR`.
fn from_json<'a, T: Deserialize<'a>>(
    kind: MessageType,
    payload: &'a [u8],
) -> Result<T, RequestError> {
    serde_json::from_slice(payload).map_err(|error| {
        let syntax_error = if error.is_data() {
            serde_json::from_slice::<serde::de::IgnoredAny>(payload).err()
        } else {
            None
        };
        if error.is_data() && syntax_error.is_none() {
            RequestError::new(
                ErrorCode::InvalidPayload,
                format!("{kind} payload is not what it should be: {error}"),
            )
        } else {
            let error = syntax_error.unwrap_or(error);
            RequestError::new(
                ErrorCode::ParseError,
                format!("{kind} payload is not valid JSON: {error}"),
            )
        }
    })
}

fn room(kind: MessageType, name: Cow<'_, str>) -> Result<Cow<'_, str>, RequestError> {
    let trimmed = validate_room(&name)
        .map_err(|error| RequestError::new(ErrorCode::InvalidRoom, format!("{kind}: {error}")))?;
    Ok(match name {
        Cow::Borrowed(name) => Cow::Borrowed(name.trim()),
        Cow::Owned(_) => Cow::Owned(trimmed.to_owned()),
    })
}

/// Reads a JSON payload that must be an object into `T`.
///
/// serde's derived structs also accept a JSON array of the fields in order
/// (`["test"]` as `{"room":"test"}`); the protocol does not, so anything but an
/// object is refused here: `PARSE_ERROR` if it is not JSON at all, else
/// `INVALID_PAYLOAD`.
fn from_json_object<'a, T: Deserialize<'a>>(
    kind: MessageType,
    payload: &'a [u8],
) -> Result<T, RequestError> {
    let first = payload
        .iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        from_json::<IgnoredAny>(kind, payload)?;
        return Err(RequestError::new(
            ErrorCode::InvalidPayload,
            format!("{kind} payload must be a JSON object"),
        ));
    }
    from_json(kind, payload)
}

fn object_payload<'a, T: Deserialize<'a>>(frame: &Frame<'a>) -> Result<T, RequestError> {
    if frame.flags.is_json() {
        from_json_object(frame.kind, frame.payload)
    } else if frame.flags.is_binary() {
        Err(RequestError::new(
            ErrorCode::InvalidPayload,
            format!("{} takes a JSON payload, not BINARY", frame.kind),
        ))
    } else if frame.payload.is_empty() && frame.kind == MessageType::Hello {
        from_json_object(frame.kind, b"{}")
    } else {
        Err(RequestError::new(
            ErrorCode::InvalidPayload,
            format!(
                "{} needs a JSON payload with the JSON flag (0x01) set",
                frame.kind
            ),
        ))
    }
}

impl<'a> Request<'a> {
    /// Reads a client's frame. Errors carry the code to answer with:
    /// `PARSE_ERROR` (fatal) for invalid JSON under the JSON flag, and
    /// `INVALID_PAYLOAD`, `INVALID_ROOM` (non-fatal) for the rest.
    pub fn parse(frame: &Frame<'a>) -> Result<Request<'a>, RequestError> {
        match frame.kind {
            MessageType::Hello => {
                let hello: Hello = object_payload(frame)?;
                if let Some(user) = &hello.user_id
                    && user.len() > MAX_USER_ID_LEN
                {
                    return Err(RequestError::new(
                        ErrorCode::InvalidPayload,
                        format!(
                            "HELLO userId is {} bytes; use at most {MAX_USER_ID_LEN}",
                            user.len()
                        ),
                    ));
                }
                Ok(Request::Hello(hello))
            }
            MessageType::JoinRoom => {
                let request: RoomRequest<'a> = object_payload(frame)?;
                Ok(Request::Join(room(frame.kind, request.room)?))
            }
            MessageType::LeaveRoom => {
                let request: RoomRequest<'a> = object_payload(frame)?;
                Ok(Request::Leave(room(frame.kind, request.room)?))
            }
            MessageType::Message if frame.flags.is_binary() => {
                let publish = BinaryPublish::parse(frame.payload).map_err(|error| {
                    RequestError::new(ErrorCode::InvalidPayload, error.to_string())
                })?;
                Ok(Request::Publish {
                    room: room(frame.kind, Cow::Borrowed(publish.room))?,
                    content: Content::Binary(publish.body),
                })
            }
            MessageType::Message => {
                let publish: Publish<'a> = object_payload(frame)?;
                let room = room(frame.kind, publish.room)?;
                let content = publish.content.ok_or_else(|| {
                    RequestError::new(
                        ErrorCode::InvalidPayload,
                        "MESSAGE payload has no \"content\" key; send {\"room\": ..., \"content\": ...}",
                    )
                })?;
                Ok(Request::Publish {
                    room,
                    content: Content::Json(content),
                })
            }
            MessageType::Heartbeat => {
                if frame.flags.is_json() {
                    from_json::<&RawValue>(frame.kind, frame.payload)?;
                }
                Ok(Request::Heartbeat {
                    flags: frame.flags,
                    payload: frame.payload,
                })
            }
            MessageType::Error => {
                if frame.flags.is_json() {
                    from_json::<&RawValue>(frame.kind, frame.payload)?;
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
            Request::Join(room) => assert_eq!(room, "test"),
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
            Request::Join(room) => assert_eq!(room, "lobby"),
            other => panic!("unexpected {other:?}"),
        }
        match parse_json(MessageType::JoinRoom, r#"{"room":" caf\u00e9 "}"#).unwrap() {
            Request::Join(room) => assert_eq!(room, "café"),
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
}
