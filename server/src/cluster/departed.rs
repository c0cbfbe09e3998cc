//! The other side of `roster`: a node that is gone named its members in a
//! room, and this node tells its own members of that room that they left,
//! as a `userLeft` each (SPEC.md 14.3).
//!
//! What comes from Redis is checked like socket input: a departure that
//! does not parse, names a room badly, lists more than [`MAX_LEFT`]
//! members or has a member that is not a connection id and a user is
//! dropped and counted as malformed, never trusted in part.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use protocol::{MAX_USER_ID_LEN, MemberChange, MemberEvent, MessageType};
use serde::Deserialize;

use super::Dropped;
use crate::conn::outbound::Batch;
use crate::logging::{CLUSTER, throttled};
use crate::shared::Shared;

/// The most members one departure names: `roster::TELL_CHUNK` in one room.
const MAX_LEFT: usize = super::roster::TELL_CHUNK;

/// One room's share of a departure, as `roster` publishes it.
#[derive(Debug, Deserialize)]
struct Departure {
    node: String,
    room: String,
    /// `[connectionId, "=user" or ""]` each.
    left: Vec<(String, String)>,
}

/// Why a departure was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Malformed {
    Json(String),
    Room,
    TooMany(usize),
    Member,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Json(error) => write!(
                f,
                "departure that is not the layout this node writes: {error}"
            ),
            Malformed::Room => f.write_str("departure naming a room no client could have joined"),
            Malformed::TooMany(n) => write!(
                f,
                "departure naming {n} members, over the {MAX_LEFT} one message holds"
            ),
            Malformed::Member => {
                f.write_str("departure naming something that is not a connection id and a user")
            }
        }
    }
}

/// The node, the room and the `userLeft` frames of one departure, or why
/// it is refused.
fn events(payload: &[u8], now_ms: u64) -> Result<(String, String, Vec<u8>), Malformed> {
    let departure: Departure =
        serde_json::from_slice(payload).map_err(|error| Malformed::Json(error.to_string()))?;
    if protocol::validate_room(&departure.room).ok() != Some(departure.room.as_str()) {
        return Err(Malformed::Room);
    }
    if departure.left.len() > MAX_LEFT {
        return Err(Malformed::TooMany(departure.left.len()));
    }
    let mut bytes = Vec::new();
    for (connection_id, user) in departure.left {
        let valid_id = connection_id.strip_prefix('c').is_some_and(|n| {
            !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit())
        });
        let user = match user.strip_prefix('=') {
            None if user.is_empty() => None,
            Some(user) if user.len() <= MAX_USER_ID_LEN && !user.chars().any(char::is_control) => {
                Some(user.to_owned())
            }
            _ => return Err(Malformed::Member),
        };
        if !valid_id {
            return Err(Malformed::Member);
        }
        let event = MemberEvent {
            change: MemberChange::Left,
            room: departure.room.clone(),
            connection_id,
            user,
            timestamp: now_ms,
        };
        protocol::encode_json(&mut bytes, MessageType::Message, &event)
            .map_err(|error| Malformed::Json(error.to_string()))?;
    }
    Ok((departure.node, departure.room, bytes))
}

/// Tells this node's members of the departure's room.
pub(super) fn receive(shared: &Shared, payload: &[u8]) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let (node, room, bytes) = match events(payload, now_ms()) {
        Ok(events) => events,
        Err(error) => {
            cluster.counters.dropped(Dropped::Malformed);
            throttled!(CLUSTER, WARN, "cluster: {error}; dropped");
            return;
        }
    };
    // This node, declared gone while alive: its own members are here.
    if bytes.is_empty() || *node == *cluster.node {
        return;
    }
    let batch = Arc::new(Batch::new(bytes, None));
    let frames = u64::from(batch.frames);
    let mut touched = Vec::new();
    let told = shared.rooms.tell_remote(
        &room,
        &batch,
        shared.config.stall_timeout,
        &shared.counters,
        &mut touched,
    );
    if told {
        cluster
            .counters
            .departed_left
            .fetch_add(frames, Ordering::Relaxed);
    }
    for member in touched.drain(..) {
        member.flush_now(&shared.counters);
    }
}

/// Milliseconds since the Unix epoch, for the events' `timestamp`.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(bytes: &[u8]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (frame, used) = protocol::parse_frame(&bytes[at..], 1 << 20)
                .unwrap()
                .unwrap();
            out.push(serde_json::from_slice(frame.payload).unwrap());
            at += used;
        }
        out
    }

    #[test]
    fn a_departure_becomes_one_user_left_per_member() {
        let payload = br#"{"node":"a","room":"lobby","left":[["c7","=ann"],["c8",""],["c9","="]]}"#;
        let (node, room, bytes) = events(payload, 5).unwrap();
        assert_eq!((&*node, &*room), ("a", "lobby"));
        let events = users(&bytes);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0],
            serde_json::json!({"type":"userLeft","room":"lobby","connectionId":"c7","user":"ann","timestamp":5})
        );
        assert!(events[1].get("user").is_none(), "{}", events[1]);
        assert_eq!(events[2]["user"], "", "an empty userId stays one");
    }

    #[test]
    fn what_does_not_fit_the_layout_is_refused_whole() {
        for bad in [
            &br#"{"node":"a","room":"lobby","left":[["x7","=ann"]]}"#[..],
            br#"{"node":"a","room":"lobby","left":[["c7","ann"]]}"#,
            br#"{"node":"a","room":"lobby","left":[["c7","=a\u0007"]]}"#,
            br#"{"node":"a","room":"","left":[]}"#,
            br#"{"node":"a","room":" lobby","left":[]}"#,
            br#"{"node":"a","room":"lobby"}"#,
            b"not json",
        ] {
            assert!(events(bad, 0).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many: Vec<_> = (0..=MAX_LEFT)
            .map(|n| (format!("c{n}"), String::new()))
            .collect();
        let payload = serde_json::json!({"node":"a","room":"r","left":many}).to_string();
        assert_eq!(
            events(payload.as_bytes(), 0).err(),
            Some(Malformed::TooMany(MAX_LEFT + 1))
        );
    }
}
