//! Turning a byte stream into frames: [`parse_frame`] for one buffer, and the
//! incremental [`Decoder`] for a stream that arrives in arbitrary pieces.
//!
//! Every check that can be made early is: the length is judged from its four
//! bytes alone, before any body arrives, and version, type and flags as soon
//! as their byte is there. Nothing is ever allocated for a declared length up
//! front, so a peer that announces 4 GiB costs nothing.

use std::fmt;

use crate::error_code::ErrorCode;
use crate::frame::{Flags, Frame, HEADER_LEN, LENGTH_PREFIX, MIN_LENGTH, MessageType, VERSION};

/// Why a byte stream is not a valid frame stream. Each is fatal for the
/// connection that sent it: after it, frame boundaries can't be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// `length` is below 3, so there is no room for version, type and flags.
    TooShort { length: u32 },
    /// `length` is above the receiver's maximum.
    TooLarge { length: u32, max: u32 },
    /// The version byte is not 1.
    UnsupportedVersion { version: u8 },
    /// The type byte names no message type.
    UnknownType { kind: u8 },
    /// Reserved flag bits are set, or JSON and BINARY together.
    BadFlags { flags: u8 },
}

impl DecodeError {
    /// The wire error code a server answers this with.
    pub const fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooShort { .. }
            | DecodeError::TooLarge { .. }
            | DecodeError::BadFlags { .. } => ErrorCode::InvalidFrame,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownType { .. } => ErrorCode::UnknownMessageType,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::TooShort { length } => write!(
                f,
                "frame length {length} is below the minimum of 3; the length counts version, type and flags too"
            ),
            DecodeError::TooLarge { length, max } => write!(
                f,
                "frame length {length} exceeds the maximum of {max} bytes; send smaller frames"
            ),
            DecodeError::UnsupportedVersion { version } => write!(
                f,
                "protocol version {version} is not supported; this server speaks version {VERSION}"
            ),
            DecodeError::UnknownType { kind } => write!(
                f,
                "message type {kind} is unknown; version 1 defines types 1 to 6"
            ),
            DecodeError::BadFlags { flags } => write!(
                f,
                "flags 0x{flags:02x} are invalid; bits 2-7 are reserved and JSON (0x01) excludes BINARY (0x02)"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Parses the first frame of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed, `Ok(Some((frame, n)))` when
/// the frame is complete and took `n` bytes, and an error as soon as the bytes
/// present prove the stream invalid. `max_length` bounds the `length` field.
pub fn parse_frame(buf: &[u8], max_length: u32) -> Result<Option<(Frame<'_>, usize)>, DecodeError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else {
        return Ok(None);
    };
    let length = u32::from_be_bytes(*prefix);
    if length < MIN_LENGTH {
        return Err(DecodeError::TooShort { length });
    }
    if length > max_length {
        return Err(DecodeError::TooLarge {
            length,
            max: max_length,
        });
    }
    if let Some(&version) = buf.get(4)
        && version != VERSION
    {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let kind = match buf.get(5) {
        None => return Ok(None),
        Some(&byte) => MessageType::from_u8(byte).ok_or(DecodeError::UnknownType { kind: byte })?,
    };
    let flags = match buf.get(6) {
        None => return Ok(None),
        Some(&byte) => Flags::from_bits(byte).ok_or(DecodeError::BadFlags { flags: byte })?,
    };
    let total = LENGTH_PREFIX + length as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = Frame {
        kind,
        flags,
        payload: &buf[HEADER_LEN..total],
    };
    Ok(Some((frame, total)))
}

/// The smallest read buffer offered.
const MIN_READ: usize = 4 * 1024;
/// The largest read buffer offered beyond what a pending frame needs: "one
/// read" in the decoder's memory bound. Large enough that a busy publisher's
/// frames arrive in few reads (a server relays each read as one batch).
pub const MAX_READ: usize = 256 * 1024;

/// An incremental frame decoder for one direction of one connection.
///
/// Feed it bytes in any split, either by copying ([`Decoder::feed`]) or by
/// reading straight into its buffer ([`Decoder::read_buf`] then
/// [`Decoder::commit`]), and take frames with [`Decoder::next_frame`] until it
/// returns `Ok(None)`. It holds at most one maximum frame plus one read, and
/// once it has reported an error it reports that error forever.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes received; `buf[start..end]` are not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How much to offer the next read; grows while reads fill it.
    read_size: usize,
    /// How much the last [`Decoder::read_buf`] offered.
    offered: usize,
    max_length: u32,
    failed: Option<DecodeError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(crate::frame::DEFAULT_MAX_FRAME)
    }
}

