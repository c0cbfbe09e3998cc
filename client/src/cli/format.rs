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

use client::{Body, MemberChange, MemberEvent, Message};

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
    /// Colour only on a terminal, and never when `NO_COLOR` is set (non-empty).
    pub fn detect() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    /// `[room] user (HH:MM:SS): content`.
    pub fn message(&self, message: &Message) -> String {
        let time = message
            .timestamp
            .map(hms)
            .unwrap_or_else(|| "--:--:--".into());
        let content = match &message.body {
            Body::Json(raw) => match message.body.as_text() {
                Some(text) => clean(&text),
                None => clean(raw.get()),
            },
            Body::Binary(bytes) => format!("<{} bytes of binary data>", bytes.len()),
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

    /// A notice about this client's own state (joined, left, ...).
    pub fn notice(&self, text: &str) -> String {
        self.paint(GREEN, text)
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
    }

    #[test]
    fn rtts_read_well() {
        assert_eq!(rtt(Duration::from_micros(420)), "0.42 ms");
        assert_eq!(rtt(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(rtt(Duration::from_millis(1200)), "1.20 s");
    }
}
