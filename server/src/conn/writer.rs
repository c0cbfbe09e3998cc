//! A connection's writer thread: the only thread that writes to its client.
//!
//! It sleeps until a batch is queued (see `doorbell`), takes every batch
//! queued, and writes them all with one vectored write, so one system call
//! carries as many frames as are waiting. When the connection is closing it
//! first writes everything that was queued, then the final ERROR (if the
//! reason has one), then closes its direction.

use std::io;
use std::sync::Arc;

use super::close::CloseReason;
use super::peer::Peer;
use super::reader::IDLE_TRIM_AFTER;
use super::teardown::{Role, ThreadExit};
use crate::shared::Shared;
use crate::sys::thread::StackTrim;

/// Rings every writer whose socket has bytes from publishers it is not
/// watching, so a client that reads nothing is reaped even when everything
/// it was sent fit in its socket. Run by the housekeeping thread.
pub(crate) fn ring_unwatched(shared: &Shared) {
    for peer in shared.peers() {
        if peer.outbound.output().unwatched() {
            peer.outbound.bell().ring();
        }
    }
}

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: Arc<Peer>,
}

impl Writer {
    pub(crate) fn run(self) {
        let _span = self.peer.span.clone().entered();
        let _exit = ThreadExit::new(&self.shared, &self.peer, Role::Writer);
        // A panic (a bug) unwinds through `_exit`, which still closes the
        // connection properly.
        let reason = self.serve();
        self.finish(reason);
        let output = self.peer.outbound.output();
        self.peer
            .bytes_out
            .store(output.bytes_out(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes until the connection closes; returns why.
    fn serve(&self) -> CloseReason {
        let outbound = &self.peer.outbound;
        let output = outbound.output();
        let counters = &self.shared.counters;
        let mut stack = StackTrim::default();
        loop {
            match output.write_waiting(&**outbound, counters) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    let reason = if error.kind() == io::ErrorKind::TimedOut {
                        CloseReason::WriteTimeout
                    } else {
                        CloseReason::WriteError
                    };
                    tracing::debug!("c{}: write failed: {error}", self.peer.id());
                    outbound.close(reason);
                    return reason;
                }
            }
            if let Some(reason) = outbound.close_reason() {
                return reason;
            }
            // Bytes still in the socket: look again within a check
            // interval, and give up on a client that took none of them for
            // the write timeout.
            let watch = match output.watch() {
                Ok(watch) => watch,
                Err(error) => {
                    tracing::debug!("c{}: {error}", self.peer.id());
                    outbound.close(CloseReason::WriteTimeout);
                    return CloseReason::WriteTimeout;
                }
            };
            // Idle: sleep until rung. Once in a while, wake after a short
            // silence to give back the stack pages this thread is not using.
            let trim = stack.due().then_some(IDLE_TRIM_AFTER);
            let timeout = match (watch, trim) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let rung = outbound
                .bell()
                .sleep(|| output.has_work() || outbound.is_closing(), timeout);
            if !rung {
                stack.trim();
            }
        }
    }

    /// Ends the connection's output for `reason`.
    #[inline(never)]
    fn finish(&self, reason: CloseReason) {
        let outbound = &self.peer.outbound;
        let output = outbound.output();
        if !reason.flushes() {
            match reason {
                CloseReason::WriteTimeout => self.peer.abort(),
                CloseReason::WriteError => self.peer.cut(),
                _ => {}
            }
            output.abandon();
            return;
        }
        // Only our direction: the reader keeps draining input until the
        // client has read all this (see `reader::linger`).
        let counters = &self.shared.counters;
        if output.finish(&**outbound, counters, outbound.final_error())
            && let Some(code) = reason.code()
        {
            counters.error_sent(code);
        }
        if output.past_flush_bound() {
            // The client read too slowly to take even its final ERROR in
            // time: end the connection now (the reader stops lingering).
            self.peer.abort();
        }
    }
}
