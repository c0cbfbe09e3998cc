//! The Relay v1 wire protocol, sans-IO: no sockets, no clock, no threads.
//!
//! - [`frame`]: the frame layout, message types, flags, and encoding into a
//!   caller's buffer.
//! - [`decoder`]: [`parse_frame`] for one buffer and the incremental
//!   [`Decoder`] for a stream split anywhere.
//! - [`payload`]: the typed JSON payloads of every message in both directions,
//!   room-name rules and the BINARY message layouts.
//! - [`sequence`]: a room's order on the wire: `seq` and `epoch`, recovery
//!   on JOIN, `gap` notices and publish acks.
//! - [`presence`]: member lists, WHO, direct messages.
//! - [`request`]: a client frame read into a [`Request`], with every payload
//!   rule applied and the error code to answer a bad one with.
//! - [`error_code`]: the ERROR codes and their wire names.
//!
//! SPEC.md at the repository root is the contract this crate implements; its
//! hex examples are test vectors checked against this code.

// Unit tests may unwrap: a panic there is a test failure with a backtrace.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod decoder;
pub mod error_code;
pub mod frame;
pub mod payload;
pub mod presence;
pub mod request;
pub mod sequence;

pub use decoder::{DecodeError, Decoder, parse_frame};
pub use error_code::ErrorCode;
pub use frame::{
    DEFAULT_MAX_FRAME, EncodeError, Flags, Frame, FrameStart, HEADER_LEN, LENGTH_PREFIX,
    MIN_LENGTH, MessageType, VERSION, abort_frame, begin_frame, encode, encode_json, end_frame,
};
pub use payload::{
    BinaryDelivery, BinaryLayoutError, BinaryPublish, Delivery, ErrorPayload, Hello, HelloReply,
    JsonDelivery, MAX_ERROR_MESSAGE, MAX_REQUEST_ID_LEN, MAX_ROOM_LEN, MAX_TOKEN_LEN, MemberChange,
    MemberEvent, ORIGINAL_MAX_FRAME, Publish, PublisherJson, RequestId, RoomError, RoomReply,
    RoomRequest, ServerMessage, Stats, Token, validate_room,
};
pub use presence::{Direct, MAX_MEMBER_LIST, Member, Recipient, WhoReply};
pub use request::{Content, MAX_USER_ID_LEN, QUOTE_LEN, Quoted, Request, RequestError};
pub use sequence::{
    Ack, Gap, MAX_EPOCH_LEN, Recovery, SEQ_BINARY_OVERHEAD, SEQ_JSON_OVERHEAD,
    SequencedBinaryDelivery, Since, push_seq_binary, push_seq_json, valid_epoch,
};
