//! The command line: global flags, the subcommands, and what they imply.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::address::{self, Endpoint, Given};
use super::exit;

/// Chat on a Relay server, or publish, subscribe and measure from scripts.
///
/// Without a subcommand (or with `chat`) it is the interactive client: on a
/// terminal a line editor with history (kept in $XDG_DATA_HOME/relay/history,
/// by default ~/.local/share/relay/history) and tab completion. Lines that
/// start with / are commands (/join ROOM, /leave, /who, /rooms, /help,
/// /quit); every other line is a message to the current room. When standard
/// input is not a terminal, each line is read the same way, messages arrive
/// on standard output, and status lines and errors on standard error.
///
/// Addresses: HOST, HOST:PORT, [::1]:4000, a bare PORT (this machine),
/// relay://HOST[:PORT] (port 4000 by default) or relays://HOST[:PORT] (TLS,
/// port 4443 by default). Message times are UTC.
#[derive(Debug, Parser)]
#[command(
    name = "relay",
    version,
    override_usage = "relay [OPTIONS] [ADDRESS [PORT]]   (the chat)\n       relay [OPTIONS] <COMMAND> [ARGS]",
    after_help = exit::HELP
)]
pub struct Args {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands' names: a first word that is none of them starts the
/// chat (`relay 127.0.0.1:4200` is `relay chat 127.0.0.1:4200`).
const SUBCOMMANDS: [&str; 6] = ["chat", "pub", "sub", "stats", "ping", "help"];

/// Global flags that take a value, for [`with_default_subcommand`].
const TAKES_VALUE: [&str; 8] = [
    "-s",
    "--server",
    "--ca",
    "--cert",
    "--key",
    "--name",
    "--token",
    "--connect-timeout",
];

/// The arguments with `chat` put before the first word that names no
/// subcommand, so `relay HOST PORT` and `relay -s HOST sub ROOM` both
/// parse: clap cannot have optional positionals beside subcommands without
/// one shadowing the other.
pub fn with_default_subcommand(
    argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut argv: Vec<std::ffi::OsString> = argv.into_iter().collect();
    let mut index = 1;
    while index < argv.len() {
        let Some(arg) = argv[index].to_str() else {
            break;
        };
        if arg == "--" {
            break;
        }
        if arg.starts_with('-') && arg.len() > 1 {
            index += if TAKES_VALUE.contains(&arg) { 2 } else { 1 };
            continue;
        }
        if !SUBCOMMANDS.contains(&arg) {
            argv.insert(index, "chat".into());
        }
        break;
    }
    argv
}

/// Flags every subcommand takes, before or after its name. Listed after a
/// subcommand's own flags in its help.
#[derive(Debug, clap::Args)]
#[command(next_display_order = 100)]
pub struct Global {
    /// The server to talk to (see Addresses above; default localhost:4000).
    #[arg(
        long,
        short = 's',
        global = true,
        env = "RELAY_SERVER",
        value_name = "ADDRESS"
    )]
    pub server: Option<String>,

    /// Speak TLS (the server's --tls-addr port).
    #[arg(long, global = true)]
    pub tls: bool,

    /// PEM file of the CA that signed the server's certificate (implies
    /// --tls); without it, the public web's CAs are trusted.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Client certificate (PEM) for a server that asks for one (mutual TLS);
    /// needs --key.
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// The private key of --cert (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// User name shown to others (default: your login name, else guest-NNNN).
    #[arg(long, global = true)]
    pub name: Option<String>,

    /// Token for a server that requires authentication (a static token or
    /// a JWT); the server then takes your name from it, and --name, if
    /// given, must match. Prefer RELAY_TOKEN: a flag shows in the process
    /// list.
    #[arg(long, global = true, env = "RELAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Also show your own messages, as the server relays them back.
    #[arg(long, global = true)]
    pub echo: bool,

    /// Print one JSON object a line: room, from, user, content, timestamp
    /// (binary content as base64, with "binary":true). With pub, the
    /// content is JSON text too.
    #[arg(long, global = true, conflicts_with = "raw")]
    pub json: bool,

    /// Print the content of each message only (binary content as it is).
    #[arg(long, global = true)]
    pub raw: bool,

    /// No status lines (connected, joined, ...); errors are still printed.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,

    /// When the connection is lost, connect again (backing off
    /// exponentially, with jitter) and rejoin the rooms (chat and sub).
    #[arg(long, global = true)]
    pub reconnect: bool,

    /// Seconds to wait for the connection and for each server answer; a
    /// server that leaves a keepalive unanswered this long is reported as
    /// not answering.
    #[arg(
        long,
        global = true,
        default_value_t = 5.0,
        value_name = "SECONDS",
        value_parser = positive_seconds
    )]
    pub connect_timeout: f64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The interactive client (the default).
    Chat {
        /// The server (the same as --server).
        #[arg(value_name = "ADDRESS")]
        address: Option<String>,
        /// The server's port, when ADDRESS has none.
        port: Option<u16>,
    },
    /// Publish to a room, or send direct messages to a user or connection,
    /// and say how many messages the server accepted; exits 0 only if it
    /// accepted all of them.
    #[command(name = "pub")]
    Publish(Publish),
    /// Print the messages of one or more rooms as they arrive.
    #[command(name = "sub")]
    Subscribe(Subscribe),
    /// Print the server's counters.
    Stats,
    /// Measure round-trip times to the server with HEARTBEATs.
    Ping {
        /// How many round trips.
        #[arg(short = 'c', long = "count", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
    },
}

