//! Frames as bytes and frames as values: the builders write through the
//! protocol crate's encoders, [`OwnedFrame`] is a frame that owns its payload.

use protocol::{Decoder, ErrorPayload, Flags, Frame, MessageType, RoomRequest};
use serde::Serialize;
use serde_json::Value;

/// A frame that owns its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    pub kind: MessageType,
    pub flags: Flags,
    pub payload: Vec<u8>,
}

impl OwnedFrame {
    pub fn new(kind: MessageType, flags: Flags, payload: impl Into<Vec<u8>>) -> OwnedFrame {
        OwnedFrame {
            kind,
            flags,
            payload: payload.into(),
        }
    }

    pub fn from_frame(frame: &Frame<'_>) -> OwnedFrame {
        OwnedFrame::new(frame.kind, frame.flags, frame.payload)
    }

    /// The frame, borrowing this payload.
    pub fn as_frame(&self) -> Frame<'_> {
        Frame::new(self.kind, self.flags, &self.payload)
    }

    /// The payload as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The ERROR payload, if this is a well-formed ERROR.
    pub fn error(&self) -> Option<ErrorPayload> {
        if self.kind != MessageType::Error {
            return None;
        }
        serde_json::from_slice(&self.payload).ok()
    }

    /// The ERROR payload, for tests.
    ///
    /// # Panics
    ///
    /// If this is not a well-formed ERROR; the message shows what it is.
    pub fn expect_error(&self) -> ErrorPayload {
        assert_eq!(
            self.kind,
            MessageType::Error,
            "expected ERROR, got {} {}",
            self.kind,
            self.text()
        );
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("the ERROR payload does not parse ({e}): {}", self.text()))
    }

    /// The payload as a JSON value, for tests.
    ///
    /// # Panics
    ///
    /// If the payload is not JSON; the message shows what it is.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!("{} payload is not JSON ({e}): {:?}", self.kind, self.text())
        })
    }
}

/// Appends one frame with `value` as its JSON payload to `out`, through
/// [`protocol::encode_json`].
///
/// # Panics
///
/// If `value` has no JSON form or does not fit a frame: both are bugs in the
/// caller, never something a server did.
pub fn push_json(out: &mut Vec<u8>, kind: MessageType, value: &impl Serialize) {
    if let Err(error) = protocol::encode_json(out, kind, value) {
        panic!("a {kind} frame could not be encoded: {error}");
    }
}

/// One frame with `value` as its JSON payload.
///
/// # Panics
///
/// As [`push_json`].
pub fn json_frame(kind: MessageType, value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    push_json(&mut out, kind, value);
    out
}

/// One frame with the given parts, any flags and payload (valid or not).
///
/// # Panics
///
/// If the payload does not fit the 32-bit length field.
pub fn raw_frame(kind: MessageType, flags: Flags, payload: &[u8]) -> Vec<u8> {
    Frame::new(kind, flags, payload)
        .to_vec()
        .unwrap_or_else(|error| panic!("a {kind} frame could not be encoded: {error}"))
}

/// A JOIN_ROOM or LEAVE_ROOM frame.
pub fn room_frame(kind: MessageType, room: &str) -> Vec<u8> {
    json_frame(
        kind,
        &RoomRequest {
            room: room.into(),
            id: None,
        },
    )
}

/// Encodes a frame and decodes it again through a [`Decoder`] fed one byte at
/// a time, so a typed round trip crosses the codec too.
///
/// # Panics
///
/// If the decoder does not give back exactly the frame that went in.
pub fn round_trip_frame(kind: MessageType, flags: Flags, payload: &[u8]) -> OwnedFrame {
    let bytes = raw_frame(kind, flags, payload);
    let mut decoder = Decoder::default();
    let mut frames = Vec::new();
    for byte in &bytes {
        decoder.feed(std::slice::from_ref(byte));
        while let Some(frame) = decoder
            .next_frame()
            .unwrap_or_else(|error| panic!("an encoded {kind} frame does not decode: {error}"))
        {
            frames.push(OwnedFrame::from_frame(&frame));
        }
    }
    assert_eq!(frames.len(), 1, "one frame in, one frame out");
    let frame = frames.remove(0);
    assert_eq!(frame, OwnedFrame::new(kind, flags, payload));
    frame
}

/// [`round_trip_frame`] for a JSON payload.
///
/// # Panics
///
/// If `value` does not serialize, or as [`round_trip_frame`].
pub fn round_trip_json(kind: MessageType, value: &impl Serialize) -> OwnedFrame {
    let payload = serde_json::to_vec(value)
        .unwrap_or_else(|error| panic!("a {kind} payload does not serialize: {error}"));
    round_trip_frame(kind, Flags::JSON, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// SPEC.md 1.1: length u32 BE (3 + payload), version 1, type, flags,
    /// payload.
    fn spec_layout(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = (3 + payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend([1, kind, flags]);
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn raw_frames_have_the_spec_layout() {
        // SPEC.md 1.1: the smallest frame.
        assert_eq!(
            raw_frame(MessageType::Heartbeat, Flags::NONE, b""),
            [0, 0, 0, 3, 1, 5, 0]
        );
        assert_eq!(
            raw_frame(MessageType::Message, Flags::BINARY, &[9, 8, 7]),
            spec_layout(0x04, 0x02, &[9, 8, 7])
        );
    }

    #[test]
    fn json_frames_carry_the_json_flag_and_the_compact_text() {
        assert_eq!(
            json_frame(MessageType::Hello, &json!({"userId": "ann"})),
            spec_layout(0x01, 0x01, br#"{"userId":"ann"}"#)
        );
        assert_eq!(
            room_frame(MessageType::JoinRoom, "test"),
            spec_layout(0x02, 0x01, br#"{"room":"test"}"#)
        );
        assert_eq!(
            room_frame(MessageType::LeaveRoom, "test"),
            spec_layout(0x03, 0x01, br#"{"room":"test"}"#)
        );
    }

    #[test]
    fn push_json_appends_after_what_is_there() {
        let mut out = vec![0xEE];
        push_json(&mut out, MessageType::Message, &json!({"room": "r"}));
        push_json(&mut out, MessageType::Message, &json!(1));
        let mut expected = vec![0xEE];
        expected.extend(spec_layout(0x04, 0x01, br#"{"room":"r"}"#));
        expected.extend(spec_layout(0x04, 0x01, b"1"));
        assert_eq!(out, expected);
    }

    #[test]
    #[should_panic(expected = "could not be encoded")]
    fn a_value_without_json_form_is_a_bug_not_a_frame() {
        let map: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        json_frame(MessageType::Message, &map);
    }

    #[test]
    fn owned_frames_read_their_payloads() {
        let error = round_trip_json(
            MessageType::Error,
            &ErrorPayload::new(protocol::ErrorCode::NotInRoom, "nope"),
        );
        assert_eq!(error.error(), Some(error.expect_error()));
        assert_eq!(error.expect_error().code, protocol::ErrorCode::NotInRoom);
        assert_eq!(error.json()["message"], "nope");

        let text = round_trip_frame(MessageType::Message, Flags::JSON, b"\"hi\"");
        assert_eq!(text.text(), "\"hi\"");
        assert_eq!(text.error(), None);
        assert_eq!(
            text.as_frame(),
            Frame::json(MessageType::Message, b"\"hi\"")
        );
    }

    #[test]
    #[should_panic(expected = "expected ERROR, got HEARTBEAT")]
    fn expect_error_names_what_came_instead() {
        OwnedFrame::new(MessageType::Heartbeat, Flags::NONE, Vec::new()).expect_error();
    }
}
