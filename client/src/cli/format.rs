//! How events and notices look on screen.
//!
//! ```text
//! [physics] alice (14:03:07): hello
//! [physics] * bob joined
//! error: NOT_IN_ROOM: not a member of room "x"
//! disconnected: server closed the connection: SHUTTING_DOWN: server is shutting down
//! ```
//!
//! Times are UTC. Text from the network is passed through [`clean`], so a peer
//! cannot move the cursor or recolour the terminal.

use std::io::IsTerminal;
use std::time::Duration;

use client::{Body, DirectMessage, Gap, MemberChange, MemberEvent, Message};

/// Whether to colour output, decided once.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const CYAN: &str = "\x1b[36m";

impl Style {
    /// Colour only when both standard output and standard error are a
    /// terminal (messages go to one, status lines to the other), and never
    /// when `NO_COLOR` is set (non-empty).
    pub fn detect() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    /// `[room] user (HH:MM:SS): content`. A delivery without a time (every
    /// binary one; all of the original server's) shows when it arrived.
    pub fn message(&self, message: &Message) -> String {
        let time = hms(message.timestamp.unwrap_or_else(now_ms));
        let content = match &message.body {
            Body::Binary(bytes) => self.paint(DIM, &binary_preview(bytes)),
            json => body_text(json),
        };
        format!(
            "{} {} {}: {content}",
            self.paint(CYAN, &format!("[{}]", clean(&message.room))),
            self.paint(BOLD, &clean(message.sender())),
            self.paint(DIM, &format!("({time})")),
        )
    }

    /// `[room] * who joined` / `[room] * who left`.
    pub fn member(&self, event: &MemberEvent) -> String {
        let verb = match event.change {
            MemberChange::Joined => "joined",
            MemberChange::Left => "left",
        };
        format!(
            "{} {}",
            self.paint(CYAN, &format!("[{}]", clean(&event.room))),
            self.paint(DIM, &format!("* {} {verb}", clean(event.who()))),
        )
    }

    /// An error line: `error: ...`, in red.
    pub fn error(&self, text: &str) -> String {
        format!("{} {}", self.paint(RED, "error:"), text)
    }

    /// `disconnected: <reason>`, in red.
    pub fn disconnected(&self, reason: &str) -> String {
        format!("{} {reason}", self.paint(RED, "disconnected:"))
    }

    /// `[room] 16 messages missed (seq 42–57)`, in red: what a recovery
    /// could not bring back, said before the messages after it.
    pub fn gap(&self, gap: &Gap) -> String {
        format!(
            "{} {}",
            self.paint(CYAN, &format!("[{}]", clean(&gap.room))),
            self.paint(RED, &gap_text(gap)),
        )
    }

    /// `[direct] alice (HH:MM:SS): content`: set apart from room messages
    /// because only this user (or connection) got it.
    pub fn direct(&self, direct: &DirectMessage) -> String {
        let time = hms(direct.timestamp.unwrap_or_else(now_ms));
        let sender = direct.user.as_deref().unwrap_or(&direct.from);
        format!(
            "{} {} {}: {}",
            self.paint(RED, "[direct]"),
            self.paint(BOLD, &clean(sender)),
            self.paint(DIM, &format!("({time})")),
            body_text(&direct.body),
        )
    }

    /// A notice about this client's own state (joined, left, ...).
    pub fn notice(&self, text: &str) -> String {
        self.paint(GREEN, text)
    }
}

/// A JSON body as text: a string as itself, any other value as JSON.
fn body_text(body: &Body) -> String {
    match body {
        Body::Json(raw) => match body.as_text() {
            Some(text) => clean(&text),
            None => clean(raw.get()),
        },
        Body::Binary(bytes) => binary_preview(bytes),
    }
}

