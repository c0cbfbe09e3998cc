//! fragmentation: the server must reassemble frames however TCP splits them.
//!
//! Every case writes a known stream of frames in chosen pieces and checks the
//! server's answers byte for byte: JOIN and LEAVE acks name the room sent, a
//! HEARTBEAT comes back with the exact payload and flags, and with `echo` on
//! every MESSAGE (JSON and BINARY) comes back to its sender with the exact
//! content. A pause between pieces makes each piece its own TCP segment.

use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use protocol::{
    BinaryDelivery, BinaryPublish, Delivery, ErrorCode, Flags, Hello, MessageType, RoomReply,
};
use serde_json::json;

use crate::error::Result;
use crate::report::Report;
use crate::rng::Rng;
use crate::target::{Target, TargetOptions};
use crate::wire::{Conn, OwnedFrame, RecvError, json_frame, raw_frame, room_frame};

/// Settings of a fragmentation run.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: TargetOptions,
    /// Seed of the random chunking; `None` picks one from the clock.
    pub seed: Option<u64>,
    /// Pause between pieces, so each piece leaves as its own segment.
    pub pause: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: TargetOptions::default(),
            seed: None,
            pause: Duration::from_millis(1),
        }
    }
}

const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer the server must give, in order.
#[derive(Debug, Clone)]
enum Expect {
    Hello,
    Join(String),
    Leave(String),
    /// A JSON delivery of our own message with exactly this content text.
    Json {
        room: String,
        content: String,
    },
    /// A BINARY delivery of our own message with exactly this body.
    Binary {
        room: String,
        body: Vec<u8>,
    },
    Heartbeat {
        flags: Flags,
        payload: Vec<u8>,
    },
    Error(ErrorCode),
}

/// A stream of frames and the answers it must produce.
#[derive(Debug, Default, Clone)]
struct Script {
    bytes: Vec<u8>,
    /// Where each frame starts in `bytes`.
    starts: Vec<usize>,
    expect: Vec<Expect>,
}

impl Script {
    fn push(&mut self, frame: Vec<u8>, expect: Expect) {
        self.starts.push(self.bytes.len());
        self.bytes.extend_from_slice(&frame);
        self.expect.push(expect);
    }

    fn hello(&mut self) {
        let hello = Hello {
            echo: true,
            client_version: Some("stress-fragmentation".into()),
            ..Hello::default()
        };
        self.push(json_frame(MessageType::Hello, &hello), Expect::Hello);
    }

