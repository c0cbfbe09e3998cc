//! The frame: the unit of the wire protocol, and how it is written.
//!
//! ```text
//! | length u32 BE | version u8 | type u8 | flags u8 | payload ... |
//!   `length` counts version + type + flags + payload, so it is at least 3.
//! ```
//!
//! Encoding never allocates on its own: it appends to a buffer the caller owns,
//! so a server can encode one outgoing frame (or a run of them) once and share
//! the bytes with every member of a room.

use std::fmt;

use serde::Serialize;

/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes of the `length` prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Bytes before the payload: length prefix, version, type and flags.
pub const HEADER_LEN: usize = 7;
/// The smallest legal `length`: version, type and flags with an empty payload.
pub const MIN_LENGTH: u32 = 3;
/// The default maximum `length` a peer accepts (1 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 1024 * 1024;

/// What a frame is for; the `type` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Hello = 1,
    JoinRoom = 2,
    LeaveRoom = 3,
    Message = 4,
    Heartbeat = 5,
    Error = 6,
    /// Who is in a room: the client's request and the server's answer
    /// (SPEC.md 3.15). Servers before protocol 0.4 do not know it.
    Who = 7,
}

impl MessageType {
    /// Every type, in wire order.
    pub const ALL: [MessageType; 7] = [
        MessageType::Hello,
        MessageType::JoinRoom,
        MessageType::LeaveRoom,
        MessageType::Message,
        MessageType::Heartbeat,
        MessageType::Error,
        MessageType::Who,
    ];

    /// The type for a wire byte, or `None` for an unknown one.
    pub const fn from_u8(byte: u8) -> Option<MessageType> {
        Some(match byte {
            1 => MessageType::Hello,
            2 => MessageType::JoinRoom,
            3 => MessageType::LeaveRoom,
            4 => MessageType::Message,
            5 => MessageType::Heartbeat,
            6 => MessageType::Error,
            7 => MessageType::Who,
            _ => return None,
        })
    }

    /// The name SPEC.md and the logs use, e.g. `JOIN_ROOM`.
    pub const fn name(self) -> &'static str {
        match self {
            MessageType::Hello => "HELLO",
            MessageType::JoinRoom => "JOIN_ROOM",
            MessageType::LeaveRoom => "LEAVE_ROOM",
            MessageType::Message => "MESSAGE",
            MessageType::Heartbeat => "HEARTBEAT",
            MessageType::Error => "ERROR",
            MessageType::Who => "WHO",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `flags` byte: how the payload is encoded.
///
/// Bit 0 is JSON, bit 1 is BINARY; they exclude each other, and bits 2-7 are
/// reserved and must be 0. A frame with neither bit carries no declared
/// encoding (an empty HEARTBEAT, say).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No encoding declared.
    pub const NONE: Flags = Flags(0);
    /// The payload is one UTF-8 JSON text.
    pub const JSON: Flags = Flags(0x01);
    /// The payload is raw bytes.
    pub const BINARY: Flags = Flags(0x02);
    /// Bits that must be zero in version 1.
    pub const RESERVED_MASK: u8 = 0xFC;

    /// Flags from a wire byte, or `None` if reserved bits are set or both
    /// JSON and BINARY are.
    pub const fn from_bits(bits: u8) -> Option<Flags> {
        if bits & Self::RESERVED_MASK != 0 || bits == 0x03 {
            None
        } else {
            Some(Flags(bits))
        }
    }

    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn is_json(self) -> bool {
        self.0 & 0x01 != 0
    }

    pub const fn is_binary(self) -> bool {
        self.0 & 0x02 != 0
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            0 => "NONE",
            1 => "JSON",
            2 => "BINARY",
            _ => "INVALID",
        })
    }
}

/// One decoded frame, borrowing its payload from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: MessageType,
    pub flags: Flags,
    pub payload: &'a [u8],
}

