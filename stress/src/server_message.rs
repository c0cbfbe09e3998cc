//! Telling a server's MESSAGE frames apart: a delivered message, or a member
//! event (`userJoined` / `userLeft`). Chaos and the swarm both decide here,
//! so they count member events alike.
//!
//! The decision is `protocol::ServerMessage`'s: by the `type` key, which a
//! delivery never has, wherever it is in the object (SPEC 3.0: a client must
//! not depend on the order of the server's keys).

use protocol::{Flags, ServerMessage};

/// Parses a MESSAGE payload the server sent.
pub fn parse(flags: Flags, payload: &[u8]) -> Result<ServerMessage<'_>, String> {
    if !flags.is_json() {
        return Err("a MESSAGE without the JSON flag".to_owned());
    }
    ServerMessage::parse(payload)
        .map_err(|e| format!("neither a delivery nor a member event ({e})"))
}

/// Whether a MESSAGE payload is a member event.
pub fn is_member_event(flags: Flags, payload: &[u8]) -> bool {
    matches!(parse(flags, payload), Ok(ServerMessage::Member(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_events_are_told_by_their_type_key_in_any_place() {
        let joined = br#"{"type":"userJoined","room":"r","connectionId":"c5","timestamp":1}"#;
        let left_type_last = br#"{"room":"r","connectionId":"c6","timestamp":2,"type":"userLeft"}"#;
        assert!(is_member_event(Flags::JSON, joined));
        assert!(is_member_event(Flags::JSON, left_type_last));
        assert!(!is_member_event(Flags::NONE, joined));
    }

    #[test]
    fn a_delivery_is_not_a_member_event() {
        let delivery = br#"{"room":"r","from":"c1","content":{"type":"userJoined"},"timestamp":1}"#;
        assert!(!is_member_event(Flags::JSON, delivery));
        assert!(matches!(
            parse(Flags::JSON, delivery),
            Ok(ServerMessage::Delivery(d)) if d.from == "c1"
        ));
        assert!(parse(Flags::JSON, b"{\"room\":").is_err());
    }
}