    /// JOIN, a JSON message, a HEARTBEAT, a BINARY message and LEAVE, all
    /// with contents unique to `tag`.
    fn probe(&mut self, room: &str, tag: &str) {
        self.push(
            room_frame(MessageType::JoinRoom, room),
            Expect::Join(room.into()),
        );
        let content =
            json!({"case": tag, "text": "fragmented \u{e9}t\u{e9} \u{1f600}", "n": [1, 2.5, null]})
                .to_string();
        let publish = format!(r#"{{"room":{},"content":{content}}}"#, json!(room));
        self.push(
            raw_frame(MessageType::Message, Flags::JSON, publish.as_bytes()),
            Expect::Json {
                room: room.into(),
                content,
            },
        );
        let payload: Vec<u8> = tag.bytes().chain((0..=255u8).rev()).collect();
        self.push(
            raw_frame(MessageType::Heartbeat, Flags::NONE, &payload),
            Expect::Heartbeat {
                flags: Flags::NONE,
                payload,
            },
        );
        let body: Vec<u8> = (0..300u32)
            .map(|i| (i * 7) as u8)
            .chain(tag.bytes())
            .collect();
        let mut binary = Vec::new();
        let _ = BinaryPublish { room, body: &body }.encode(&mut binary);
        self.push(
            raw_frame(MessageType::Message, Flags::BINARY, &binary),
            Expect::Binary {
                room: room.into(),
                body,
            },
        );
        self.push(
            room_frame(MessageType::LeaveRoom, room),
            Expect::Leave(room.into()),
        );
    }

    /// The end offset of every frame.
    fn ends(&self) -> Vec<usize> {
        let mut ends: Vec<usize> = self.starts[1..].to_vec();
        ends.push(self.bytes.len());
        ends
    }
}

/// Checks one answer against what was expected.
fn check_answer(conn: &mut Conn, expect: &Expect) -> std::result::Result<(), String> {
    let frame = loop {
        let frame = conn
            .recv(ANSWER_TIMEOUT)
            .map_err(|e| format!("waiting for {}: {e}", describe(expect)))?;
        // Skip membership events (there should be none: we are alone).
        if frame.kind == MessageType::Message
            && frame.flags.is_json()
            && frame.payload.starts_with(b"{\"type\"")
        {
            continue;
        }
        break frame;
    };
    let wrong = |frame: &OwnedFrame| {
        format!(
            "expected {}, got {} flags {:?} {:.200}",
            describe(expect),
            frame.kind,
            frame.flags,
            frame.text()
        )
    };
    match expect {
        Expect::Hello => {
            if frame.kind != MessageType::Hello {
                return Err(wrong(&frame));
            }
            let reply: protocol::HelloReply =
                serde_json::from_slice(&frame.payload).map_err(|e| format!("HELLO answer: {e}"))?;
            conn.id = reply.connection_id;
            conn.max_frame = reply.max_frame_size;
        }
        Expect::Join(room) | Expect::Leave(room) => {
            let kind = if matches!(expect, Expect::Join(_)) {
                MessageType::JoinRoom
            } else {
                MessageType::LeaveRoom
            };
            if frame.kind != kind {
                return Err(wrong(&frame));
            }
            let reply: RoomReply = serde_json::from_slice(&frame.payload)
                .map_err(|e| format!("{kind} answer: {e}"))?;
            if &reply.room != room {
                return Err(format!(
                    "{kind} answer names room {:?}, sent {room:?}",
                    reply.room
                ));
            }
        }
        Expect::Json { room, content } => {
            if frame.kind != MessageType::Message || !frame.flags.is_json() {
                return Err(wrong(&frame));
            }
            let delivery: Delivery<'_> = serde_json::from_slice(&frame.payload)
                .map_err(|e| format!("delivery {}: {e}", frame.text()))?;
            if delivery.room != *room || delivery.from != conn.id {
                return Err(wrong(&frame));
            }
            if delivery.content.get() != content {
                return Err(format!(
                    "content changed: sent {content}, got {}",
                    delivery.content.get()
                ));
            }
        }
        Expect::Binary { room, body } => {
            if frame.kind != MessageType::Message || !frame.flags.is_binary() {
                return Err(wrong(&frame));
            }
            let delivery = BinaryDelivery::parse(&frame.payload)
                .map_err(|e| format!("binary delivery: {e}"))?;
            if delivery.room != room || delivery.from != conn.id || delivery.body != &body[..] {
                return Err(format!(
                    "binary delivery differs: room {:?}, from {:?}, {} body bytes (sent {})",
                    delivery.room,
                    delivery.from,
                    delivery.body.len(),
                    body.len()
                ));
            }
        }
        Expect::Heartbeat { flags, payload } => {
            if frame.kind != MessageType::Heartbeat {
                return Err(wrong(&frame));
            }
            if frame.flags != *flags || frame.payload != *payload {
                return Err(format!(
                    "HEARTBEAT echo differs: flags {:?} (sent {flags:?}), {} bytes (sent {})",
                    frame.flags,
                    frame.payload.len(),
                    payload.len()
                ));
            }
        }
        Expect::Error(code) => match frame.error() {
            Some(error) if error.code == *code && error.fatal == code.is_fatal() => {}
            _ => return Err(wrong(&frame)),
        },
    }
    Ok(())
}

fn describe(expect: &Expect) -> String {
    match expect {
        Expect::Hello => "the HELLO answer".into(),
        Expect::Join(room) => format!("the JOIN_ROOM ack for {room:?}"),
        Expect::Leave(room) => format!("the LEAVE_ROOM ack for {room:?}"),
        Expect::Json { .. } => "the echo of a JSON MESSAGE".into(),
        Expect::Binary { .. } => "the echo of a BINARY MESSAGE".into(),
        Expect::Heartbeat { payload, .. } => {
            format!("the HEARTBEAT echo ({} bytes)", payload.len())
        }
        Expect::Error(code) => format!("ERROR {code}"),
    }
}

fn check_all(conn: &mut Conn, expect: &[Expect]) -> std::result::Result<(), String> {
    expect.iter().try_for_each(|e| check_answer(conn, e))
}

/// Writes `bytes` cut at `cuts` (ascending offsets), pausing between pieces.
fn write_pieces(
    conn: &mut Conn,
    bytes: &[u8],
    cuts: &[usize],
    pause: Duration,
) -> std::result::Result<(), String> {
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        if cut <= from || cut > bytes.len() {
            continue;
        }
        conn.write_raw(&bytes[from..cut])
            .map_err(|e| e.to_string())?;
        from = cut;
        if cut < bytes.len() && !pause.is_zero() {
            sleep(pause);
        }
    }
    Ok(())
}

