//! What a typed line means.

/// The command names, for `help` and tab completion.
pub const NAMES: [&str; 8] = [
    "join",
    "send",
    "leave",
    "rooms",
    "heartbeat",
    "help",
    "quit",
    "exit",
];

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `join <room>`: join (or switch to) a room.
    Join(String),
    /// `send <message>`, or any line that is not a command: send to the
    /// current room.
    Send(String),
    /// `leave [room]`: leave the given room, or the current one.
    Leave(Option<String>),
    /// `rooms`: list the rooms joined.
    Rooms,
    /// `heartbeat`: measure the round-trip time.
    Heartbeat,
    Help,
    /// `quit` or `exit`.
    Quit,
    /// An empty line.
    Nothing,
    /// A command used wrongly; the text says how to use it.
    Usage(&'static str),
    /// `/something` that names no command.
    Unknown(String),
}

impl Command {
    /// Reads a line. Commands may be written with a leading `/` (`/join x`).
    /// `rooms`, `heartbeat`, `help`, `quit` and `exit` take no argument, so a
    /// line such as "help me" is an ordinary message.
    pub fn parse(line: &str) -> Command {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Command::Nothing;
        }
        let (slash, body) = match trimmed.strip_prefix('/') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let (word, rest) = match body.split_once(char::is_whitespace) {
            Some((word, rest)) => (word, rest.trim()),
            None => (body, ""),
        };
        match (word, rest.is_empty()) {
            ("join", true) => Command::Usage("usage: join <room>"),
            ("join", false) => Command::Join(rest.to_owned()),
            ("send", true) => Command::Usage("usage: send <message>"),
            ("send", false) => Command::Send(rest.to_owned()),
            ("leave", true) => Command::Leave(None),
            ("leave", false) => Command::Leave(Some(rest.to_owned())),
            ("rooms", true) => Command::Rooms,
            ("heartbeat", true) => Command::Heartbeat,
            ("help", true) => Command::Help,
            ("quit" | "exit", true) => Command::Quit,
            _ if slash => Command::Unknown(word.to_owned()),
            _ => Command::Send(trimmed.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_plain_lines() {
        let table = [
            ("join physics", Command::Join("physics".into())),
            ("  join   my room  ", Command::Join("my room".into())),
            ("/join x", Command::Join("x".into())),
            ("join", Command::Usage("usage: join <room>")),
            ("send hi there", Command::Send("hi there".into())),
            ("send", Command::Usage("usage: send <message>")),
            ("leave", Command::Leave(None)),
            ("leave chem", Command::Leave(Some("chem".into()))),
            ("rooms", Command::Rooms),
            ("heartbeat", Command::Heartbeat),
            ("help", Command::Help),
            ("quit", Command::Quit),
            ("/exit", Command::Quit),
            ("", Command::Nothing),
            ("   ", Command::Nothing),
            ("hello world", Command::Send("hello world".into())),
            ("help me please", Command::Send("help me please".into())),
            ("/dance now", Command::Unknown("dance".into())),
            ("/", Command::Unknown(String::new())),
        ];
        for (line, expected) in table {
            assert_eq!(Command::parse(line), expected, "line {line:?}");
        }
    }
}
