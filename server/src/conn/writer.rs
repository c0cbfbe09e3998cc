//! A connection's writer thread: the only thread that writes to its client.
//!
//! It sleeps until a batch is queued (see `doorbell`), takes every batch
//! queued, and writes them all with one vectored write, so one system call
//! carries as many frames as are waiting. When the connection is closing it
//! first writes everything that was queued, then the final ERROR (if the
//! reason has one), then closes its direction.
//!
//! The writing and the finishing are `#[inline(never)]`: their frames (the
//! slice array, the ERROR being built) then stay off the frame that blocks
//! in `recv`, so the stack pages they touch can be given back while the
//! connection is idle (see `sys::thread::trim_stack`).

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crossbeam_channel::{Receiver, TryRecvError};
use protocol::parse_frame;

use super::close::CloseReason;
use super::outbound::{Batch, Outgoing};
use super::peer::Peer;
use super::reader::IDLE_TRIM_AFTER;
use super::teardown::{Role, ThreadExit};
use super::transport::{WriteHalf, write_all_vectored};
use crate::shared::Shared;
use crate::sys::thread::StackTrim;

/// Batches written per system call at most (IOV_MAX is 1024).
const MAX_SLICES: usize = 64;

/// Everything the writer thread owns, so that a thread that cannot be
/// started hands it all back (see `conn::start`).
pub(crate) struct Writer<W> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: Arc<Peer>,
    pub(crate) rx: Receiver<Outgoing>,
    pub(crate) out: W,
}

impl<W: WriteHalf> Writer<W> {
    pub(crate) fn run(mut self) {
        let _exit = ThreadExit::new(&self.shared, &self.peer, Role::Writer);
        let mut pending = Vec::new();
        let mut bytes_out = 0;
        // A panic (a bug) unwinds through `_exit`, which still closes the
        // connection properly.
        let reason = self.serve(&mut pending, &mut bytes_out);
        self.finish(reason, &mut pending, &mut bytes_out);
        self.peer.bytes_out.store(bytes_out, Relaxed);
    }

    /// Writes until the connection closes; returns why.
    fn serve(&mut self, pending: &mut Vec<Arc<Batch>>, bytes_out: &mut u64) -> CloseReason {
        let mut stack = StackTrim::default();
        loop {
            while pending.len() < MAX_SLICES {
                match self.rx.try_recv() {
                    Ok(batch) => pending.push(batch),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if pending.is_empty() {
                let outbound = &self.peer.outbound;
                if let Some(reason) = outbound.close_reason() {
                    return reason;
                }
                // Idle: sleep until a publisher rings. Once a while, wake
                // after a short silence to give back the stack pages this
                // thread is not using.
                let timeout = stack.due().then_some(IDLE_TRIM_AFTER);
                let rx = &self.rx;
                let rung = outbound
                    .bell()
                    .sleep(|| !rx.is_empty() || outbound.is_closing(), timeout);
                if !rung {
                    stack.trim();
                }
                continue;
            }
            if let Err(error) = self.write_pending(pending, bytes_out) {
                let reason = if error.kind() == io::ErrorKind::TimedOut {
                    CloseReason::WriteTimeout
                } else {
                    CloseReason::WriteError
                };
                log::debug!("c{}: write failed: {error}", self.peer.id());
                self.peer.outbound.close(reason);
                return reason;
            }
        }
    }

    #[inline(never)]
    fn write_pending(
        &mut self,
        pending: &mut Vec<Arc<Batch>>,
        bytes_out: &mut u64,
    ) -> io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        if log::log_enabled!(log::Level::Debug) {
            self.log_frames(pending);
        }
        let total: usize = pending.iter().map(|b| b.bytes.len()).sum();
        let frames: u64 = pending.iter().map(|b| u64::from(b.frames)).sum();
        // Queue room is given back as the client reads, not once the whole
        // write is done (see `Outbound::written`).
        let mut released = 0;
        let result = {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            for (slice, batch) in slices.iter_mut().zip(pending.iter()) {
                *slice = IoSlice::new(&batch.bytes);
            }
            let outbound = &self.peer.outbound;
            write_all_vectored(&mut self.out, &mut slices[..pending.len()], |n| {
                outbound.written(n);
                released += n;
            })
        };
        pending.clear();
        self.peer.outbound.written(total - released);
        if result.is_ok() {
            *bytes_out += total as u64;
            let counters = &self.shared.counters;
            counters.bytes_out.fetch_add(total as u64, Relaxed);
            counters.frames_out.fetch_add(frames, Relaxed);
        }
        result
    }

    fn log_frames(&self, pending: &[Arc<Batch>]) {
        for batch in pending {
            let mut rest = &batch.bytes[..];
            while let Ok(Some((frame, used))) = parse_frame(rest, u32::MAX) {
                log::debug!(
                    "c{} ← {} v1 flags={:?} payload={}B",
                    self.peer.id(),
                    frame.kind,
                    frame.flags,
                    frame.payload.len()
                );
                rest = &rest[used..];
            }
        }
    }

    /// Ends the connection's output for `reason`.
    #[inline(never)]
    fn finish(&mut self, reason: CloseReason, pending: &mut Vec<Arc<Batch>>, bytes_out: &mut u64) {
        if !reason.flushes() {
            if matches!(reason, CloseReason::WriteTimeout | CloseReason::WriteError) {
                self.peer.cut();
            } else {
                self.out.close_write();
            }
            return;
        }
        if let Some(last) = self.peer.outbound.final_error() {
            self.peer.outbound.reserve_unbounded(last.bytes.len());
            pending.push(last);
            if self.write_pending(pending, bytes_out).is_ok()
                && let Some(code) = reason.code()
            {
                self.shared.counters.error_sent(code);
            }
        }
        // Only our direction: the reader keeps draining input until the
        // client has read all this (see `reader::linger`).
        self.out.close_write();
    }
}
