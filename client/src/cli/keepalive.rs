//! Heartbeats while the user is quiet, so the server's idle timeout (60 s by
//! default) does not cut off someone who is only reading.
//!
//! Nothing here waits for the echoes, so a server that never sends one (the
//! original Node.js server) is not taken for a dead one.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use client::Client;
use crossbeam_channel::{Receiver, RecvTimeoutError};

/// Sends a HEARTBEAT every `interval` until `stop` is dropped or the
/// connection is gone. Its answers carry sequence numbers nobody waits for,
/// so the session ignores them.
pub fn spawn(
    client: Arc<Client>,
    interval: Duration,
    stop: Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("relay-cli-keepalive".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
                if client.heartbeat().is_err() {
                    break;
                }
            }
        })
}

/// A third of the server's idle timeout (at least 100 ms). A server that
/// announced none (0; the original has no idle timeout) gets one every 20 s,
/// a third of the usual 60 s, in case it has a timeout it does not announce.
pub fn interval(idle_timeout_ms: u64) -> Duration {
    if idle_timeout_ms == 0 {
        return Duration::from_secs(20);
    }
    Duration::from_millis(idle_timeout_ms / 3).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_an_idle_timeout_is_not_flooded() {
        assert_eq!(interval(60_000), Duration::from_secs(20));
        assert_eq!(interval(150), Duration::from_millis(100));
        assert_eq!(interval(0), Duration::from_secs(20));
    }
}