/// A connection that has said HELLO with echo on.
fn opened(addr: SocketAddr) -> std::result::Result<Conn, String> {
    let mut conn = Conn::connect(addr).map_err(|e| e.to_string())?;
    let mut script = Script::default();
    script.hello();
    conn.write_raw(&script.bytes).map_err(|e| e.to_string())?;
    check_all(&mut conn, &script.expect)?;
    Ok(conn)
}

/// One case's outcome: sub-checks made, or what went wrong.
type CaseResult = std::result::Result<u64, String>;

fn byte_by_byte(addr: SocketAddr, _: &mut Rng, _pause: Duration) -> CaseResult {
    let mut conn = Conn::connect(addr).map_err(|e| e.to_string())?;
    let mut script = Script::default();
    script.hello();
    script.probe("frag-bytes", "byte-by-byte");
    let cuts: Vec<usize> = (1..script.bytes.len()).collect();
    write_pieces(&mut conn, &script.bytes, &cuts, Duration::from_micros(50))?;
    check_all(&mut conn, &script.expect)?;
    Ok(script.expect.len() as u64)
}

fn split_at_header(addr: SocketAddr, _: &mut Rng, pause: Duration) -> CaseResult {
    let mut conn = opened(addr)?;
    let mut script = Script::default();
    script.probe("frag-header", "split-at-header");
    let cuts: Vec<usize> = script
        .starts
        .iter()
        .flat_map(|&s| [s, s + protocol::HEADER_LEN])
        .collect();
    write_pieces(&mut conn, &script.bytes, &cuts, pause)?;
    check_all(&mut conn, &script.expect)?;
    Ok(script.expect.len() as u64)
}

fn split_mid_payload(addr: SocketAddr, _: &mut Rng, pause: Duration) -> CaseResult {
    let mut conn = opened(addr)?;
    let mut script = Script::default();
    script.probe("frag-mid", "split-mid-payload");
    let ends = script.ends();
    let cuts: Vec<usize> = script
        .starts
        .iter()
        .zip(&ends)
        .flat_map(|(&s, &e)| [s, (s + protocol::HEADER_LEN + e) / 2])
        .collect();
    write_pieces(&mut conn, &script.bytes, &cuts, pause)?;
    check_all(&mut conn, &script.expect)?;
    Ok(script.expect.len() as u64)
}

fn frames_in_one_write(addr: SocketAddr, _: &mut Rng, _: Duration) -> CaseResult {
    let mut conn = opened(addr)?;
    let mut script = Script::default();
    for round in 0..5 {
        script.probe(&format!("frag-batch-{round}"), &format!("batch-{round}"));
    }
    conn.write_raw(&script.bytes).map_err(|e| e.to_string())?;
    check_all(&mut conn, &script.expect)?;
    Ok(script.expect.len() as u64)
}

fn random_chunking(addr: SocketAddr, rng: &mut Rng, _: Duration) -> CaseResult {
    let mut conn = opened(addr)?;
    let mut checks = 0;
    for round in 0..20 {
        let mut script = Script::default();
        script.probe(&format!("frag-random-{round}"), &format!("random-{round}"));
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < script.bytes.len() {
            at += rng.range(1, 64) as usize;
            cuts.push(at);
        }
        write_pieces(&mut conn, &script.bytes, &cuts, Duration::from_micros(200))?;
        check_all(&mut conn, &script.expect)?;
        checks += script.expect.len() as u64;
    }
    Ok(checks)
}

fn every_split_point(addr: SocketAddr, _: &mut Rng, pause: Duration) -> CaseResult {
    let mut conn = opened(addr)?;
    let mut script = Script::default();
    script.probe("frag-every", "every-split");
    let mut splits = 0;
    for cut in 1..script.bytes.len() {
        write_pieces(&mut conn, &script.bytes, &[cut], pause)
            .map_err(|e| format!("split at byte {cut}: {e}"))?;
        check_all(&mut conn, &script.expect).map_err(|e| format!("split at byte {cut}: {e}"))?;
        splits += 1;
    }
    Ok(splits)
}