/// What a gap notice means, in words: `16 messages missed (seq 42–57)`,
/// and `history restarted: earlier messages are gone` when the room's
/// sequence started over (SPEC.md 3.13).
pub fn gap_text(gap: &Gap) -> String {
    let mut parts = Vec::new();
    if gap.previous_epoch.is_some() {
        parts.push("history restarted: earlier messages are gone".to_owned());
    }
    if let (Some(from), Some(to)) = (gap.from, gap.to) {
        let n = to.saturating_sub(from).saturating_add(1);
        let s = if n == 1 { "" } else { "s" };
        let range = if from == to {
            format!("seq {from}")
        } else {
            format!("seq {from}\u{2013}{to}")
        };
        parts.push(format!("{n} message{s} missed ({range})"));
    }
    if parts.is_empty() {
        parts.push("messages missed".to_owned());
    }
    parts.join("; ")
}

/// A gap notice as one line of JSON, as the server sent it:
/// `{"type":"gap","room":..,"epoch":..,"from":..,"to":..}`.
pub fn json_gap(gap: &Gap) -> String {
    serde_json::to_string(gap).unwrap_or_default()
}

/// A direct message as one line of JSON:
/// `{"type":"direct","from":..,"user":..,"timestamp":..,"content":..}`.
pub fn json_direct(direct: &DirectMessage) -> String {
    let mut line = serde_json::json!({
        "type": "direct",
        "from": direct.from,
        "user": direct.user,
        "timestamp": direct.timestamp,
    });
    put_content(&mut line, &direct.body);
    line.to_string()
}

