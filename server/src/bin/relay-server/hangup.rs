//! What SIGHUP means. A daemon's convention is "reread your files", and
//! service managers send it for that (`systemctl reload`). But a server
//! started at a terminal also gets SIGHUP when that terminal closes, and
//! then the user means "stop". The two are told apart by the terminal:
//!
//! - started without a controlling terminal (systemd, `nohup`, `setsid`,
//!   a container): SIGHUP reloads;
//! - started at a terminal that is still there (`kill -HUP` from another
//!   shell): SIGHUP reloads;
//! - started at a terminal that is gone (its window closed, the SSH session
//!   dropped): SIGHUP drains and stops, like SIGTERM.
//!
//! A process has a controlling terminal exactly when it can open
//! `/dev/tty`; after a hangup, that open fails.

use std::fs::OpenOptions;

/// Whether this process can reach a controlling terminal now.
pub fn has_terminal() -> bool {
    OpenOptions::new().read(true).open("/dev/tty").is_ok()
}

/// What to do with a SIGHUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    Reload,
    /// The terminal the server was started at has closed.
    Stop,
}

/// Decides, given whether the server had a terminal at start.
pub fn decide(started_on_terminal: bool) -> Hangup {
    if started_on_terminal && !has_terminal() {
        Hangup::Stop
    } else {
        Hangup::Reload
    }
}
