//! What the reader hands the writer on a WebSocket connection: the answer
//! to the upgrade, the pong for a ping, and the client's close. The writer
//! sends them between Relay frames, never inside one, so the write half
//! stays the only one writing the socket.
//!
//! Bounded: one upgrade answer (a few hundred bytes, once), the pong for
//! the latest ping only (RFC 6455 5.5.3 allows answering just the last),
//! at most 125 bytes, and one close.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::conn::transport::WriterWake;

#[derive(Default)]
pub(crate) struct Link {
    /// Something in `control` for the writer: looked at without the lock
    /// on every write, which costs one load when there is nothing.
    signal: AtomicBool,
    /// The upgrade succeeded and its answer is queued: Relay frames may
    /// follow it. Before, writes are refused (a SHUTTING_DOWN during the
    /// upgrade is not sent as a frame the client could not read).
    open: AtomicBool,
    control: Mutex<Control>,
    wake: OnceLock<WriterWake>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

/// The reader's requests, waiting for the writer.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// The HTTP answer to the upgrade (101, or a refusal), not yet taken.
    pub(crate) response: Vec<u8>,
    /// The payload of the latest ping not yet answered.
    pub(crate) pong: Option<Vec<u8>>,
    /// The client sent a close frame, with this status if it gave one; the
    /// server's close frame echoes it (RFC 6455 5.5.1).
    pub(crate) client_close: Option<Option<u16>>,
}

impl Link {
    pub(crate) fn set_wake(&self, wake: WriterWake) {
        let _ = self.wake.set(wake);
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Whether the writer has control bytes to send.
    pub(crate) fn signalled(&self) -> bool {
        self.signal.load(Ordering::Acquire)
    }

    /// Queues the upgrade's answer; `open` when it is the 101.
    pub(crate) fn respond(&self, response: Vec<u8>, open: bool) {
        self.control.lock().response = response;
        // Signalled before open: a writer that sees the connection open
        // also sees the 101 waiting, and sends it first.
        self.signal.store(true, Ordering::Release);
        self.open.store(open, Ordering::Release);
        self.raise();
    }

    /// Queues a pong for `payload`, replacing any not yet sent.
    pub(crate) fn pong(&self, payload: Vec<u8>) {
        self.control.lock().pong = Some(payload);
        self.raise();
    }

    /// Records the client's close frame; the writer echoes it as it closes.
    pub(crate) fn client_closed(&self, status: Option<u16>) {
        self.control.lock().client_close = Some(status);
    }

    /// The client's close, if it sent one.
    pub(crate) fn client_close(&self) -> Option<Option<u16>> {
        self.control.lock().client_close
    }

    /// Takes what is to be sent now: the upgrade's answer, then the pong.
    pub(crate) fn take(&self, out: &mut Vec<u8>) -> Option<Vec<u8>> {
        let mut control = self.control.lock();
        self.signal.store(false, Ordering::Release);
        out.append(&mut control.response);
        control.pong.take()
    }

    fn raise(&self) {
        self.signal.store(true, Ordering::Release);
        if let Some(wake) = self.wake.get() {
            wake();
        }
    }
}
