//! What one node sends another through Redis: a batch of frames exactly
//! as the origin encoded them for its own members, before their `seq`s,
//! with where each message takes its numbers and the origin's own count
//! of what it relayed in the room.
//!
//! ```text
//! version u8 (1)
//! node_len u8 | node          the origin's --node-id
//! epoch_len u8 | epoch        the origin's epoch of the room
//! first u64 BE                the origin's count for the first message (count + 1 when none)
//! messages u32 BE             message frames in the batch (each gets a seq)
//! frames u32 BE               frames in the batch (membership events too)
//! messages × (frame u32 BE, at u32 BE, binary u8)   splices, as rooms::Splice
//! bytes                       the frames
//! ```
//!
//! Redis is the operator's, but what comes from it is checked like
//! anything read from a socket: a receiver never trusts an offset it did
//! not check, and a batch that does not parse is dropped and counted.

use std::fmt;

use crate::rooms::{Relayed, Splice};

pub(crate) const VERSION: u8 = 1;

/// A batch as relayed between nodes, borrowed from the bytes it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub(crate) node: &'a str,
    pub(crate) epoch: &'a str,
    /// The origin's count of messages it relayed in the room, for the
    /// first message of this batch (its next count, when it has none).
    pub(crate) first: u64,
    pub(crate) frames: u32,
    pub(crate) splices: Vec<Splice>,
    pub(crate) bytes: &'a [u8],
}

/// Why a relayed batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Shorter than its header says.
    Truncated,
    /// Another version of this layout (a node of another release).
    Version(u8),
    /// A name that is not UTF-8.
    Name,
    /// A splice or a frame that does not fit the bytes.
    Frames,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Truncated => f.write_str("relayed batch cut short"),
            Malformed::Version(v) => write!(
                f,
                "relayed batch of layout version {v}, this node reads {VERSION}; run one release on every node"
            ),
            Malformed::Name => f.write_str("relayed batch with a node or epoch that is not UTF-8"),
            Malformed::Frames => f.write_str("relayed batch whose frames do not match its header"),
        }
    }
}

impl Envelope<'_> {
    /// The batch, as the rooms take it.
    pub(crate) fn relayed(&self) -> Relayed<'_> {
        Relayed {
            epoch: self.epoch,
            first: self.first,
            frames: self.frames,
            splices: &self.splices,
            bytes: self.bytes,
        }
    }
}

/// Writes the envelope of `batch`, from node `node`, into a new buffer.
pub(crate) fn encode(node: &str, batch: &Relayed<'_>) -> Vec<u8> {
    let Relayed {
        epoch,
        first,
        frames,
        splices,
        bytes,
    } = *batch;
    let mut out =
        Vec::with_capacity(32 + node.len() + epoch.len() + splices.len() * 9 + bytes.len());
    out.push(VERSION);
    // Both are validated to at most 64 bytes (node ids) and 32 (epochs).
    out.push(node.len().min(255) as u8);
    out.extend_from_slice(&node.as_bytes()[..node.len().min(255)]);
    out.push(epoch.len().min(255) as u8);
    out.extend_from_slice(&epoch.as_bytes()[..epoch.len().min(255)]);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&(splices.len() as u32).to_be_bytes());
    out.extend_from_slice(&frames.to_be_bytes());
    for splice in splices {
        out.extend_from_slice(&(splice.frame as u32).to_be_bytes());
        out.extend_from_slice(&(splice.at as u32).to_be_bytes());
        out.push(u8::from(splice.binary));
    }
    out.extend_from_slice(bytes);
    out
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn name(&mut self) -> Result<&'a str, Malformed> {
        let len = self.u8()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| Malformed::Name)
    }
}

