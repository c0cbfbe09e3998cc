//! What a typed line means: a line that starts with `/` is a command, and
//! every other line is a message. There are no bare command words, so
//! `join us at 5 for lunch` and `jion chemistry` are both messages, and a
//! mistyped `/jion chemistry` is an error instead of a broadcast.

/// The command names, for `/help` and tab completion.
pub const NAMES: [&str; 11] = [
    "join", "leave", "who", "rooms", "ping", "send", "msg", "dm", "help", "quit", "exit",
];

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/join <room> [--history N]`: join (or switch to) a room, first
    /// showing up to N of its kept messages.
    Join {
        room: String,
        history: Option<u64>,
    },
    /// A line that is not a command, `/send <message>`, or `//text` (which
    /// sends `/text`): send to the current room.
    Send(String),
    /// `/leave [room]`: leave the given room, or the current one.
    Leave(Option<String>),
    /// `/who [room]`: the members of a room (default: the current one).
    Who(Option<String>),
    /// `/msg <user> <message>` (also `/dm`): a direct message to every
    /// connection of a user.
    Direct {
        user: String,
        text: String,
    },
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
            ("join", true) => Command::Usage(JOIN_USAGE),
            ("join", false) => join(rest),
            ("msg" | "dm", _) => match rest.split_once(char::is_whitespace) {
                Some((user, text)) if !text.trim().is_empty() => Command::Direct {
                    user: user.to_owned(),
                    text: text.trim().to_owned(),
                },
                _ => Command::Usage("usage: /msg <user> <message>"),
            },
            ("send", true) => Command::Usage("usage: /send <message>"),
            ("send", false) => Command::Send(rest.to_owned()),
            ("leave", true) => Command::Leave(None),
            ("leave", false) => Command::Leave(Some(rest.to_owned())),
            ("who", true) => Command::Who(None),
            ("who", false) => Command::Who(Some(rest.to_owned())),
            ("rooms", true) => Command::Rooms,
            ("ping" | "heartbeat", true) => Command::Ping,
            ("help", true) => Command::Help,
            ("quit" | "exit", true) => Command::Quit,
            ("rooms" | "ping" | "heartbeat" | "help" | "quit" | "exit", false) => {
                Command::Usage("that command takes no argument; see /help")
            }
            _ => Command::Unknown(word.to_owned()),
        }
    }
}

const JOIN_USAGE: &str = "usage: /join <room> [--history N]";

/// `/join <room> [--history N]`: the option is the last two words, so a room
/// name may have spaces in it (but cannot end in `--history N`).
fn join(rest: &str) -> Command {
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [.., "--history"] => Command::Usage(JOIN_USAGE),
        [room @ .., "--history", n] if !room.is_empty() => match n.parse() {
            Ok(n) => Command::Join {
                room: room.join(" "),
                history: Some(n),
            },
            Err(_) => Command::Usage("/join: --history takes a number of messages"),
        },
        ["--history", _] | [] => Command::Usage(JOIN_USAGE),
        _ => Command::Join {
            room: rest.to_owned(),
            history: None,
        },
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

    fn join_(room: &str, history: Option<u64>) -> Command {
        Command::Join {
            room: room.into(),
            history,
        }
    }

    #[test]
    fn a_slash_makes_a_command_and_anything_else_is_a_message() {
        let table = [
            ("/join physics", join_("physics", None)),
            ("  /join   my room  ", join_("my room", None)),
            ("/join news --history 5", join_("news", Some(5))),
            ("/join my  room --history 0", join_("my room", Some(0))),
            ("/join --history 5", Command::Usage(JOIN_USAGE)),
            ("/join news --history", Command::Usage(JOIN_USAGE)),
            (
                "/join news --history x",
                Command::Usage("/join: --history takes a number of messages"),
            ),
            ("/join", Command::Usage(JOIN_USAGE)),
            (
                "/msg bob hi there",
                Command::Direct {
                    user: "bob".into(),
                    text: "hi there".into(),
                },
            ),
            (
                "/dm bob hi",
                Command::Direct {
                    user: "bob".into(),
                    text: "hi".into(),
                },
            ),
            ("/msg bob", Command::Usage("usage: /msg <user> <message>")),
            ("/msg", Command::Usage("usage: /msg <user> <message>")),
            ("/send hi there", Command::Send("hi there".into())),
            ("/send", Command::Usage("usage: /send <message>")),
            ("//etc/hosts", Command::Send("/etc/hosts".into())),
            ("/leave", Command::Leave(None)),
            ("/leave chem", Command::Leave(Some("chem".into()))),
            ("/who", Command::Who(None)),
            ("/who physics", Command::Who(Some("physics".into()))),
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