/// Where `relay pub` sends its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A room, joined for the run.
    Room(String),
    /// Every connection of a user, as direct messages (SPEC.md 3.16).
    User(String),
    /// One connection, by its `connectionId`, as direct messages.
    Connection(String),
}

/// `relay pub`, as the command line means it: clap reads [`PublishWords`],
/// and [`PublishWords::resolve`] decides what the positional words are.
#[derive(Debug)]
pub struct Publish {
    pub target: Target,
    /// The message, or `-` for each line of standard input; `None` with
    /// `file`.
    pub message: Option<String>,
    pub file: Option<PathBuf>,
    pub binary: bool,
}

/// `relay pub` as clap reads it. Positionals are filled in order, so in
/// `pub --to-user alice hello` the first word, "hello", lands in `room`:
/// with a recipient it is the message, and a second word means a ROOM was
/// given too. Clap cannot say that, so [`PublishWords::resolve`] does, and
/// its errors are clap's, printed with the usage and exit code 2.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("recipient").args(["to_user", "to_connection"])),
    override_usage = "relay pub [OPTIONS] ROOM (MESSAGE | - | -f FILE)\n       \
                      relay pub [OPTIONS] (--to-user USER | --to-connection ID) (MESSAGE | - | -f FILE)"
)]
pub struct PublishWords {
    /// The room; it is joined once for all the messages, and left after.
    /// Not with --to-user or --to-connection, which send to a recipient
    /// instead of a room.
    #[arg(value_name = "ROOM")]
    room: Option<String>,
    /// The message, or - to send each line of standard input as one.
    message: Option<String>,
    /// Send the whole file as one message.
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// Send the content as raw bytes (a BINARY message), not as text. Rooms
    /// only: direct messages carry JSON.
    #[arg(long, conflicts_with = "json")]
    binary: bool,
    /// Send each message to every connection of USER as a direct message,
    /// joining no room. Exits 1 if USER is not connected (the sender's own
    /// connection does not count) or the token does not allow messaging
    /// them.
    #[arg(long, value_name = "USER")]
    to_user: Option<String>,
    /// Send each message to the one connection whose connectionId is ID
    /// (as `/who` or a delivery's `from` shows it) as a direct message.
    #[arg(long, value_name = "ID")]
    to_connection: Option<String>,
}

impl PublishWords {
    /// Sorts the positional words into ROOM and MESSAGE, and refuses the
    /// combinations clap cannot see.
    fn resolve(self) -> Result<Publish, clap::Error> {
        use clap::error::ErrorKind;
        // Formatted with `pub`'s own usage, which shows both forms.
        let error = |kind, text: String| {
            let mut args = <Args as clap::CommandFactory>::command();
            // Built first, so `pub` has the global flags its own checks name.
            args.build();
            match args.find_subcommand_mut("pub") {
                Some(publish) => publish.error(kind, text),
                None => args.error(kind, text),
            }
        };
        let recipient = match (self.to_user, self.to_connection) {
            (Some(user), _) => Some(("--to-user", Target::User(user))),
            (None, Some(id)) => Some(("--to-connection", Target::Connection(id))),
            (None, None) => None,
        };
        let (target, message) = match recipient {
            None => match self.room {
                Some(room) => (Target::Room(room), self.message),
                None => {
                    return Err(error(
                        ErrorKind::MissingRequiredArgument,
                        "give a ROOM, or --to-user USER or --to-connection ID".into(),
                    ));
                }
            },
            Some((flag, target)) => {
                if self.message.is_some() {
                    return Err(error(
                        ErrorKind::ArgumentConflict,
                        format!(
                            "a ROOM cannot be used with {flag}: messages go to a room or to a \
                             recipient, not both (quote a message that has spaces)"
                        ),
                    ));
                }
                if self.binary {
                    return Err(error(
                        ErrorKind::ArgumentConflict,
                        format!(
                            "--binary cannot be used with {flag}: a direct message carries JSON \
                             content only (SPEC.md 3.16); send text, or JSON with --json"
                        ),
                    ));
                }
                let name = match &target {
                    Target::User(name) | Target::Connection(name) | Target::Room(name) => name,
                };
                if name.trim().is_empty() {
                    return Err(error(
                        ErrorKind::InvalidValue,
                        format!("{flag} needs a name; it was empty"),
                    ));
                }
                (target, self.room)
            }
        };
        match (&message, &self.file) {
            (Some(_), Some(_)) => Err(error(
                ErrorKind::ArgumentConflict,
                "give the MESSAGE or -f FILE, not both".into(),
            )),
            (None, None) => Err(error(
                ErrorKind::MissingRequiredArgument,
                "give the MESSAGE, - to send each line of standard input, or -f FILE".into(),
            )),
            _ => Ok(Publish {
                target,
                message,
                file: self.file,
                binary: self.binary,
            }),
        }
    }
}

