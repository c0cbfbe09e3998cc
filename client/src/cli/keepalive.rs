//! Heartbeats while the user is quiet, so the server's idle timeout (60 s by
//! default) does not cut off someone who is only reading.

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

/// A third of the server's idle timeout (at least 100 ms).
pub fn interval(idle_timeout_ms: u64) -> Duration {
    Duration::from_millis(idle_timeout_ms / 3).max(Duration::from_millis(100))
}
