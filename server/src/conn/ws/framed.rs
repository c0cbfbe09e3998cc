//! A batch's WebSocket form: built once, by the first WebSocket member
//! whose writer needs it, and written by every WebSocket member as is.
//!
//! Server-to-client frames are not masked (RFC 6455 5.1), so the framing
//! of a broadcast is the same bytes for every member: each Relay frame
//! behind its 2, 4 or 10 byte binary-message header, formatted by
//! tungstenite. A member's writer then hands the socket one slice per
//! batch, as on TCP, where copying each frame behind its header into a
//! buffer of its own cost every member a copy of every byte.
//!
//! The copy is charged to the server's memory budget while it lives, which
//! is as long as any member still has the batch queued.

use std::io::Cursor;
use std::sync::Arc;

use protocol::LENGTH_PREFIX;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::budget::MemoryBudget;

/// A batch's Relay frames, each as one binary WebSocket message.
#[derive(Debug)]
pub(crate) struct Framed {
    bytes: Box<[u8]>,
    /// Where `bytes` is charged, credited when the batch goes.
    memory: Arc<MemoryBudget>,
}

/// A message's first byte in a framed batch: its offset in the framed
/// bytes, and in the batch's Relay bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) wire: usize,
    pub(crate) relay: usize,
}

/// The header of a final, unmasked binary message.
fn binary() -> FrameHeader {
    FrameHeader {
        opcode: OpCode::Data(Data::Binary),
        ..FrameHeader::default()
    }
}

impl Framed {
    /// Frames the whole Relay frames of `relay`, charged to `memory`. The
    /// server encoded them, so they are whole; should a tail not be (a
    /// bug), it goes as one message of its own rather than be lost, so
    /// the framed bytes still cover every Relay byte.
    pub(crate) fn new(relay: &[u8], memory: Arc<MemoryBudget>) -> Framed {
        let header = binary();
        let mut len = 0;
        for_each_frame(relay, |frame| {
            len += header.len(frame.len() as u64) + frame.len();
        });
        let mut bytes = Vec::with_capacity(len);
        for_each_frame(relay, |frame| {
            // Formatting into a Vec cannot fail.
            let _ = header.format(frame.len() as u64, &mut bytes);
            bytes.extend_from_slice(frame);
        });
        debug_assert_eq!(bytes.len(), len);
        let bytes = bytes.into_boxed_slice();
        memory.charge(bytes.len());
        Framed { bytes, memory }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many Relay bytes the first `wire` framed bytes carry: a header
    /// counts none, a payload byte one. The walk starts at `mark`, a
    /// message's first byte at or before `wire`, and leaves it at the
    /// message `wire` falls in, so a batch written in many parts is walked
    /// once in all.
    pub(crate) fn relay_within(&self, wire: usize, mark: &mut Mark) -> usize {
        loop {
            let rest = self.bytes.get(mark.wire..).unwrap_or_default();
            let mut cursor = Cursor::new(rest);
            let Ok(Some((_, len))) = FrameHeader::parse(&mut cursor) else {
                // The end of the batch.
                return mark.relay;
            };
            let payload = mark.wire + cursor.position() as usize;
            let end = payload + len as usize;
            if wire < end {
                return mark.relay + wire.saturating_sub(payload);
            }
            mark.wire = end;
            mark.relay += len as usize;
        }
    }
}

impl Drop for Framed {
    fn drop(&mut self) {
        self.memory.credit(self.bytes.len());
    }
}

/// Calls `each` with every whole Relay frame of `relay`, and with a tail
/// that is not one.
fn for_each_frame(relay: &[u8], mut each: impl FnMut(&[u8])) {
    let mut rest = relay;
    while let Some(prefix) = rest.first_chunk::<LENGTH_PREFIX>() {
        let total = LENGTH_PREFIX + u32::from_be_bytes(*prefix) as usize;
        let Some(frame) = rest.get(..total) else {
            break;
        };
        each(frame);
        rest = &rest[total..];
    }
    if !rest.is_empty() {
        each(rest);
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Flags, MessageType};
    use tungstenite::protocol::frame::Frame;

    use super::*;

    /// Relay frames of these payload lengths: every header length
    /// tungstenite writes (2 bytes to 125, 4 to 65,535, 10 beyond).
    fn relay_frames(payloads: &[usize]) -> Vec<Vec<u8>> {
        payloads
            .iter()
            .map(|&len| {
                let mut frame = Vec::new();
                let start = protocol::begin_frame(&mut frame, MessageType::Message, Flags::BINARY);
                frame.extend((0..len).map(|i| i as u8));
                protocol::end_frame(&mut frame, start).unwrap();
                frame
            })
            .collect()
    }

    #[test]
    fn each_relay_frame_is_the_binary_message_tungstenite_writes() {
        let frames = relay_frames(&[0, 1, 118, 119, 122, 123, 65_528, 65_529, 70_000]);
        let memory = Arc::new(MemoryBudget::unlimited());
        let framed = Framed::new(&frames.concat(), Arc::clone(&memory));
        let mut expected = Vec::new();
        for frame in &frames {
            Frame::message(frame.clone(), OpCode::Data(Data::Binary), true)
                .format(&mut expected)
                .unwrap();
        }
        assert_eq!(framed.bytes(), &expected[..]);
        assert_eq!(
            memory.used(),
            expected.len() as u64,
            "charged while it lives"
        );
        drop(framed);
        assert_eq!(memory.used(), 0, "credited when it goes");
    }

    #[test]
    fn the_relay_bytes_within_every_offset_are_exact() {
        let frames = relay_frames(&[0, 5, 200, 3, 130]);
        let framed = Framed::new(&frames.concat(), Arc::default());
        // Per framed byte: whether it is a Relay byte (not a header's).
        let mut is_relay = Vec::new();
        for frame in &frames {
            let head = binary().len(frame.len() as u64);
            is_relay.extend(std::iter::repeat_n(false, head));
            is_relay.extend(std::iter::repeat_n(true, frame.len()));
        }
        assert_eq!(is_relay.len(), framed.bytes().len());
        for wire in 0..=is_relay.len() {
            let expected = is_relay[..wire].iter().filter(|&&r| r).count();
            // Walked from the start, and resumed from every mark an
            // earlier, shorter walk left.
            assert_eq!(framed.relay_within(wire, &mut Mark::default()), expected);
            for earlier in (0..=wire).step_by(7) {
                let mut mark = Mark::default();
                framed.relay_within(earlier, &mut mark);
                assert_eq!(
                    framed.relay_within(wire, &mut mark),
                    expected,
                    "{earlier}→{wire}"
                );
            }
        }
    }

    #[test]
    fn a_tail_that_is_no_whole_frame_still_goes_out() {
        let mut relay = relay_frames(&[4]).concat();
        relay.extend_from_slice(&[0, 0, 0, 9, 1]);
        let framed = Framed::new(&relay, Arc::default());
        let total = framed.bytes().len();
        assert_eq!(total, relay.len() + 4);
        assert_eq!(
            framed.relay_within(total, &mut Mark::default()),
            relay.len()
        );
    }
}