impl clap::FromArgMatches for Publish {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Publish, clap::Error> {
        PublishWords::from_arg_matches(matches)?.resolve()
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Publish::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for Publish {
    fn augment_args(command: clap::Command) -> clap::Command {
        PublishWords::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        PublishWords::augment_args_for_update(command)
    }
}

#[derive(Debug, clap::Args)]
pub struct Subscribe {
    /// The rooms.
    #[arg(required = true, value_name = "ROOM")]
    pub rooms: Vec<String>,
    /// Exit after this many messages (exit code 6 if the --timeout ends
    /// first).
    #[arg(short = 'n', long = "count", value_name = "COUNT")]
    pub count: Option<u64>,
    /// Exit after this many seconds (exit code 0 without -n).
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub timeout: Option<f64>,
    /// First print up to N of each room's kept messages (the server keeps
    /// what its --history-* flags allow), then the live ones; a gap line
    /// says which of the N are gone. They count toward -n.
    #[arg(long, value_name = "N")]
    pub history: Option<u64>,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if value > 0.0 && Duration::try_from_secs_f64(value).is_ok() {
        Ok(value)
    } else {
        Err(format!("must be a number of seconds above 0, not {text}"))
    }
}

/// How lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Raw,
}

impl Args {
    pub fn format(&self) -> Format {
        match (self.global.json, self.global.raw) {
            (true, _) => Format::Json,
            (_, true) => Format::Raw,
            _ => Format::Human,
        }
    }

    /// The server: a positional address (chat), else --server, else
    /// localhost; a port on its own is added.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let (address, port) = match &self.command {
            Some(Command::Chat { address, port }) => (address.as_deref(), *port),
            _ => (None, None),
        };
        if address.is_some() && self.global.server.is_some() {
            return Err("give the server once: as ADDRESS or with --server, not both".into());
        }
        let text = address
            .or(self.global.server.as_deref())
            .unwrap_or("localhost");
        let given = Given {
            port,
            tls: self.global.tls || self.global.ca.is_some(),
        };
        address::parse(text, given)
    }

    /// The TLS settings the flags ask for.
    pub fn tls_options(&self) -> client::TlsOptions {
        client::TlsOptions {
            ca_file: self.global.ca.clone(),
            server_name: None,
            client_cert: self.global.cert.clone().zip(self.global.key.clone()),
        }
    }

    /// The name to announce: `--name`, else $USER / $LOGNAME, else `guest-NNNN`.
    pub fn user_name(&self) -> String {
        if let Some(name) = self.global.name.as_ref().filter(|n| !n.trim().is_empty()) {
            return name.clone();
        }
        ["USER", "LOGNAME"]
            .iter()
            .filter_map(|var| std::env::var(var).ok())
            .find(|name| !name.trim().is_empty())
            .unwrap_or_else(guest_name)
    }

    /// Checks what the server would refuse, so the error names the flag.
    pub fn check(&self) -> Result<(), String> {
        let name = self.user_name();
        if name.len() > protocol::MAX_USER_ID_LEN {
            return Err(format!(
                "--name is {} bytes long; use at most {}",
                name.len(),
                protocol::MAX_USER_ID_LEN
            ));
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.global.connect_timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .unwrap_or(Duration::from_secs(5))
    }
}

