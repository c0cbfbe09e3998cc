//! What travels through a connection's queue: encoded frames, shared.

use std::sync::Arc;

use protocol::{ErrorCode, ErrorPayload, MessageType, encode_json};

/// Encoded frames ready to write: one or more whole frames, shared by every
/// member they go to.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) bytes: Vec<u8>,
    /// How many frames `bytes` holds.
    pub(crate) frames: u32,
}

impl Batch {
    /// One ERROR frame, as a batch of its own.
    pub(crate) fn error(code: ErrorCode, message: &str) -> Batch {
        Batch::error_payload(&ErrorPayload::new(code, message))
    }

    /// One ERROR frame with this payload, as a batch of its own.
    pub(crate) fn error_payload(error: &ErrorPayload) -> Batch {
        let mut bytes = Vec::new();
        // An ErrorPayload is strings, a bool and an id: it always has a
        // JSON form.
        let _ = encode_json(&mut bytes, MessageType::Error, error);
        Batch { bytes, frames: 1 }
    }
}

/// A queue entry: frames to write.
pub(crate) type Outgoing = Arc<Batch>;
