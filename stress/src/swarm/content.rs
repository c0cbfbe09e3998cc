//! The content every load and bench publisher sends, a JSON string of a
//! fixed layout so a subscriber reads its fields at known offsets:
//!
//! ```text
//! "SSSSSSSSSS:PPPPPP:TTTTTTTTTTTTTTTT:xxxx…"
//!  seq (10)   pos(6) sent at, ns (16)  padding to the payload size
//! ```
//!
//! Reading those fields, and finding the content in a delivery, allocates
//! nothing and parses no JSON: the swarm does it for every delivery, tens
//! of millions a second.
/// Bytes of the content before the padding, quotes included.
pub const MIN_LEN: usize = 1 + 10 + 1 + 6 + 1 + 16 + 2;
pub const SEQ: usize = 1;
pub const POS: usize = 12;
pub const TIME: usize = 19;

/// Writes `value` as `width` decimal digits (the low digits if longer).
#[inline]
pub fn put_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Reads decimal digits; `None` if any byte is not a digit.
#[inline]
pub fn digits(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for &b in bytes {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value * 10 + d as u64;
    }
    Some(value)
}

/// A content of `len` bytes (at least [`MIN_LEN`]) with all fields zero.
pub fn template(len: usize) -> Vec<u8> {
    let len = len.max(MIN_LEN);
    let mut out = vec![b'x'; len];
    out[0] = b'"';
    out[len - 1] = b'"';
    out[SEQ..SEQ + 10].fill(b'0');
    out[SEQ + 10] = b':';
    out[POS..POS + 6].fill(b'0');
    out[POS + 6] = b':';
    out[TIME..TIME + 16].fill(b'0');
    out[TIME + 16] = b':';
    out
}

/// Fills the fields of a content made by [`template`].
#[inline]
pub fn fill(content: &mut [u8], seq: u64, pos: u32, time_ns: u64) {
    put_digits(&mut content[SEQ..SEQ + 10], seq);
    put_digits(&mut content[POS..POS + 6], pos as u64);
    put_digits(&mut content[TIME..TIME + 16], time_ns);
}

/// A whole MESSAGE frame publishing a content of `len` bytes to `room`,
/// and the offset of the content in it (where [`fill`] writes each
/// message's fields).
pub fn publish_frame(room: &str, len: usize) -> (Vec<u8>, usize) {
    let template = String::from_utf8(template(len)).unwrap_or_default();
    let content_len = template.len();
    let content = serde_json::value::RawValue::from_string(template).ok();
    let publish = protocol::Publish {
        room: room.into(),
        content: content.as_deref(),
        id: None,
    };
    let mut frame = Vec::new();
    let _ = protocol::encode_json(&mut frame, protocol::MessageType::Message, &publish);
    // `content` is the last key, so the template ends one byte (the
    // closing brace) before the frame does.
    let at = frame.len().saturating_sub(1 + content_len);
    (frame, at)
}

/// The key a delivery's content follows.
const CONTENT_KEY: &[u8] = b"\"content\":";

/// The content of a delivery, found at the offset it had last time if it is
/// still there, else by a scan.
#[inline]
pub(crate) fn find_content<'a>(payload: &'a [u8], hint: &mut usize) -> Option<&'a [u8]> {
    let at = *hint;
    let start = if at > 0 && payload.get(at..at + CONTENT_KEY.len()) == Some(CONTENT_KEY) {
        at
    } else {
        let found = payload
            .windows(CONTENT_KEY.len())
            .position(|w| w == CONTENT_KEY)?;
        *hint = found;
        found
    };
    let content = payload.get(start + CONTENT_KEY.len()..)?;
    (content.len() >= MIN_LEN && content[0] == b'"').then_some(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_fields_round_trip() {
        let mut c = template(64);
        assert_eq!(c.len(), 64);
        fill(&mut c, 1234567, 42, 9_876_543_210);
        assert_eq!(digits(&c[SEQ..SEQ + 10]), Some(1234567));
        assert_eq!(digits(&c[POS..POS + 6]), Some(42));
        assert_eq!(digits(&c[TIME..TIME + 16]), Some(9_876_543_210));
        assert!(serde_json::from_slice::<String>(&c).is_ok());
    }

    #[test]
    fn a_publish_frame_is_a_valid_message_with_its_content_at_the_offset() {
        for len in [0, 64, 300] {
            let (mut frame, at) = publish_frame("room \"q\"", len);
            let n = template(len).len();
            assert_eq!(&frame[at..at + n], &template(len)[..]);
            fill(&mut frame[at..at + n], 99, 3, 12_345);
            let (parsed, used) = protocol::parse_frame(&frame, u32::MAX).unwrap().unwrap();
            assert_eq!(used, frame.len());
            match protocol::Request::parse(&parsed).unwrap() {
                protocol::Request::Publish { room, content, .. } => {
                    assert_eq!(room, "room \"q\"");
                    let protocol::Content::Json(raw) = content else {
                        panic!("JSON content expected");
                    };
                    assert_eq!(digits(&raw.get().as_bytes()[SEQ..SEQ + 10]), Some(99));
                }
                other => panic!("not a publish: {other:?}"),
            }
        }
    }

    #[test]
    fn content_is_found_in_a_delivery() {
        let mut c = template(40);
        fill(&mut c, 7, 1, 5);
        let mut payload = br#"{"room":"r","from":"c12","content":"#.to_vec();
        payload.extend_from_slice(&c);
        payload.extend_from_slice(br#","timestamp":1}"#);
        let mut hint = 0;
        let found = find_content(&payload, &mut hint).map(|c| c[..40].to_vec());
        assert_eq!(found, Some(c.clone()));
        assert!(hint > 0);
        assert!(find_content(&payload, &mut hint).is_some());
    }
}
