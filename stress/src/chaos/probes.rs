//! Misbehaving on purpose: malformed frames on a joined session, and a
//! connection that skips HELLO. Each must get exactly its ERROR, and a close
//! when the error is fatal.

use std::time::Instant;

use protocol::{ErrorCode, Flags, MessageType};
use serde_json::json;

use super::REPLY_TIMEOUT;
use super::connection::{Broken, Live};
use super::model::{BadOutcome, World, bump};
use crate::rng::Rng;
use crate::wire::{Conn, json_frame, raw_frame, room_frame};

/// The malformed frames a client sends: (name, bytes, expected code).
fn malformed_frames(max_frame: u32) -> Vec<(&'static str, Vec<u8>, ErrorCode)> {
    let mut too_long = Vec::new();
    too_long.extend_from_slice(&(max_frame + 1).to_be_bytes());
    vec![
        (
            "blank room",
            room_frame(MessageType::JoinRoom, "   "),
            ErrorCode::InvalidRoom,
        ),
        (
            "65-byte room",
            room_frame(MessageType::JoinRoom, &"r".repeat(65)),
            ErrorCode::InvalidRoom,
        ),
        (
            "JOIN without room",
            json_frame(MessageType::JoinRoom, &json!({"name": "x"})),
            ErrorCode::InvalidPayload,
        ),
        (
            "JOIN without the JSON flag",
            raw_frame(MessageType::JoinRoom, Flags::NONE, br#"{"room":"x"}"#),
            ErrorCode::InvalidPayload,
        ),
        (
            "MESSAGE without content",
            json_frame(MessageType::Message, &json!({"room": "chaos-0"})),
            ErrorCode::InvalidPayload,
        ),
        (
            "MESSAGE to a room not joined",
            json_frame(
                MessageType::Message,
                &json!({"room": "chaos-nobody", "content": 1}),
            ),
            ErrorCode::NotInRoom,
        ),
        ("length 2", vec![0, 0, 0, 2], ErrorCode::InvalidFrame),
        (
            "JSON and BINARY flags",
            vec![0, 0, 0, 3, 1, 5, 3],
            ErrorCode::InvalidFrame,
        ),
        (
            "version 2",
            vec![0, 0, 0, 3, 2, 5, 0],
            ErrorCode::UnsupportedVersion,
        ),
        (
            "type 9",
            vec![0, 0, 0, 3, 1, 9, 0],
            ErrorCode::UnknownMessageType,
        ),
        (
            "invalid JSON",
            raw_frame(MessageType::Message, Flags::JSON, br#"{"room":"chaos-0","#),
            ErrorCode::ParseError,
        ),
        ("maxFrameSize + 1", too_long, ErrorCode::InvalidFrame),
    ]
}

/// Sends one malformed frame and checks the answer. Returns whether the
/// session is still usable.
pub(super) fn send_malformed(
    live: &mut Live,
    rng: &mut Rng,
    world: &World,
) -> std::result::Result<(), Broken> {
    let frames = malformed_frames(protocol::DEFAULT_MAX_FRAME);
    let (kind, bytes, code) = &frames[rng.below(frames.len() as u64) as usize];
    // A MESSAGE to chaos-0 without content needs no membership to be refused
    // as INVALID_PAYLOAD... unless the server checks membership first; keep it
    // unambiguous by only sending it when joined to chaos-0.
    if *kind == "MESSAGE without content" && !live.joined.contains(&0) {
        return Ok(());
    }
    bump(&world.counters.malformed);
    *live
        .session
        .expecting_error
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(*code);
    let sent = Instant::now();
    if code.is_fatal() {
        live.mark_all_left(sent);
    }
    let mut outcome = BadOutcome {
        kind,
        expected: *code,
        problem: None,
    };
    let result = (|| {
        live.write(bytes)?;
        let reply = live.reply(&format!("the malformed frame ({kind})"))?;
        let error = serde_json::from_slice::<protocol::ErrorPayload>(&reply.payload).ok();
        match error {
            Some(e) if reply.kind == MessageType::Error && e.code == *code => {
                if e.fatal != code.is_fatal() {
                    outcome.problem = Some(format!("{code} came with fatal={}", e.fatal));
                }
            }
            _ => {
                outcome.problem = Some(format!(
                    "expected ERROR {code}, got {} {}",
                    reply.kind,
                    String::from_utf8_lossy(&reply.payload)
                ))
            }
        }
        if code.is_fatal() {
            if !live.wait_closed(REPLY_TIMEOUT) {
                outcome.problem = Some(format!("no close after fatal {code}"));
            }
            return Err(Broken::Closed);
        }
        Ok(())
    })();
    if let Err(Broken::Closed) = &result
        && !code.is_fatal()
        && outcome.problem.is_none()
    {
        outcome.problem = Some(format!("closed after non-fatal {code}"));
    }
    if let Err(Broken::Failed) = &result
        && outcome.problem.is_none()
    {
        outcome.problem = Some("no answer".into());
    }
    live.session.lock().bad.push(outcome);
    result
}

/// A fresh connection that skips HELLO must get HELLO_REQUIRED and a close.
pub(super) fn no_hello(world: &World) -> Option<String> {
    bump(&world.counters.no_hello);
    let outcome = (|| -> std::result::Result<(), String> {
        let mut conn = Conn::connect(world.addrs[0]).map_err(|e| e.to_string())?;
        conn.write_raw(&room_frame(MessageType::JoinRoom, "chaos-0"))
            .map_err(|e| e.to_string())?;
        let frame = conn
            .recv(REPLY_TIMEOUT)
            .map_err(|e| format!("waiting for HELLO_REQUIRED: {e}"))?;
        match frame.error() {
            Some(e) if e.code == ErrorCode::HelloRequired && e.fatal => {}
            _ => {
                return Err(format!(
                    "expected HELLO_REQUIRED, got {} {}",
                    frame.kind,
                    frame.text()
                ));
            }
        }
        conn.until_eof(REPLY_TIMEOUT).map_err(|e| e.to_string())?;
        Ok(())
    })();
    outcome.err()
}