fn put_content(line: &mut serde_json::Value, body: &Body) {
    use base64::Engine;
    match body {
        Body::Json(raw) => {
            // Through a Value so the line stays one line whatever the
            // publisher's white space.
            let content: serde_json::Value =
                serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null);
            line["content"] = content;
        }
        Body::Binary(bytes) => {
            line["content"] =
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
            line["binary"] = serde_json::Value::Bool(true);
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How many bytes of a binary message the preview shows.
const PREVIEW_BYTES: usize = 16;

/// `binary, 5 bytes: "hello"` when the bytes are UTF-8 text, else
/// `binary, 300 bytes: 00 01 fe ff ... (hex)`, the first
/// [`PREVIEW_BYTES`] of them.
pub fn binary_preview(bytes: &[u8]) -> String {
    let size = match bytes.len() {
        1 => "1 byte".to_owned(),
        n => format!("{n} bytes"),
    };
    if bytes.is_empty() {
        return format!("binary, {size}");
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let mut shown: String = text.chars().take(PREVIEW_BYTES * 4).collect();
        if shown.len() < text.len() {
            shown.push_str("...");
        }
        return format!("binary, {size}, UTF-8: \"{}\"", clean(&shown));
    }
    let hex: Vec<String> = bytes
        .iter()
        .take(PREVIEW_BYTES)
        .map(|b| format!("{b:02x}"))
        .collect();
    let more = if bytes.len() > PREVIEW_BYTES {
        " ..."
    } else {
        ""
    };
    format!("binary, {size}: {}{more} (hex)", hex.join(" "))
}

/// A message as one line of JSON: `room`, `from`, `user` (null when the
/// publisher gave none), `content` (the JSON as published; binary content
/// as base64, with `"binary":true`) and `timestamp` (milliseconds since the
/// Unix epoch, null when the server sent none).
pub fn json_message(message: &Message) -> String {
    let mut line = serde_json::json!({
        "room": message.room,
        "from": message.from,
        "user": message.user,
        "timestamp": message.timestamp,
    });
    // A server that numbers messages gives every delivery its place: a
    // script can resume from it, or check it saw each one.
    if let Some(position) = &message.position {
        line["seq"] = position.seq.into();
        line["epoch"] = position.epoch.clone().into();
    }
    put_content(&mut line, &message.body);
    line.to_string()
}

/// A member event as one line of JSON, named as in the protocol:
/// `{"type":"userJoined","room":..,"connectionId":..,"user":..,"timestamp":..}`.
pub fn json_member(event: &MemberEvent) -> String {
    let kind = match event.change {
        MemberChange::Joined => "userJoined",
        MemberChange::Left => "userLeft",
    };
    serde_json::json!({
        "type": kind,
        "room": event.room,
        "connectionId": event.connection_id,
        "user": event.user,
        "timestamp": event.timestamp,
    })
    .to_string()
}

/// The content alone: a string as its text, other JSON as JSON text, and
/// binary content as its bytes.
pub fn raw_content(message: &Message) -> Vec<u8> {
    raw_body(&message.body)
}

/// A body's bytes as written: a JSON string's text, else the JSON or the
/// binary content.
pub fn raw_body(body: &Body) -> Vec<u8> {
    match body {
        Body::Json(raw) => match body.as_text() {
            Some(text) => text.into_bytes(),
            None => raw.get().as_bytes().to_vec(),
        },
        Body::Binary(bytes) => bytes.clone(),
    }
}

/// `HH:MM:SS` (UTC) of a time in milliseconds since the Unix epoch.
pub fn hms(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// A duration as a round-trip time: `0.42 ms`, `12.3 ms`, `1.20 s`.
pub fn rtt(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// Text from the network made safe to print: control characters (escape,
/// newline, ...) are shown escaped instead of acting on the terminal.
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_hours_minutes_seconds() {
        assert_eq!(hms(0), "00:00:00");
        // 2024-01-01T13:45:07.999Z
        assert_eq!(hms(1_704_116_707_999), "13:45:07");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("plain é"), "plain é");
        assert_eq!(clean("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
    }

    #[test]
    fn messages_format_without_colour() {
        let style = Style { color: false };
        let message = Message {
            room: "physics".into(),
            from: "c3".into(),
            user: None,
            body: Body::Json(
                serde_json::value::RawValue::from_string("\"hi\"".into()).expect("valid JSON"),
            ),
            timestamp: Some(1_704_116_707_000),
            position: None,
        };
        assert_eq!(style.message(&message), "[physics] c3 (13:45:07): hi");
        let json = Message {
            body: Body::Json(
                serde_json::value::RawValue::from_string(r#"{"x":1}"#.into()).expect("valid JSON"),
            ),
            user: Some("alice".into()),
            ..message
        };
        assert_eq!(
            style.message(&json),
            r#"[physics] alice (13:45:07): {"x":1}"#
        );
        let line: serde_json::Value =
            serde_json::from_str(&json_message(&json)).expect("one JSON object");
        assert_eq!(
            line,
            serde_json::json!({"room":"physics","from":"c3","user":"alice",
                "content":{"x":1},"timestamp":1_704_116_707_000_u64})
        );
        let binary = Message {
            body: Body::Binary(vec![0, 1, 0xfe, 0xff]),
            user: None,
            timestamp: None,
            ..json
        };
        let line: serde_json::Value =
            serde_json::from_str(&json_message(&binary)).expect("one JSON object");
        assert_eq!(
            line,
            serde_json::json!({"room":"physics","from":"c3","user":null,
                "content":"AAH+/w==","binary":true,"timestamp":null})
        );
        assert!(
            style
                .message(&binary)
                .ends_with("): binary, 4 bytes: 00 01 fe ff (hex)")
        );
        assert_eq!(raw_content(&binary), [0, 1, 0xfe, 0xff]);
    }

    #[test]
    fn binary_previews_show_size_and_text_or_hex() {
        assert_eq!(binary_preview(b""), "binary, 0 bytes");
        assert_eq!(binary_preview(b"a"), "binary, 1 byte, UTF-8: \"a\"");
        assert_eq!(
            binary_preview(b"line\n"),
            "binary, 5 bytes, UTF-8: \"line\\n\""
        );
        let long: Vec<u8> = (0..=255).collect();
        assert_eq!(
            binary_preview(&long),
            "binary, 256 bytes: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f ... (hex)"
        );
    }

    #[test]
    fn rtts_read_well() {
        assert_eq!(rtt(Duration::from_micros(420)), "0.42 ms");
        assert_eq!(rtt(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(rtt(Duration::from_millis(1200)), "1.20 s");
    }
}
