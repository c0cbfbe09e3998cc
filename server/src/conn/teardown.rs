//! The end of a connection, in one place: each thread's last steps, and the
//! close itself, which happens exactly once, when the second of the two
//! threads ends. The close reason is counted and logged here and nowhere
//! else.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::close::CloseReason;
use super::peer::Peer;
use super::state::ConnState;
use crate::logging::{CONNECTIONS, throttled};
use crate::shared::Shared;

/// Which of the connection's two threads a [`ThreadExit`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Reader,
    Writer,
}

/// A connection thread's last steps, run when it returns and also when it
/// unwinds from a panic (a bug), so the connection still reaches CLOSED and
/// leaves the registry and the counters right.
pub(crate) struct ThreadExit {
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    role: Role,
}

impl ThreadExit {
    pub(crate) fn new(shared: &Arc<Shared>, peer: &Arc<Peer>, role: Role) -> ThreadExit {
        ThreadExit {
            shared: Arc::clone(shared),
            peer: Arc::clone(peer),
            role,
        }
    }
}

impl Drop for ThreadExit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            thread_panicked(&self.shared, &self.peer);
        }
        if self.role == Role::Writer {
            self.peer.set_writer_done();
        }
        thread_finished(&self.shared, &self.peer);
    }
}

/// A connection thread panicked: close the connection at once, and count it
/// (anything but 0 is a bug).
pub(crate) fn thread_panicked(shared: &Shared, peer: &Peer) {
    tracing::error!(
        "c{}: connection thread panicked; closing the connection",
        peer.id()
    );
    shared.counters.thread_panics.fetch_add(1, Relaxed);
    peer.outbound.close(CloseReason::ThreadPanic);
    peer.cut();
}

/// Called once by each connection thread as it ends; the last one closes
/// the connection for good (CLOSED, exactly once).
pub(crate) fn thread_finished(shared: &Shared, peer: &Arc<Peer>) {
    if !peer.thread_ended() {
        return;
    }
    // Both threads are done; the reader already left every room.
    let state = peer.outbound.state();
    let _ = state.advance(ConnState::Closing);
    if let Err(error) = state.advance(ConnState::Closed) {
        tracing::error!("c{}: {error}", peer.id());
        return;
    }
    tracing::debug!("c{}: CLOSING → CLOSED", peer.id());
    peer.cut();
    // Every path to here recorded a reason first; "closed by client" is
    // the honest default should one ever be missing.
    let reason = peer
        .outbound
        .close_reason()
        .unwrap_or(CloseReason::ClientClosed);
    shared.counters.closed(reason);
    // Log before leaving the registry: once it is empty a stopping server
    // may exit, and this line must not be lost.
    let (bytes_in, bytes_out) = (peer.bytes_in.load(Relaxed), peer.bytes_out.load(Relaxed));
    let (id, addr) = (peer.id(), peer.addr);
    match reason {
        CloseReason::SlowConsumer { .. }
        | CloseReason::WriteTimeout
        | CloseReason::ThreadPanic
        | CloseReason::Overloaded { .. } => {
            throttled!(
                CONNECTIONS,
                WARN,
                "c{id}: disconnected from {addr} ({reason}; {bytes_in} bytes in, {bytes_out} bytes out)"
            );
        }
        _ => throttled!(
            CONNECTIONS,
            INFO,
            "c{id}: disconnected from {addr} ({reason}; {bytes_in} bytes in, {bytes_out} bytes out)"
        ),
    }
    peer.release_slot();
    shared.counters.connections.fetch_sub(1, Relaxed);
    shared.unregister(id);
}