fn splits_in_length_field(addr: SocketAddr, _: &mut Rng, pause: Duration) -> CaseResult {
    let mut conn = opened(addr)?;
    let mut script = Script::default();
    script.probe("frag-length", "length-field");
    let mut checks = 0;
    // Each single cut inside each frame's 4 length bytes.
    for &start in &script.starts {
        for offset in 1..protocol::LENGTH_PREFIX {
            write_pieces(&mut conn, &script.bytes, &[start + offset], pause)?;
            check_all(&mut conn, &script.expect)
                .map_err(|e| format!("cut {offset} bytes into the length at {start}: {e}"))?;
            checks += 1;
        }
    }
    // Every length byte alone, in every frame at once.
    let cuts: Vec<usize> = script
        .starts
        .iter()
        .flat_map(|&s| (0..=protocol::LENGTH_PREFIX).map(move |i| s + i))
        .collect();
    write_pieces(&mut conn, &script.bytes, &cuts, pause)?;
    check_all(&mut conn, &script.expect)?;
    Ok(checks + 1)
}

fn partial_after_complete(addr: SocketAddr, _: &mut Rng, _: Duration) -> CaseResult {
    let mut conn = opened(addr)?;
    let mut script = Script::default();
    script.probe("frag-trailing", "trailing-partial");
    // All frames but the last (LEAVE), plus half of the LEAVE, in one write.
    let last = *script.starts.last().unwrap_or(&0);
    let half = last + (script.bytes.len() - last) / 2;
    conn.write_raw(&script.bytes[..half])
        .map_err(|e| e.to_string())?;
    let (complete, trailing) = script.expect.split_at(script.expect.len() - 1);
    check_all(&mut conn, complete)
        .map_err(|e| format!("complete frames before a partial one went unanswered: {e}"))?;
    match conn.recv(Duration::from_millis(100)) {
        Err(RecvError::Timeout) => {}
        Ok(frame) => {
            return Err(format!(
                "answered a frame that was not complete yet: {} {}",
                frame.kind,
                frame.text()
            ));
        }
        Err(e) => return Err(format!("after a partial frame: {e}")),
    }
    conn.write_raw(&script.bytes[half..])
        .map_err(|e| e.to_string())?;
    check_all(&mut conn, trailing)?;
    Ok(script.expect.len() as u64 + 1)
}

fn maximum_frame(addr: SocketAddr, rng: &mut Rng, _: Duration) -> CaseResult {
    let mut conn = opened(addr)?;
    let max = conn.max_frame as usize;
    // length == max: a HEARTBEAT whose payload is max - 3 bytes.
    let payload: Vec<u8> = (0..max - 3).map(|_| rng.next_u64() as u8).collect();
    let frame = raw_frame(MessageType::Heartbeat, Flags::BINARY, &payload);
    if u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize != max {
        return Err("built the wrong length".into());
    }
    let mut cuts = Vec::new();
    let mut at = 0;
    while at < frame.len() {
        at += rng.range(1, 128 * 1024) as usize;
        cuts.push(at);
    }
    write_pieces(&mut conn, &frame, &cuts, Duration::ZERO)?;
    check_answer(
        &mut conn,
        &Expect::Heartbeat {
            flags: Flags::BINARY,
            payload,
        },
    )
    .map_err(|e| format!("frame of length {max} (= maxFrameSize): {e}"))?;
    // The connection still works after it.
    let mut script = Script::default();
    script.probe("frag-max", "after-max");
    conn.write_raw(&script.bytes).map_err(|e| e.to_string())?;
    check_all(&mut conn, &script.expect)?;
    Ok(1 + script.expect.len() as u64)
}

fn maximum_plus_one(addr: SocketAddr, _: &mut Rng, _: Duration) -> CaseResult {
    let mut conn = opened(addr)?;
    let too_long = conn.max_frame + 1;
    // The length field alone must be enough to refuse it.
    conn.write_raw(&too_long.to_be_bytes())
        .map_err(|e| e.to_string())?;
    check_answer(&mut conn, &Expect::Error(ErrorCode::InvalidFrame))
        .map_err(|e| format!("length {too_long} (= maxFrameSize + 1): {e}"))?;
    match conn.until_eof(ANSWER_TIMEOUT) {
        Ok(frames) if frames.is_empty() => Ok(2),
        Ok(frames) => Err(format!(
            "{} frames after a fatal INVALID_FRAME, first {}",
            frames.len(),
            frames[0].kind
        )),
        Err(e) => Err(format!("no close after a fatal INVALID_FRAME: {e}")),
    }
}