/// A frame that cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload does not fit the 32-bit length field.
    TooLarge { payload_len: usize },
    /// A value given to [`encode_json`] has no JSON form (a map with
    /// non-string keys, or a `Serialize` impl that fails).
    NotJson,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { payload_len } => write!(
                f,
                "payload of {payload_len} bytes does not fit a frame; split it into smaller messages"
            ),
            EncodeError::NotJson => {
                f.write_str("the payload has no JSON form; use string keys and plain values")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

impl<'a> Frame<'a> {
    pub const fn new(kind: MessageType, flags: Flags, payload: &'a [u8]) -> Frame<'a> {
        Frame {
            kind,
            flags,
            payload,
        }
    }

    /// A frame whose payload is JSON text.
    pub const fn json(kind: MessageType, payload: &'a [u8]) -> Frame<'a> {
        Frame::new(kind, Flags::JSON, payload)
    }

    /// The value of the `length` field for this frame.
    pub fn length_field(&self) -> usize {
        MIN_LENGTH as usize + self.payload.len()
    }

    /// Bytes this frame takes on the wire, prefix included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = begin_frame(out, self.kind, self.flags);
        out.extend_from_slice(self.payload);
        end_frame(out, start).map(|_| ())
    }

    /// The frame as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// Where a frame started by [`begin_frame`] begins in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a started frame must be finished with end_frame"]
pub struct FrameStart(usize);

/// Starts a frame in `out`: writes the header with a placeholder length.
///
/// The caller then appends the payload straight into `out` (for instance with
/// `serde_json::to_writer`) and calls [`end_frame`], so a payload is never
/// built in a buffer of its own and copied.
pub fn begin_frame(out: &mut Vec<u8>, kind: MessageType, flags: Flags) -> FrameStart {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, VERSION, kind as u8, flags.bits()]);
    FrameStart(start)
}

/// Finishes a frame started by [`begin_frame`] by writing its length field,
/// which it returns.
///
/// On error the partial frame is removed from `out`.
pub fn end_frame(out: &mut Vec<u8>, start: FrameStart) -> Result<u32, EncodeError> {
    let payload_len = out.len() - start.0 - HEADER_LEN;
    let Ok(length) = u32::try_from(payload_len + MIN_LENGTH as usize) else {
        out.truncate(start.0);
        return Err(EncodeError::TooLarge { payload_len });
    };
    out[start.0..start.0 + LENGTH_PREFIX].copy_from_slice(&length.to_be_bytes());
    Ok(length)
}

/// Discards a frame started by [`begin_frame`] (when building its payload failed).
pub fn abort_frame(out: &mut Vec<u8>, start: FrameStart) {
    out.truncate(start.0);
}

/// Appends one frame of `kind` whose payload is `value` as JSON, and returns
/// its length field.
///
/// This is the one place a JSON frame is written: the server's answers and
/// ERRORs, the clients' requests and the test tools all come through here, so
/// the header and the JSON flag cannot disagree between them. On error
/// nothing is left in `out`.
pub fn encode_json<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    kind: MessageType,
    value: &T,
) -> Result<u32, EncodeError> {
    let start = begin_frame(out, kind, Flags::JSON);
    if serde_json::to_writer(&mut *out, value).is_err() {
        abort_frame(out, start);
        return Err(EncodeError::NotJson);
    }
    end_frame(out, start)
}

/// Appends a frame with the given parts to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    kind: MessageType,
    flags: Flags,
    payload: &[u8],
) -> Result<(), EncodeError> {
    Frame::new(kind, flags, payload).encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_layout() {
        let bytes = Frame::json(MessageType::JoinRoom, br#"{"room":"test"}"#)
            .to_vec()
            .unwrap();
        assert_eq!(&bytes[..7], &[0, 0, 0, 18, 1, 2, 1]);
        assert_eq!(&bytes[7..], br#"{"room":"test"}"#);
    }

    #[test]
    fn json_frames_carry_the_json_flag_and_their_length() {
        let mut out = vec![0xAA];
        let length = encode_json(
            &mut out,
            MessageType::JoinRoom,
            &serde_json::json!({"room": "test"}),
        )
        .unwrap();
        assert_eq!(length, 18);
        assert_eq!(&out[..8], &[0xAA, 0, 0, 0, 18, 1, 2, 1]);
        assert_eq!(&out[8..], br#"{"room":"test"}"#);
    }

    #[test]
    fn a_value_without_json_form_leaves_nothing_behind() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        let mut out = vec![7];
        assert_eq!(
            encode_json(&mut out, MessageType::Message, &map),
            Err(EncodeError::NotJson)
        );
        assert_eq!(out, [7]);
    }

    #[test]
    fn empty_payload_has_length_three() {
        let bytes = Frame::new(MessageType::Heartbeat, Flags::NONE, b"")
            .to_vec()
            .unwrap();
        assert_eq!(bytes, [0, 0, 0, 3, 1, 5, 0]);
    }

    #[test]
    fn flags_reject_reserved_bits_and_both_encodings() {
        assert_eq!(Flags::from_bits(0), Some(Flags::NONE));
        assert_eq!(Flags::from_bits(1), Some(Flags::JSON));
        assert_eq!(Flags::from_bits(2), Some(Flags::BINARY));
        assert_eq!(Flags::from_bits(3), None);
        for bit in 2..8 {
            assert_eq!(Flags::from_bits(1 << bit), None);
        }
    }

    #[test]
    fn message_types_round_trip_their_byte() {
        for kind in MessageType::ALL {
            assert_eq!(MessageType::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(MessageType::from_u8(0), None);
        assert_eq!(MessageType::from_u8(8), None);
    }
}
