//! The `relay` CLI, built on the `client` library.
//!
//! - [`args`]: the command line (clap); [`address`]: server addresses as
//!   people type them; [`exit`]: the exit codes.
//! - [`connect`]: connect and log in, each failure told apart; backoff.
//! - [`link`]: the connection a long-running command lives on: the thread
//!   that reads its events, reconnecting, and the keepalive that notices a
//!   server that stopped answering.
//! - [`chat`]: the interactive client. [`session`] runs its commands
//!   ([`command`] reads a line into one); [`interactive`] is the rustyline
//!   front end and [`piped`] the one for scripts; [`complete`] and
//!   [`history`] serve the line editor.
//! - [`publish`] (to a room, or direct messages to a user or connection),
//!   [`subscribe`], [`stats`], [`ping`]: the one-shot
//!   subcommands.
//! - [`format`], [`out`]: how lines look, and which stream they go to.

pub mod address;
pub mod args;
pub mod chat;
pub mod command;
pub mod complete;
pub mod connect;
pub mod exit;
pub mod format;
pub mod history;
pub mod interactive;
pub mod link;
pub mod out;
pub mod ping;
pub mod piped;
pub mod publish;
pub mod session;
pub mod stats;
pub mod subscribe;

use self::args::{Args, Command};
use self::exit::{Exit, Failure};

/// Runs the command the arguments name.
pub fn run(args: &Args) -> Result<Exit, Failure> {
    match &args.command {
        None | Some(Command::Chat { .. }) => chat::run(args),
        Some(Command::Publish(publish)) => publish::run(args, publish),
        Some(Command::Subscribe(subscribe)) => subscribe::run(args, subscribe),
        Some(Command::Stats) => stats::run(args),
        Some(Command::Ping { count }) => ping::run(args, *count),
    }
}
