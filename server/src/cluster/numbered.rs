//! What a batch looks like in the `room` order mode (SPEC.md 14.2): the
//! request a node hands the numbering script, and what the script
//! publishes and keeps in the room's stream, with the `seq`s Redis gave.
//!
//! ```text
//! published = epoch SP first SP body      written by the script (text)
//! body:
//! version u8 (2)
//! from u64 BE                 the publisher's connection number
//! echo u8                     1: the publisher gets its own copy
//! ack_len u8 | ack            the JSON of the MESSAGE's `id` to ack, or none
//! at_ms u64 BE                when the publisher's node read it (history's age limit)
//! envelope                    as `envelope` (node, epoch "-", count 0, splices, frames)
//! ```
//!
//! The envelope inside is the publisher-mode layout, so both modes check
//! a batch from Redis with the same code. A numbered batch holds message
//! frames only (membership events go the publisher-mode way, unnumbered).

use super::envelope::{self, Envelope, Malformed};
use crate::rooms::Relayed;

const VERSION: u8 = 2;

/// A numbered batch, borrowed from the bytes it came in.
#[derive(Debug)]
pub(crate) struct Numbered<'a> {
    /// The room's epoch across the cluster.
    pub(crate) epoch: &'a str,
    /// The `seq` of the first message.
    pub(crate) first: u64,
    pub(crate) from: u64,
    pub(crate) echo: bool,
    /// The JSON of the `id` the publisher asked an ack for.
    pub(crate) ack: Option<&'a [u8]>,
    pub(crate) at_ms: u64,
    pub(crate) envelope: Envelope<'a>,
}

/// Who published a batch, and what it asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Publisher<'a> {
    pub(crate) from: u64,
    pub(crate) echo: bool,
    pub(crate) ack: Option<&'a [u8]>,
    pub(crate) at_ms: u64,
}

/// The body of a batch for the numbering script.
pub(crate) fn encode(node: &str, publisher: &Publisher<'_>, batch: &Relayed<'_>) -> Vec<u8> {
    let inner = envelope::encode(node, batch);
    let ack = publisher.ack.unwrap_or_default();
    let mut out = Vec::with_capacity(20 + ack.len() + inner.len());
    out.push(VERSION);
    out.extend_from_slice(&publisher.from.to_be_bytes());
    out.push(u8::from(publisher.echo));
    // An id is at most 64 bytes of text (protocol::MAX_REQUEST_ID_LEN),
    // so its JSON fits; a longer one is not acked rather than cut.
    if ack.len() <= usize::from(u8::MAX) {
        out.push(ack.len() as u8);
        out.extend_from_slice(ack);
    } else {
        out.push(0);
    }
    out.extend_from_slice(&publisher.at_ms.to_be_bytes());
    out.extend_from_slice(&inner);
    out
}

/// Reads a batch as the script published it: `epoch first body`.
pub(crate) fn decode_published(input: &[u8], max_frame: u32) -> Result<Numbered<'_>, Malformed> {
    let (epoch, rest) = word(input)?;
    let (first, body) = word(rest)?;
    let epoch = std::str::from_utf8(epoch).map_err(|_| Malformed::Name)?;
    let first = std::str::from_utf8(first)
        .ok()
        .and_then(|first| first.parse::<u64>().ok())
        .filter(|&first| first > 0)
        .ok_or(Malformed::Name)?;
    decode_body(epoch, first, body, max_frame)
}

/// Reads a body kept in the stream, numbered from `first` in `epoch`.
pub(crate) fn decode_body<'a>(
    epoch: &'a str,
    first: u64,
    body: &'a [u8],
    max_frame: u32,
) -> Result<Numbered<'a>, Malformed> {
    if epoch.is_empty() || epoch.len() > 32 {
        return Err(Malformed::Name);
    }
    let (&version, rest) = body.split_first().ok_or(Malformed::Truncated)?;
    if version != VERSION {
        return Err(Malformed::Version(version));
    }
    let take = |rest: &'a [u8], n: usize| -> Result<(&'a [u8], &'a [u8]), Malformed> {
        (rest.len() >= n)
            .then(|| rest.split_at(n))
            .ok_or(Malformed::Truncated)
    };
    let (from, rest) = take(rest, 8)?;
    let (echo, rest) = take(rest, 1)?;
    let (ack_len, rest) = take(rest, 1)?;
    let (ack, rest) = take(rest, usize::from(ack_len[0]))?;
    let (at_ms, rest) = take(rest, 8)?;
    let envelope = envelope::decode(rest, max_frame)?;
    if envelope.frames as usize != envelope.splices.len() {
        // Numbered batches hold messages only: every frame takes a seq.
        return Err(Malformed::Frames);
    }
    let mut from8 = [0; 8];
    from8.copy_from_slice(from);
    let mut at8 = [0; 8];
    at8.copy_from_slice(at_ms);
    Ok(Numbered {
        epoch,
        first,
        from: u64::from_be_bytes(from8),
        echo: echo[0] != 0,
        ack: (!ack.is_empty()).then_some(ack),
        at_ms: u64::from_be_bytes(at8),
        envelope,
    })
}

/// The bytes before the next space, and those after it.
fn word(input: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    // Epochs are at most 32 bytes and seqs 20 digits.
    let head = &input[..input.len().min(40)];
    let at = head
        .iter()
        .position(|&b| b == b' ')
        .ok_or(Malformed::Truncated)?;
    Ok((&input[..at], &input[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::Splice;

    fn body(ack: Option<&[u8]>) -> (Vec<u8>, Vec<Splice>, Vec<u8>) {
        let mut bytes = Vec::new();
        let splices: Vec<Splice> = (0..2)
            .map(|n| Splice::json_delivery(&mut bytes, "r", n))
            .collect();
        let batch = Relayed {
            epoch: "-",
            first: 0,
            frames: 2,
            splices: &splices,
            bytes: &bytes,
        };
        let publisher = Publisher {
            from: 81,
            echo: true,
            ack,
            at_ms: 1234,
        };
        let wire = encode("node-a", &publisher, &batch);
        (bytes, splices, wire)
    }

    #[test]
    fn a_published_batch_comes_back_with_its_numbers() {
        let (bytes, splices, wire) = body(Some(b"12"));
        let mut published = b"00ff00ff00ff00ff 41 ".to_vec();
        published.extend_from_slice(&wire);
        let numbered = decode_published(&published, 1 << 20).unwrap();
        assert_eq!(numbered.epoch, "00ff00ff00ff00ff");
        assert_eq!(numbered.first, 41);
        assert_eq!(numbered.from, 81);
        assert!(numbered.echo);
        assert_eq!(numbered.ack, Some(&b"12"[..]));
        assert_eq!(numbered.at_ms, 1234);
        assert_eq!(numbered.envelope.node, "node-a");
        assert_eq!(numbered.envelope.splices, splices);
        assert_eq!(numbered.envelope.bytes, &bytes[..]);
    }

    #[test]
    fn every_cut_and_a_bad_header_is_refused() {
        let (_, _, wire) = body(None);
        let mut published = b"e 7 ".to_vec();
        published.extend_from_slice(&wire);
        assert!(decode_published(&published, 1 << 20).unwrap().ack.is_none());
        for cut in 0..published.len() {
            assert!(
                decode_published(&published[..cut], 1 << 20).is_err(),
                "cut at {cut}"
            );
        }
        for head in [&b"e 0 "[..], b"e x ", b" 7 ", b"e -1 "] {
            let mut bad = head.to_vec();
            bad.extend_from_slice(&wire);
            assert!(decode_published(&bad, 1 << 20).is_err(), "{head:?}");
        }
    }
}
