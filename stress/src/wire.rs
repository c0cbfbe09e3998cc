//! A blocking connection that speaks frames with exact control over the bytes
//! on the wire: what fragmentation needs (splits anywhere), what chaos needs
//! (resets, partial frames, malformed frames), and a quick way to read the
//! server's counters.
//!
//! All of it is `testkit`'s; this module gives it the tool's error type.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::Stats;
pub use testkit::{
    CLIENT_MAX_FRAME, OwnedFrame, RecvError, json_frame, push_json, raw_frame, room_frame,
};

use crate::error::{Context, Error, Result};

/// A blocking connection with its own frame decoder, failing with [`Error`].
pub type Conn = testkit::Conn<Error>;

impl From<testkit::WireError> for Error {
    fn from(error: testkit::WireError) -> Error {
        Error::new(error.to_string())
    }
}

/// The server's counters now, read through a fresh connection's HELLO answer.
/// The asking connection is counted in `connections`.
pub fn server_stats(addr: SocketAddr) -> Result<Stats> {
    testkit::server_stats(addr).context("asking for the stats")
}

/// Polls the server's counters until `done` holds or `timeout` passes;
/// returns the last stats seen and whether `done` held.
pub fn wait_for_stats(
    addr: SocketAddr,
    timeout: Duration,
    done: impl Fn(&Stats) -> bool,
) -> Result<(Stats, bool)> {
    testkit::wait_for_stats(addr, timeout, done).context("asking for the stats")
}