/// `guest-NNNN` with a number that differs between runs.
fn guest_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let number = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 10_000;
    format!("guest-{number:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> Result<Args, String> {
        let mut full = vec!["relay"];
        full.extend_from_slice(argv);
        let full = with_default_subcommand(full.into_iter().map(Into::into));
        Args::try_parse_from(full).map_err(|e| e.to_string())
    }

    fn endpoint(argv: &[&str]) -> Result<Endpoint, String> {
        args(argv)?.endpoint()
    }

    fn at(host: &str, port: u16, tls: bool) -> Result<Endpoint, String> {
        Ok(Endpoint {
            host: host.into(),
            port,
            tls,
        })
    }

    #[test]
    fn the_server_can_be_given_every_way() {
        assert_eq!(endpoint(&[]), at("localhost", 4000, false));
        assert_eq!(endpoint(&["127.0.0.1:4200"]), at("127.0.0.1", 4200, false));
        assert_eq!(
            endpoint(&["example.org", "5000"]),
            at("example.org", 5000, false)
        );
        assert_eq!(endpoint(&["chat", "4200"]), at("localhost", 4200, false));
        assert_eq!(
            endpoint(&["--tls", "example.org"]),
            at("example.org", 4443, true)
        );
        assert_eq!(endpoint(&["--ca", "ca.pem", "h"]), at("h", 4443, true));
        assert_eq!(
            endpoint(&["pub", "r", "hi", "-s", "[::1]:9"]),
            at("::1", 9, false)
        );
        assert_eq!(
            endpoint(&["-s", "relays://x", "sub", "r"]),
            at("x", 4443, true)
        );
        assert_eq!(
            endpoint(&["-s", "4200", "ping"]),
            at("localhost", 4200, false)
        );
        assert_eq!(
            endpoint(&["--name", "a", "::1", "4001"]),
            at("::1", 4001, false)
        );
        assert_eq!(endpoint(&["--echo", "h:1"]), at("h", 1, false));
        assert!(
            endpoint(&["-s", "a", "b"])
                .unwrap_err()
                .contains("not both")
        );
        assert!(endpoint(&["--cert", "c.pem", "h"]).is_err());
    }

    #[test]
    fn subcommands_take_their_own_flags_and_the_global_ones() {
        let parsed =
            args(&["sub", "a", "b", "-n", "3", "--timeout", "2.5", "--json"]).expect("parses");
        assert_eq!(parsed.format(), Format::Json);
        match parsed.command {
            Some(Command::Subscribe(sub)) => {
                assert_eq!(sub.rooms, ["a", "b"]);
                assert_eq!(sub.count, Some(3));
                assert_eq!(sub.timeout, Some(2.5));
            }
            other => panic!("{other:?}"),
        }
        assert!(args(&["pub", "r"]).is_err(), "pub needs a message or -f");
        assert!(args(&["pub", "r", "x", "--binary", "--json"]).is_err());
        assert!(args(&["sub", "r", "--json", "--raw"]).is_err());
        assert!(args(&["sub", "r", "--timeout", "0"]).is_err());
        assert!(args(&["ping", "-c", "0"]).is_err());
        assert!(args(&["sub"]).is_err(), "sub needs a room");
    }

    #[test]
    fn pub_takes_a_room_or_a_recipient_and_the_first_word_follows() {
        let publish = |argv: &[&str]| match args(argv).map(|a| a.command) {
            Ok(Some(Command::Publish(publish))) => Ok(publish),
            Ok(other) => panic!("{other:?}"),
            Err(error) => Err(error),
        };
        let room = publish(&["pub", "news", "hi"]).expect("parses");
        assert_eq!(room.target, Target::Room("news".into()));
        assert_eq!(room.message.as_deref(), Some("hi"));
        let user = publish(&["pub", "--to-user", "alice", "hello"]).expect("parses");
        assert_eq!(user.target, Target::User("alice".into()));
        assert_eq!(user.message.as_deref(), Some("hello"));
        let connection =
            publish(&["pub", "-f", "x.json", "--to-connection", "c4"]).expect("parses");
        assert_eq!(connection.target, Target::Connection("c4".into()));
        assert_eq!(
            (connection.message, connection.file),
            (None, Some("x.json".into()))
        );
        let stdin = publish(&["pub", "--to-user", "alice", "-", "--json"]).expect("parses");
        assert_eq!(stdin.message.as_deref(), Some("-"));

        for (argv, says) in [
            (
                &["pub", "news", "hi", "--to-user", "a"][..],
                "a ROOM cannot be used with --to-user",
            ),
            (
                &["pub", "--to-connection", "c4", "hi", "--binary"],
                "carries JSON content only",
            ),
            (
                &["pub", "--to-user", "a", "--to-connection", "c4", "hi"],
                "cannot be used with",
            ),
            (&["pub", "--to-user", " ", "hi"], "--to-user needs a name"),
            (&["pub", "--to-user", "a"], "give the MESSAGE"),
            (&["pub", "--to-user", "a", "hi", "-f", "x"], "not both"),
            (&["pub", "news", "hi", "-f", "x"], "not both"),
            (
                &["pub"],
                "give a ROOM, or --to-user USER or --to-connection ID",
            ),
        ] {
            let error = publish(argv).expect_err("refused");
            assert!(error.contains(says), "{argv:?}: {error}");
            assert!(error.contains("Usage: relay pub"), "{argv:?}: {error}");
        }
    }
}