impl Decoder {
    /// A decoder that refuses frames whose `length` exceeds `max_length`.
    pub fn new(max_length: u32) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            read_size: MIN_READ,
            offered: 0,
            max_length,
            failed: None,
        }
    }

    /// The largest `length` this decoder accepts.
    pub fn max_length(&self) -> u32 {
        self.max_length
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes of memory the decoder holds.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Frees the buffer if nothing is pending, so an idle connection costs
    /// nothing; the next read allocates again.
    pub fn release_if_empty(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.read_size = MIN_READ;
        }
    }

    /// Copies `bytes` in. Take the frames out before feeding more, or the
    /// decoder holds them all.
    ///
    /// The buffer grows at most once per call, to what `bytes` needs, so
    /// feeding pieces of up to one read keeps the decoder within one maximum
    /// frame plus one read.
    pub fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.read_buf().len() < bytes.len() {
            self.ensure_space(bytes.len());
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Free space to read into; pass the count read to [`Decoder::commit`].
    ///
    /// Never empty. Its size adapts: small while reads are small, larger while
    /// they fill it, and larger while a big frame is arriving. It grows with
    /// the bytes that actually arrived, never with the length a frame
    /// declares: a pending frame is offered at most as much again as has
    /// already been received of it (at least one read), so a peer that sends
    /// a header announcing the maximum and then nothing costs one read, not
    /// one maximum frame.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = self.end - self.start;
        let pending_total = match self.buf.get(self.start..self.end) {
            Some(bytes) if bytes.len() >= LENGTH_PREFIX => {
                let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                LENGTH_PREFIX + length.min(self.max_length) as usize
            }
            _ => 0,
        };
        let lacking = pending_total.saturating_sub(pending);
        let want = lacking.min(pending.max(self.read_size)).max(self.read_size);
        self.ensure_space(want);
        // Offer no more than wanted even if the buffer is larger (it grew
        // for an earlier big frame): one read never brings in more than one
        // frame's remainder or one read's worth.
        self.offered = want;
        let end = self.end + want;
        &mut self.buf[self.end..end]
    }

    /// Makes at least `want` bytes free after the pending ones: moves the
    /// pending bytes to the front if that is not enough, and grows the buffer
    /// to exactly what is needed if that is not enough either.
    fn ensure_space(&mut self, want: usize) {
        if self.buf.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let needed = self.end + want;
        if self.buf.len() < needed {
            // Exact, so the buffer never holds more than the bound says
            // (`resize` alone may double the allocation).
            self.buf.reserve_exact(needed - self.buf.len());
            self.buf.resize(needed, 0);
        }
    }

    /// Records that `n` bytes were written at the front of [`Decoder::read_buf`].
    pub fn commit(&mut self, n: usize) {
        let n = n.min(self.buf.len() - self.end);
        // A read that filled what was offered may have had more waiting.
        if n >= self.offered && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        self.end += n;
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the
    /// error that makes the rest of the stream meaningless.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, DecodeError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let parsed = parse_frame(&self.buf[self.start..self.end], self.max_length);
        match parsed {
            Err(error) => {
                self.failed = Some(error);
                Err(error)
            }
            Ok(None) => Ok(None),
            Ok(Some((frame, consumed))) => {
                let (kind, flags) = (frame.kind, frame.flags);
                let begin = self.start;
                self.start += consumed;
                Ok(Some(Frame {
                    kind,
                    flags,
                    payload: &self.buf[begin + HEADER_LEN..begin + consumed],
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(kind: MessageType, flags: Flags, payload: &[u8]) -> Vec<u8> {
        Frame::new(kind, flags, payload).to_vec().unwrap()
    }

    #[test]
    fn every_prefix_of_a_valid_frame_is_partial() {
        let bytes = frame_bytes(
            MessageType::Message,
            Flags::JSON,
            br#"{"room":"a","content":1}"#,
        );
        for cut in 0..bytes.len() {
            assert_eq!(
                parse_frame(&bytes[..cut], 1024),
                Ok(None),
                "prefix of {cut} bytes"
            );
        }
        let (frame, used) = parse_frame(&bytes, 1024).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(frame.payload, br#"{"room":"a","content":1}"#);
    }

    #[test]
    fn length_is_judged_before_the_body_arrives() {
        assert_eq!(
            parse_frame(&[0, 0, 0, 2], 100),
            Err(DecodeError::TooShort { length: 2 })
        );
        assert_eq!(
            parse_frame(&[0, 0, 0, 101], 100),
            Err(DecodeError::TooLarge {
                length: 101,
                max: 100
            })
        );
        assert_eq!(parse_frame(&[0, 0, 0, 100], 100), Ok(None));
    }

    #[test]
    fn header_bytes_are_checked_as_they_arrive() {
        assert_eq!(
            parse_frame(&[0, 0, 0, 9, 2], 100),
            Err(DecodeError::UnsupportedVersion { version: 2 })
        );
        assert_eq!(
            parse_frame(&[0, 0, 0, 9, 1, 8], 100),
            Err(DecodeError::UnknownType { kind: 8 })
        );
        assert_eq!(
            parse_frame(&[0, 0, 0, 9, 1, 4, 0x04], 100),
            Err(DecodeError::BadFlags { flags: 4 })
        );
    }

    #[test]
    fn decoder_yields_frames_fed_one_byte_at_a_time() {
        let mut stream = frame_bytes(MessageType::Hello, Flags::JSON, b"{}");
        stream.extend(frame_bytes(MessageType::Heartbeat, Flags::NONE, b""));
        let mut decoder = Decoder::new(1024);
        let mut kinds = Vec::new();
        for byte in &stream {
            decoder.feed(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().unwrap() {
                kinds.push(frame.kind);
            }
        }
        assert_eq!(kinds, [MessageType::Hello, MessageType::Heartbeat]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn decoder_does_not_allocate_for_a_declared_length() {
        let mut decoder = Decoder::new(u32::MAX);
        decoder.feed(&[0xff, 0xff, 0xff, 0xf0, 1, 4, 1]);
        assert_eq!(decoder.next_frame(), Ok(None));
        // The next read is offered one read's worth, not the declared 4 GiB.
        assert!(decoder.read_buf().len() <= MAX_READ);
        assert!(decoder.capacity() <= MAX_READ + HEADER_LEN);
    }

    #[test]
    fn a_header_alone_does_not_pin_a_maximum_frame() {
        let mut decoder = Decoder::default();
        let mut header = crate::frame::DEFAULT_MAX_FRAME.to_be_bytes().to_vec();
        header.extend_from_slice(&[1, 4, 2]);
        decoder.feed(&header);
        assert_eq!(decoder.next_frame(), Ok(None));
        let offered = decoder.read_buf().len();
        assert!(
            offered <= MAX_READ,
            "offered {offered} bytes for a 7-byte header"
        );
        assert!(decoder.capacity() <= MAX_READ + HEADER_LEN);
    }

    #[test]
    fn a_large_frame_read_in_full_reads_grows_geometrically() {
        // A reader that fills every buffer it is offered: the buffer doubles
        // with what arrived, so a maximum frame needs few reallocations.
        let max = crate::frame::DEFAULT_MAX_FRAME;
        let frame = frame_bytes(
            MessageType::Message,
            Flags::BINARY,
            &vec![3u8; max as usize - 3],
        );
        let mut decoder = Decoder::new(max);
        let mut rest = &frame[..];
        let mut reads = 0;
        while !rest.is_empty() {
            let space = decoder.read_buf();
            let n = space.len().min(rest.len());
            space[..n].copy_from_slice(&rest[..n]);
            decoder.commit(n);
            rest = &rest[n..];
            reads += 1;
        }
        assert!(reads <= 16, "{reads} reads for one maximum frame");
        assert!(decoder.capacity() <= frame.len() + MAX_READ);
        assert_eq!(
            decoder.next_frame().unwrap().unwrap().payload.len(),
            max as usize - 3
        );
    }

    #[test]
    fn decoder_buffer_stays_below_one_frame_plus_one_read() {
        let max = 256 * 1024;
        let frame = frame_bytes(
            MessageType::Message,
            Flags::BINARY,
            &vec![7u8; max as usize - 3],
        );
        let mut decoder = Decoder::new(max);
        for chunk in frame.chunks(1000) {
            decoder.feed(chunk);
            assert!(decoder.capacity() <= frame.len() + MAX_READ);
        }
        assert_eq!(
            decoder.next_frame().unwrap().unwrap().payload.len(),
            max as usize - 3
        );
    }

    #[test]
    fn decoder_errors_stick() {
        let mut decoder = Decoder::new(1024);
        decoder.feed(&[0, 0, 0, 1]);
        assert!(decoder.next_frame().is_err());
        decoder.feed(&frame_bytes(MessageType::Hello, Flags::JSON, b"{}"));
        assert_eq!(
            decoder.next_frame(),
            Err(DecodeError::TooShort { length: 1 })
        );
    }

    #[test]
    fn reads_that_fill_the_offer_grow_it_to_the_maximum() {
        let mut decoder = Decoder::new(u32::MAX);
        // One big frame first, so the buffer is larger than a read.
        let big = frame_bytes(
            MessageType::Heartbeat,
            Flags::BINARY,
            &vec![1u8; 300 * 1024],
        );
        decoder.feed(&big);
        assert!(decoder.next_frame().unwrap().is_some());
        let mut offered = Vec::new();
        for _ in 0..8 {
            let space = decoder.read_buf();
            offered.push(space.len());
            let n = space.len();
            space.fill(0xff);
            decoder.commit(n);
            // Discard what was "read": it is not a valid stream.
            decoder = Decoder {
                failed: None,
                start: decoder.end,
                ..decoder
            };
        }
        assert!(offered.windows(2).all(|w| w[1] >= w[0]), "{offered:?}");
        assert_eq!(*offered.last().unwrap(), MAX_READ, "{offered:?}");
    }
}