/// Reads an envelope, checking that its frames are whole frames no longer
/// than `max_frame` and that every splice points inside its own message
/// frame, in order.
pub(crate) fn decode(input: &[u8], max_frame: u32) -> Result<Envelope<'_>, Malformed> {
    let mut cursor = Cursor(input);
    let version = cursor.u8()?;
    if version != VERSION {
        return Err(Malformed::Version(version));
    }
    let node = cursor.name()?;
    let epoch = cursor.name()?;
    let first = cursor.u64()?;
    let messages = cursor.u32()? as usize;
    let frames = cursor.u32()?;
    if messages > frames as usize || messages.saturating_mul(9) > cursor.0.len() {
        return Err(Malformed::Truncated);
    }
    let mut splices = Vec::with_capacity(messages);
    for _ in 0..messages {
        let frame = cursor.u32()? as usize;
        let at = cursor.u32()? as usize;
        let binary = cursor.u8()? != 0;
        splices.push(Splice { frame, at, binary });
    }
    let bytes = cursor.0;
    // Every frame whole, and every splice at a frame's start, inside it.
    let mut offset = 0;
    let mut count = 0u32;
    let mut next = splices.iter().peekable();
    while offset < bytes.len() {
        let Ok(Some((_, used))) = protocol::parse_frame(&bytes[offset..], max_frame) else {
            return Err(Malformed::Frames);
        };
        if let Some(splice) = next.peek() {
            if splice.frame < offset {
                return Err(Malformed::Frames);
            }
            if splice.frame == offset {
                // The insert goes inside the payload, at most at its end.
                if splice.at <= offset + protocol::LENGTH_PREFIX || splice.at > offset + used {
                    return Err(Malformed::Frames);
                }
                next.next();
            }
        }
        offset += used;
        count += 1;
    }
    if next.next().is_some() || count != frames {
        return Err(Malformed::Frames);
    }
    Ok(Envelope {
        node,
        epoch,
        first,
        frames,
        splices,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> (Vec<u8>, Vec<Splice>) {
        let mut bytes = Vec::new();
        let splices = (0..3)
            .map(|n| Splice::json_delivery(&mut bytes, "r", n))
            .collect();
        (bytes, splices)
    }

    fn encode(
        node: &str,
        epoch: &str,
        first: u64,
        frames: u32,
        splices: &[Splice],
        bytes: &[u8],
    ) -> Vec<u8> {
        let batch = Relayed {
            epoch,
            first,
            frames,
            splices,
            bytes,
        };
        super::encode(node, &batch)
    }

    #[test]
    fn a_batch_comes_back_as_it_was_sent() {
        let (bytes, splices) = batch();
        let wire = encode("node-a", "0123456789abcdef", 41, 3, &splices, &bytes);
        let envelope = decode(&wire, 1 << 20).unwrap();
        assert_eq!(envelope.node, "node-a");
        assert_eq!(envelope.epoch, "0123456789abcdef");
        assert_eq!(envelope.first, 41);
        assert_eq!(envelope.frames, 3);
        assert_eq!(envelope.splices, splices);
        assert_eq!(envelope.bytes, &bytes[..]);
    }

    #[test]
    fn every_cut_and_every_bad_offset_is_refused_not_trusted() {
        let (bytes, splices) = batch();
        let wire = encode("a", "e", 1, 3, &splices, &bytes);
        for cut in 0..wire.len() {
            assert!(decode(&wire[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        let mut bad = splices.clone();
        bad[1].at = bytes.len() + 10;
        assert_eq!(
            decode(&encode("a", "e", 1, 3, &bad, &bytes), 1 << 20),
            Err(Malformed::Frames)
        );
        let mut bad = splices.clone();
        bad[2].frame = 3;
        assert!(decode(&encode("a", "e", 1, 3, &bad, &bytes), 1 << 20).is_err());
        assert_eq!(
            decode(&encode("a", "e", 1, 4, &splices, &bytes), 1 << 20),
            Err(Malformed::Frames)
        );
        let mut other = wire.clone();
        other[0] = 9;
        assert_eq!(decode(&other, 1 << 20), Err(Malformed::Version(9)));
        assert_eq!(
            decode(&wire, 16),
            Err(Malformed::Frames),
            "frames over max_frame"
        );
    }
}
