//! Arbitrary bytes, cut into arbitrary pieces, through the incremental
//! decoder (both its feed and its read_buf/commit paths) and every payload
//! parser. Nothing may panic, both paths must agree with `parse_frame` on the
//! whole buffer, and the decoder must stay within one maximum frame plus one
//! read.
//!
//! Input: byte 0 picks the maximum frame length, byte 1 how the stream is
//! cut, bytes 2-3 seed the cut lengths; the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{
    BinaryDelivery, BinaryPublish, DecodeError, Decoder, ErrorPayload, Flags, Frame, HelloReply,
    MessageType, Request, RoomReply, ServerMessage, parse_frame, validate_room,
};

const MAXIMA: [u32; 5] = [3, 16, 300, 70_000, protocol::DEFAULT_MAX_FRAME];
const ONE_READ: usize = protocol::decoder::MAX_READ;

type Decoded = (MessageType, Flags, Vec<u8>);

/// The stream cut into pieces whose lengths come from a small PRNG.
fn pieces(stream: &[u8], mode: u8, seed: u16) -> Vec<&[u8]> {
    let limit = match mode % 6 {
        0 => 1,
        1 => 3,
        2 => 8,
        3 => 100,
        4 => 5000,
        _ => ONE_READ,
    };
    let mut state = u32::from(seed) | 0x1_0000;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % limit + 1).min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// The whole buffer, frame by frame, with `parse_frame`.
fn reference(stream: &[u8], max: u32) -> (Vec<Decoded>, Option<DecodeError>, usize) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        match parse_frame(rest, max) {
            Ok(Some((frame, used))) => {
                assert!(used >= 7 && used <= rest.len());
                frames.push((frame.kind, frame.flags, frame.payload.to_vec()));
                rest = &rest[used..];
            }
            Ok(None) => return (frames, None, rest.len()),
            Err(error) => return (frames, Some(error), rest.len()),
        }
    }
}

struct Outcome {
    frames: Vec<Decoded>,
    error: Option<DecodeError>,
    buffered: usize,
}

fn drain(decoder: &mut Decoder, frames: &mut Vec<Decoded>) -> Result<(), DecodeError> {
    while let Some(frame) = decoder.next_frame()? {
        frames.push((frame.kind, frame.flags, frame.payload.to_vec()));
    }
    Ok(())
}

fn by_feed(pieces: &[&[u8]], max: u32) -> Outcome {
    let mut decoder = Decoder::new(max);
    let mut frames = Vec::new();
    for piece in pieces {
        decoder.feed(piece);
        assert!(decoder.capacity() <= 4 + max as usize + ONE_READ);
        if let Err(error) = drain(&mut decoder, &mut frames) {
            // Errors stick.
            assert_eq!(decoder.next_frame(), Err(error));
            return Outcome {
                frames,
                error: Some(error),
                buffered: decoder.buffered(),
            };
        }
    }
    Outcome {
        frames,
        error: None,
        buffered: decoder.buffered(),
    }
}

fn by_read_buf(pieces: &[&[u8]], max: u32) -> Outcome {
    let mut decoder = Decoder::new(max);
    let mut frames = Vec::new();
    for piece in pieces {
        let mut ready = *piece;
        while !ready.is_empty() {
            let space = decoder.read_buf();
            assert!(!space.is_empty());
            let n = space.len().min(ready.len());
            space[..n].copy_from_slice(&ready[..n]);
            decoder.commit(n);
            ready = &ready[n..];
            assert!(decoder.capacity() <= 4 + max as usize + ONE_READ);
            if let Err(error) = drain(&mut decoder, &mut frames) {
                return Outcome {
                    frames,
                    error: Some(error),
                    buffered: decoder.buffered(),
                };
            }
            if decoder.buffered() == 0 {
                decoder.release_if_empty();
            }
        }
    }
    Outcome {
        frames,
        error: None,
        buffered: decoder.buffered(),
    }
}

/// Every parser a server or client runs on a frame; none may panic, and what
/// they accept must obey the rules.
fn parse_payloads(kind: MessageType, flags: Flags, payload: &[u8]) {
    let frame = Frame::new(kind, flags, payload);
    match Request::parse(&frame) {
        Ok(Request::Join { room, .. } | Request::Leave { room, .. }) => {
            assert_eq!(validate_room(&room), Ok(&*room));
        }
        Ok(Request::Publish { room, .. }) => assert_eq!(validate_room(&room), Ok(&*room)),
        Ok(Request::Hello(hello)) => {
            assert!(hello
                .user_id
                .is_none_or(|user| user.len() <= 128 && !user.chars().any(char::is_control)));
        }
        Ok(_) => {}
        Err(error) => {
            assert!(!error.message.is_empty());
            // What an ERROR would say stays short, whatever the input.
            let payload = protocol::ErrorPayload::new(error.code, error.message);
            assert!(payload.message.len() <= protocol::MAX_ERROR_MESSAGE);
        }
    }
    let _ = ServerMessage::parse(payload);
    let _ = serde_json::from_slice::<HelloReply>(payload);
    let _ = serde_json::from_slice::<RoomReply>(payload);
    let _ = serde_json::from_slice::<ErrorPayload>(payload);
    if let Ok(delivery) = BinaryDelivery::parse(payload) {
        let mut again = Vec::new();
        delivery
            .encode(&mut again)
            .expect("names came from one-byte lengths");
        assert_eq!(again, payload);
    }
    if let Ok(publish) = BinaryPublish::parse(payload) {
        let mut again = Vec::new();
        publish
            .encode(&mut again)
            .expect("the room came from a one-byte length");
        assert_eq!(again, payload);
    }
    // Whatever decoded re-encodes to the same bytes.
    let bytes = frame.to_vec().expect("decoded frames fit");
    assert_eq!(
        parse_frame(&bytes, u32::MAX),
        Ok(Some((frame, bytes.len())))
    );
}

fuzz_target!(|data: &[u8]| {
    let [max_pick, mode, seed_hi, seed_lo, stream @ ..] = data else {
        return;
    };
    let max = MAXIMA[*max_pick as usize % MAXIMA.len()];
    let pieces = pieces(stream, *mode, u16::from_be_bytes([*seed_hi, *seed_lo]));

    let (frames, error, rest) = reference(stream, max);
    for outcome in [by_feed(&pieces, max), by_read_buf(&pieces, max)] {
        assert!(outcome.frames == frames, "frames differ from parse_frame");
        assert_eq!(outcome.error, error);
        if error.is_none() {
            assert_eq!(outcome.buffered, rest);
        }
    }
    for (kind, flags, payload) in &frames {
        parse_payloads(*kind, *flags, payload);
    }
});
