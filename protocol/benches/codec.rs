//! Encode and decode throughput of the codec, in frames/s and bytes/s, for
//! small (64-byte payload) and large (64 KiB payload) frames.
//!
//! Each case is measured twice, once with `Throughput::Elements` (frames/s)
//! and once with `Throughput::Bytes` (bytes/s, counting whole frames on the
//! wire, header included), because criterion reports one throughput per
//! benchmark.
//!
//! ```text
//! cargo bench -p protocol -- --warm-up-time 1 --measurement-time 3
//! ```

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use protocol::{
    Decoder, Delivery, Flags, Frame, MessageType, Request, abort_frame, begin_frame, end_frame,
    parse_frame,
};
use serde_json::value::RawValue;

/// Payload sizes measured: a chat-sized message and a 64 KiB blob.
const SIZES: [(&str, usize); 2] = [("64B", 64), ("64KiB", 64 * 1024)];

/// Bytes per simulated socket read when decoding a stream.
const READ: usize = 64 * 1024;

/// About this many bytes of frames in each decoded stream.
const STREAM_BYTES: usize = 4 * 1024 * 1024;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// The two throughputs of `frames` frames taking `bytes` bytes.
fn throughputs(frames: u64, bytes: u64) -> [(&'static str, Throughput); 2] {
    [
        ("frames", Throughput::Elements(frames)),
        ("bytes", Throughput::Bytes(bytes)),
    ]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, size) in SIZES {
        let payload = payload(size);
        let frame = Frame::new(MessageType::Message, Flags::BINARY, &payload);
        let mut out = Vec::with_capacity(frame.encoded_len());
        for (unit, throughput) in throughputs(1, frame.encoded_len() as u64) {
            group.throughput(throughput);
            group.bench_function(BenchmarkId::new(unit, name), |b| {
                b.iter(|| {
                    out.clear();
                    black_box(&frame).encode(&mut out).expect("the frame fits");
                    black_box(out.len())
                });
            });
        }
    }
    group.finish();
}

/// The server's hot path: a JSON delivery serialized straight into the
/// frame buffer with begin_frame / end_frame.
fn encode_delivery(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_delivery_json");
    for (name, size) in SIZES {
        let text = format!("\"{}\"", "x".repeat(size - 2));
        let content = RawValue::from_string(text).expect("valid JSON");
        let delivery = Delivery {
            room: Cow::Borrowed("physics"),
            from: Cow::Borrowed("c1234"),
            user: Some(Cow::Borrowed("alice")),
            content: &content,
            timestamp: 1_700_000_000_000,
            seq: Some(1_234_567),
            epoch: Some(Cow::Borrowed("9f86d081884c7d65")),
        };
        let mut out = Vec::new();
        let start = begin_frame(&mut out, MessageType::Message, Flags::JSON);
        serde_json::to_writer(&mut out, &delivery).expect("serializes");
        end_frame(&mut out, start).expect("fits");
        for (unit, throughput) in throughputs(1, out.len() as u64) {
            group.throughput(throughput);
            group.bench_function(BenchmarkId::new(unit, name), |b| {
                b.iter(|| {
                    out.clear();
                    let start = begin_frame(&mut out, MessageType::Message, Flags::JSON);
                    if serde_json::to_writer(&mut out, black_box(&delivery)).is_err() {
                        abort_frame(&mut out, start);
                    } else {
                        end_frame(&mut out, start).expect("fits");
                    }
                    black_box(out.len())
                });
            });
        }
    }
    group.finish();
}

/// One frame from one buffer with `parse_frame`.
fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, size) in SIZES {
        let bytes = Frame::new(MessageType::Message, Flags::BINARY, &payload(size))
            .to_vec()
            .expect("fits");
        for (unit, throughput) in throughputs(1, bytes.len() as u64) {
            group.throughput(throughput);
            group.bench_function(BenchmarkId::new(unit, name), |b| {
                b.iter(|| {
                    let (frame, used) = parse_frame(black_box(&bytes), protocol::DEFAULT_MAX_FRAME)
                        .expect("valid")
                        .expect("complete");
                    black_box((frame.payload.len(), used))
                });
            });
        }
    }
    group.finish();
}

/// A stream of many frames (about 4 MiB) through a [`Decoder`], read the
/// way a socket reader does: 64 KiB reads into `read_buf`, `commit`, then
/// every complete frame taken out.
fn decode_stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_stream");
    for (name, size) in SIZES {
        let payload = payload(size);
        let frame = Frame::new(MessageType::Message, Flags::BINARY, &payload);
        let count = STREAM_BYTES / frame.encoded_len();
        let mut stream = Vec::with_capacity(count * frame.encoded_len());
        for _ in 0..count {
            frame.encode(&mut stream).expect("fits");
        }
        let mut decoder = Decoder::default();
        for (unit, throughput) in throughputs(count as u64, stream.len() as u64) {
            group.throughput(throughput);
            group.bench_function(BenchmarkId::new(unit, name), |b| {
                b.iter(|| {
                    let mut decoded = 0usize;
                    let mut rest = black_box(&stream[..]);
                    while !rest.is_empty() {
                        let space = decoder.read_buf();
                        let n = space.len().min(rest.len()).min(READ);
                        space[..n].copy_from_slice(&rest[..n]);
                        decoder.commit(n);
                        rest = &rest[n..];
                        while let Some(frame) = decoder.next_frame().expect("valid stream") {
                            decoded += frame.payload.len();
                        }
                    }
                    assert_eq!(decoded, count * size);
                    black_box(decoded)
                });
            });
        }
    }
    group.finish();
}

/// A client MESSAGE read into a request, as the server does for each frame.
fn parse_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_request_message_json");
    for (name, size) in SIZES {
        let payload = format!(
            r#"{{"room":"physics","content":"{}"}}"#,
            "x".repeat(size.saturating_sub(31))
        );
        let frame = Frame::json(MessageType::Message, payload.as_bytes());
        for (unit, throughput) in throughputs(1, frame.encoded_len() as u64) {
            group.throughput(throughput);
            group.bench_function(BenchmarkId::new(unit, name), |b| {
                b.iter(|| {
                    let request = Request::parse(black_box(&frame)).expect("valid");
                    black_box(matches!(request, Request::Publish { .. }))
                });
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    encode,
    encode_delivery,
    decode,
    decode_stream,
    parse_request
);
criterion_main!(benches);
