//! The exit codes, one per kind of outcome a script may want to tell apart.
//! They are listed in `relay --help` and client/README.md; keep the three in
//! step.

use std::fmt;
use std::process::ExitCode;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything asked for was done.
    Ok = 0,
    /// 1: a command failed: the server refused a request, or `pub` had
    /// messages that were not accepted.
    Failed = 1,
    /// 2: the command line was wrong (clap exits with 2 too).
    Usage = 2,
    /// 3: no Relay server could be reached: nothing listens, nothing
    /// answered, or what answered is not a Relay server.
    Unreachable = 3,
    /// 4: the server refused the login (HELLO): a bad token, a name in use...
    Refused = 4,
    /// 5: the connection was lost after the login.
    Lost = 5,
    /// 6: `sub -n COUNT` ran out of time with fewer than COUNT messages.
    Timeout = 6,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The table printed at the end of `relay --help`.
pub const HELP: &str = "\
Exit codes:
  0  done: every message accepted, every command answered
  1  a command failed, or not every message was accepted
  2  usage: the command line is wrong
  3  could not connect: nothing listens, nothing answered, or not a Relay server
  4  the server refused the login (HELLO), e.g. a bad token
  5  the connection was lost
  6  sub: the --timeout ran out before -n COUNT messages came";

/// A run that ended early: what to tell the user, and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
