//! What travels through a connection's queue: encoded frames, shared.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use protocol::{ErrorCode, ErrorPayload, LENGTH_PREFIX, MessageType, encode_json};

use super::transport::Framing;
use super::ws::framed::{Framed, Mark};
use crate::budget::MemoryBudget;
use crate::counters::Tally;

/// Encoded frames ready to write: one or more whole frames, shared by every
/// member they go to.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) bytes: Vec<u8>,
    /// How many frames `bytes` holds.
    pub(crate) frames: u32,
    /// The frames by type, counted once here (not per member) for the
    /// writers' `relay_frames_out_total{type}`.
    pub(crate) tally: Tally,
    /// When the read that brought the frames in returned, for a sampled
    /// broadcast (see `histogram::SAMPLE_EVERY`): the writer that completes
    /// the batch times the delivery from it. `None` for replies and for
    /// broadcasts not sampled, which then cost the writer no clock read.
    pub(crate) read_at: Option<Instant>,
    /// The code of the fatal ERROR this batch is (a connection's final
    /// ERROR), for a WebSocket close frame's reason.
    pub(crate) fatal: Option<ErrorCode>,
    /// `bytes` as WebSocket messages, made by the first WebSocket member
    /// to write the batch and written by all of them.
    ws: OnceLock<Framed>,
}

/// What a connection's output hands its write half (see [`Framing`]), and
/// where a WebSocket framing is charged.
#[derive(Debug, Clone, Default)]
pub(crate) enum Wire {
    #[default]
    Relay,
    WebSocket(Arc<MemoryBudget>),
}

impl Wire {
    pub(crate) fn new(framing: Framing, memory: &Arc<MemoryBudget>) -> Wire {
        match framing {
            Framing::Relay => Wire::Relay,
            Framing::WebSocket => Wire::WebSocket(Arc::clone(memory)),
        }
    }
}

impl Batch {
    /// Frames encoded in `bytes`, counted by type from their headers.
    pub(crate) fn new(bytes: Vec<u8>, read_at: Option<Instant>) -> Batch {
        let tally = tally_of(&bytes);
        Batch {
            frames: u32::try_from(tally.frames()).unwrap_or(u32::MAX),
            bytes,
            tally,
            read_at,
            fatal: None,
            ws: OnceLock::new(),
        }
    }

    /// The bytes a write half with `wire` is handed: `bytes`, or their
    /// WebSocket framing, made now if no member has yet.
    pub(crate) fn wire(&self, wire: &Wire) -> &[u8] {
        match wire {
            Wire::Relay => &self.bytes,
            Wire::WebSocket(memory) => self.framed(memory).bytes(),
        }
    }

    /// How many of `bytes` the first `offset` bytes of [`Batch::wire`]
    /// carry; `mark` is where a walk of the WebSocket framing resumes (see
    /// `Framed::relay_within`).
    pub(crate) fn relay_within(&self, wire: &Wire, offset: usize, mark: &mut Mark) -> usize {
        match wire {
            Wire::Relay => offset,
            Wire::WebSocket(memory) => self.framed(memory).relay_within(offset, mark),
        }
    }

    fn framed(&self, memory: &Arc<MemoryBudget>) -> &Framed {
        self.ws
            .get_or_init(|| Framed::new(&self.bytes, Arc::clone(memory)))
    }

    /// `frames` frames in `bytes`, taken on trust and counted as MESSAGEs:
    /// for tests of the queue, whose bytes need not be frames.
    #[cfg(test)]
    pub(crate) fn raw(bytes: Vec<u8>, frames: u32) -> Batch {
        Batch {
            tally: Tally::of(MessageType::Message, frames.into(), bytes.len() as u64),
            bytes,
            frames,
            read_at: None,
            fatal: None,
            ws: OnceLock::new(),
        }
    }

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
        Batch {
            fatal: error.fatal.then_some(error.code),
            ..Batch::new(bytes, None)
        }
    }
}

/// Counts the frames in `bytes` by type, from each header's length and
/// type byte. The server encoded them, so they are whole and well formed;
/// a header it cannot read ends the count rather than guess.
fn tally_of(bytes: &[u8]) -> Tally {
    let mut tally = Tally::default();
    let mut rest = bytes;
    while let Some(prefix) = rest.first_chunk::<LENGTH_PREFIX>() {
        let total = LENGTH_PREFIX + u32::from_be_bytes(*prefix) as usize;
        let Some(kind) = rest.get(5).copied().and_then(MessageType::from_u8) else {
            break;
        };
        if total > rest.len() {
            break;
        }
        tally.add(kind, total);
        rest = &rest[total..];
    }
    tally
}

/// A queue entry: frames to write.
pub(crate) type Outgoing = Arc<Batch>;

#[cfg(test)]
mod tests {
    use protocol::Flags;

    use super::*;

    #[test]
    fn frames_are_counted_by_type_from_their_headers() {
        let mut bytes = Vec::new();
        encode_json(&mut bytes, MessageType::Message, &"hi").unwrap();
        let first = bytes.len();
        encode_json(&mut bytes, MessageType::Message, &"there").unwrap();
        let start = protocol::begin_frame(&mut bytes, MessageType::Heartbeat, Flags::BINARY);
        protocol::end_frame(&mut bytes, start).unwrap();
        let batch = Batch::new(bytes.clone(), None);
        assert_eq!(batch.frames, 3);
        let mut expected = Tally::default();
        expected.add(MessageType::Message, first);
        expected.add(MessageType::Message, bytes.len() - first - 7);
        expected.add(MessageType::Heartbeat, 7);
        assert_eq!(batch.tally, expected);
    }
}