fn interleaved_connections(addr: SocketAddr, _: &mut Rng, pause: Duration) -> CaseResult {
    let mut a = opened(addr)?;
    let mut b = opened(addr)?;
    let mut script_a = Script::default();
    script_a.probe("frag-left", "interleaved-a");
    let mut script_b = Script::default();
    script_b.probe("frag-right", "interleaved-b");
    let (mut at_a, mut at_b) = (0, 0);
    while at_a < script_a.bytes.len() || at_b < script_b.bytes.len() {
        let next_a = (at_a + 5).min(script_a.bytes.len());
        let next_b = (at_b + 3).min(script_b.bytes.len());
        a.write_raw(&script_a.bytes[at_a..next_a])
            .map_err(|e| e.to_string())?;
        b.write_raw(&script_b.bytes[at_b..next_b])
            .map_err(|e| e.to_string())?;
        (at_a, at_b) = (next_a, next_b);
        sleep(pause / 4);
    }
    check_all(&mut a, &script_a.expect).map_err(|e| format!("first connection: {e}"))?;
    check_all(&mut b, &script_b.expect).map_err(|e| format!("second connection: {e}"))?;
    Ok((script_a.expect.len() + script_b.expect.len()) as u64)
}

type Case = fn(SocketAddr, &mut Rng, Duration) -> CaseResult;

/// Every case, by name.
const CASES: [(&str, Case); 11] = [
    ("byte by byte (HELLO included)", byte_by_byte),
    ("split at the header", split_at_header),
    ("split mid-payload", split_mid_payload),
    ("several frames in one write", frames_in_one_write),
    ("random chunking (20 rounds)", random_chunking),
    ("every split point of a 5-frame stream", every_split_point),
    ("splits inside the 4-byte length", splits_in_length_field),
    (
        "partial frame trailing complete ones",
        partial_after_complete,
    ),
    ("frame of exactly maxFrameSize", maximum_frame),
    (
        "maxFrameSize + 1 refused from the length alone",
        maximum_plus_one,
    ),
    (
        "two connections interleaving pieces",
        interleaved_connections,
    ),
];

/// Runs every case against the target.
pub fn run(options: &Options) -> Result<Report> {
    let target = Target::start(&options.target)?;
    let report = run_on(&target, options);
    target.stop();
    Ok(report)
}

/// Runs every case against a server that is already there.
pub fn run_on(target: &Target, options: &Options) -> Report {
    let seed = options.seed.unwrap_or_else(Rng::clock_seed);
    let mut rng = Rng::new(seed);
    let mut report = Report::new("fragmentation");
    report.line(format!("fragmentation against {}", target.describe()));
    let started = Instant::now();
    let mut cases = Vec::new();
    let mut passed = 0;
    for (name, case) in CASES {
        let case_started = Instant::now();
        let outcome = case(target.addr(), &mut rng, options.pause);
        let ms = case_started.elapsed().as_secs_f64() * 1000.0;
        match &outcome {
            Ok(checks) => {
                passed += 1;
                report.line(format!("  ok    {name} ({checks} checks, {ms:.0} ms)"));
            }
            Err(why) => {
                report.line(format!("  FAIL  {name}: {why}"));
                report.fail(format!("{name}: {why}"));
            }
        }
        cases.push(json!({
            "name": name,
            "passed": outcome.is_ok(),
            "checks": outcome.as_ref().ok(),
            "error": outcome.as_ref().err(),
            "ms": crate::report::round(ms, 1),
        }));
    }
    let total = CASES.len();
    report.line(format!("{passed}/{total} passed"));
    report.set("target", target.mode());
    report.set("seed", seed);
    report.set("pause_us", options.pause.as_micros() as u64);
    report.set("cases", cases);
    report.set("passed_cases", passed);
    report.set("total_cases", total);
    report.set(
        "seconds",
        crate::report::round(started.elapsed().as_secs_f64(), 3),
    );
    report
}
