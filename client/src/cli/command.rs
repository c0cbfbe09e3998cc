//! What a typed line means: a line that starts with `/` is a command, and
//! every other line is a message. There are no bare command words, so
//! `join us at 5 for lunch` and `jion chemistry` are both messages, and a
//! mistyped `/jion chemistry` is an error instead of a broadcast.

/// The command names, for `/help` and tab completion.
pub const NAMES: [&str; 9] = [
    "join", "leave", "who", "rooms", "ping", "send", "help", "quit", "exit",
];

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/join <room>`: join (or switch to) a room.
    Join(String),
    /// A line that is not a command, `/send <message>`, or `//text` (which
    /// sends `/text`): send to the current room.
    Send(String),
    /// `/leave [room]`: leave the given room, or the current one.
    Leave(Option<String>),
    /// `/who`: what is known of the current room's members.
    Who,
    /// `/rooms`: list the rooms joined.
    Rooms,
    /// `/ping` (also `/heartbeat`): measure the round-trip time.
    Ping,
    Help,
    /// `/quit` or `/exit`.
    Quit,
    /// An empty line.
    Nothing,
    /// A command used wrongly; the text says how to use it.
    Usage(&'static str),
    /// `/something` that names no command.
    Unknown(String),
}

impl Command {
    pub fn parse(line: &str) -> Command {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Command::Nothing;
        }
        let Some(body) = trimmed.strip_prefix('/') else {
            return Command::Send(trimmed.to_owned());
        };
        if body.starts_with('/') {
            return Command::Send(body.to_owned());
        }
        let (word, rest) = match body.split_once(char::is_whitespace) {
            Some((word, rest)) => (word, rest.trim()),
            None => (body, ""),
        };
        match (word, rest.is_empty()) {
            ("join", true) => Command::Usage("usage: /join <room>"),
            ("join", false) => Command::Join(rest.to_owned()),
            ("send", true) => Command::Usage("usage: /send <message>"),
            ("send", false) => Command::Send(rest.to_owned()),
            ("leave", true) => Command::Leave(None),
            ("leave", false) => Command::Leave(Some(rest.to_owned())),
            ("who", true) => Command::Who,
            ("rooms", true) => Command::Rooms,
            ("ping" | "heartbeat", true) => Command::Ping,
            ("help", true) => Command::Help,
            ("quit" | "exit", true) => Command::Quit,
            ("who" | "rooms" | "ping" | "heartbeat" | "help" | "quit" | "exit", false) => {
                Command::Usage("that command takes no argument; see /help")
            }
            _ => Command::Unknown(word.to_owned()),
        }
    }
}

/// Whether a message line starts with a command's name (`join physics`):
/// it is sent as written, and the chat says once how commands are typed.
pub fn looks_like_a_command(line: &str) -> bool {
    let word = line.split_whitespace().next().unwrap_or("");
    NAMES.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slash_makes_a_command_and_anything_else_is_a_message() {
        let table = [
            ("/join physics", Command::Join("physics".into())),
            ("  /join   my room  ", Command::Join("my room".into())),
            ("/join", Command::Usage("usage: /join <room>")),
            ("/send hi there", Command::Send("hi there".into())),
            ("/send", Command::Usage("usage: /send <message>")),
            ("//etc/hosts", Command::Send("/etc/hosts".into())),
            ("/leave", Command::Leave(None)),
            ("/leave chem", Command::Leave(Some("chem".into()))),
            ("/who", Command::Who),
            ("/rooms", Command::Rooms),
            ("/ping", Command::Ping),
            ("/heartbeat", Command::Ping),
            ("/help", Command::Help),
            ("/quit", Command::Quit),
            ("/exit", Command::Quit),
            (
                "/quit now",
                Command::Usage("that command takes no argument; see /help"),
            ),
            ("", Command::Nothing),
            ("   ", Command::Nothing),
            ("hello world", Command::Send("hello world".into())),
            // The lines that used to be taken for commands.
            (
                "join us at 5 for lunch",
                Command::Send("join us at 5 for lunch".into()),
            ),
            ("jion chemistry", Command::Send("jion chemistry".into())),
            ("quit", Command::Send("quit".into())),
            ("help me please", Command::Send("help me please".into())),
            ("/jion chemistry", Command::Unknown("jion".into())),
            ("/", Command::Unknown(String::new())),
        ];
        for (line, expected) in table {
            assert_eq!(Command::parse(line), expected, "line {line:?}");
        }
    }

    #[test]
    fn messages_that_start_like_commands_are_noticed() {
        assert!(looks_like_a_command("join us at 5"));
        assert!(looks_like_a_command("quit"));
        assert!(!looks_like_a_command("jion chemistry"));
        assert!(!looks_like_a_command("hello"));
    }
}
