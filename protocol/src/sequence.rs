//! A room's order on the wire: the `seq` and `epoch` every delivery carries,
//! where a JOIN asks to pick up from, the `gap` notice that says exactly
//! what is gone, and the publish `ack` (SPEC.md 3.3, 3.9, 3.10, 3.13, 3.14, 5.11).
//!
//! The server writes a delivery before it knows the delivery's place in
//! its room (the place is given under the room's lock, and the encoding is
//! done before). So `seq` and `epoch` go at one known point of each frame,
//! and [`push_seq_json`] and [`push_seq_binary`] write them there: the last
//! keys of a JSON delivery, and right after `from` in a sequenced binary
//! one. A frame is then its unsequenced self with those bytes inserted.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::payload::{BinaryLayoutError, RequestId};

/// The longest epoch a server may send, in bytes; a client's `since.epoch`
/// longer than this cannot be one, and is `INVALID_PAYLOAD`.
pub const MAX_EPOCH_LEN: usize = 32;

/// The most bytes the Relay server adds to a JSON delivery for its `seq`
/// and `epoch` (its epochs are 16 characters): `,"seq":` and 20 digits,
/// `,"epoch":"`, the epoch and `"`.
pub const SEQ_JSON_OVERHEAD: usize = 7 + 20 + 10 + 16 + 1;

/// The most bytes a sequenced binary delivery adds: `seq` (8), the epoch's
/// length byte, and the epoch.
pub const SEQ_BINARY_OVERHEAD: usize = 8 + 1 + 16;

/// Whether `epoch` is one a server could have sent: 1 to
/// [`MAX_EPOCH_LEN`] bytes of `0-9`, `a-z`, `A-Z`, `-`, `_`, `.` and `:`,
/// so it needs no escaping in JSON and fits a binary length byte.
pub fn valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty()
        && epoch.len() <= MAX_EPOCH_LEN
        && epoch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Appends `,"seq":N,"epoch":"E"`, the last keys of a JSON delivery
/// (before its closing `}`). `epoch` must be [`valid_epoch`].
pub fn push_seq_json(out: &mut Vec<u8>, seq: u64, epoch: &str) {
    out.extend_from_slice(b",\"seq\":");
    crate::payload::push_u64(out, seq);
    out.extend_from_slice(b",\"epoch\":\"");
    out.extend_from_slice(epoch.as_bytes());
    out.push(b'"');
}

/// Appends `| seq u64 BE | epoch_len u8 | epoch |`, which a sequenced
/// binary delivery carries right after `from`. `epoch` must be
/// [`valid_epoch`].
pub fn push_seq_binary(out: &mut Vec<u8>, seq: u64, epoch: &str) {
    out.extend_from_slice(&seq.to_be_bytes());
    // valid_epoch bounds it to 32 bytes.
    out.push(epoch.len().min(255) as u8);
    out.extend_from_slice(epoch.as_bytes());
}

/// A JOIN_ROOM's `since`: the last message the client has of the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    pub epoch: String,
    pub seq: u64,
}

/// What a JOIN_ROOM asks to be replayed before the live messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Everything after this point.
    Since(Since),
    /// The last `n` messages.
    Last(u64),
}

/// Server → client MESSAGE with `"type":"gap"`: messages of the room that
/// the client asked for and will never get (SPEC.md 3.13). Sent only to a
/// connection whose JOIN_ROOM asked for recovery, right after the JOIN
/// answer and before any message after the gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    /// Always `"gap"`.
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    pub room: String,
    /// The room's epoch now.
    pub epoch: String,
    /// With `to`: messages `from..=to` of `epoch` are gone. Absent when
    /// none of the current epoch is (only the previous epoch's are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// The epoch the client's `since` named, when the room's sequence has
    /// started over since: whatever that epoch had after `since.seq` is
    /// gone too, however much it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_epoch: Option<String>,
}

/// Server → client MESSAGE with `"type":"ack"`: a MESSAGE that asked for
/// it (`"ack": true`, with an `id`) was relayed (SPEC.md 3.14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    /// Always `"ack"`.
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    pub room: String,
    /// The MESSAGE's `id`.
    pub id: RequestId,
    /// The `seq` the message was given.
    pub seq: u64,
    pub epoch: String,
    /// Members the message was queued for (the publisher included only
    /// with echo).
    pub members: u64,
}

/// The sequenced BINARY delivery a client gets when its HELLO had
/// `"binarySeq": true`:
/// `| room_len u8 | room | from_len u8 | from | seq u64 BE | epoch_len u8 | epoch | body |`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencedBinaryDelivery<'a> {
    pub room: &'a str,
    pub from: &'a str,
    pub seq: u64,
    pub epoch: &'a str,
    pub body: &'a [u8],
}

impl<'a> SequencedBinaryDelivery<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<SequencedBinaryDelivery<'a>, BinaryLayoutError> {
        let (room, rest) = crate::payload::take_name(payload)?;
        let (from, rest) = crate::payload::take_name(rest)?;
        let (seq, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(BinaryLayoutError::Truncated)?;
        let (epoch, body) = crate::payload::take_name(rest)?;
        Ok(SequencedBinaryDelivery {
            room,
            from,
            seq: u64::from_be_bytes(*seq),
            epoch,
            body,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), BinaryLayoutError> {
        crate::payload::put_name(out, self.room)?;
        crate::payload::put_name(out, self.from)?;
        out.extend_from_slice(&self.seq.to_be_bytes());
        crate::payload::put_name(out, self.epoch)?;
        out.extend_from_slice(self.body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_overhead_covers_the_largest_seq_with_a_server_epoch() {
        let mut out = Vec::new();
        push_seq_json(&mut out, u64::MAX, "0123456789abcdef");
        assert_eq!(out.len(), SEQ_JSON_OVERHEAD);
        let mut out = Vec::new();
        push_seq_binary(&mut out, u64::MAX, "0123456789abcdef");
        assert_eq!(out.len(), SEQ_BINARY_OVERHEAD);
    }

    #[test]
    fn sequenced_binary_round_trips_and_is_the_plain_layout_with_an_insert() {
        let delivery = SequencedBinaryDelivery {
            room: "r",
            from: "c9",
            seq: 258,
            epoch: "e1",
            body: &[0, 255],
        };
        let mut out = Vec::new();
        delivery.encode(&mut out).unwrap();
        assert_eq!(
            out,
            [
                1, b'r', 2, b'c', b'9', 0, 0, 0, 0, 0, 0, 1, 2, 2, b'e', b'1', 0, 255
            ]
        );
        assert_eq!(SequencedBinaryDelivery::parse(&out).unwrap(), delivery);
        let mut plain = vec![1, b'r', 2, b'c', b'9'];
        push_seq_binary(&mut plain, 258, "e1");
        plain.extend_from_slice(&[0, 255]);
        assert_eq!(plain, out);
        assert_eq!(
            SequencedBinaryDelivery::parse(&out[..8]),
            Err(BinaryLayoutError::Truncated)
        );
    }

    #[test]
    fn epochs_are_short_and_need_no_escaping() {
        assert!(valid_epoch("9f86d081884c7d65"));
        assert!(valid_epoch("1700000000000-0"));
        assert!(!valid_epoch(""));
        assert!(!valid_epoch("a\"b"));
        assert!(!valid_epoch(&"a".repeat(33)));
    }
}
