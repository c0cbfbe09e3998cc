//! A connection's writer thread: the only thread that writes to its socket.
//!
//! It blocks for the first queued batch, takes every other batch already
//! queued, and writes them all with one vectored write, so one system call
//! carries as many frames as are waiting. When the connection is closing it
//! first writes everything that was queued, then the final ERROR (if the
//! reason has one), then closes its side.

use std::io::{self, ErrorKind, IoSlice, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use protocol::parse_frame;

use crate::peer::{Batch, CloseReason, Outgoing, Peer};
use crate::server::Shared;

/// Batches written per system call at most (IOV_MAX is 1024).
const MAX_SLICES: usize = 64;

pub(crate) fn run_writer(shared: Arc<Shared>, peer: Arc<Peer>, rx: Receiver<Outgoing>) {
    let mut writer = Writer {
        shared,
        peer,
        pending: Vec::new(),
        bytes_out: 0,
    };
    let _exit = crate::server::ThreadExit::writer(&writer.shared, &writer.peer);
    // A panic (a bug) unwinds through `_exit`, which still closes the
    // connection properly.
    let reason = writer.serve(&rx);
    writer.finish(reason);
    writer.peer.bytes_out.store(writer.bytes_out, Relaxed);
}

struct Writer {
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    /// Batches taken from the queue, not yet written.
    pending: Vec<Arc<Batch>>,
    bytes_out: u64,
}

impl Writer {
    /// Writes until the connection closes; returns why.
    fn serve(&mut self, rx: &Receiver<Outgoing>) -> CloseReason {
        let mut stack = crate::thread::StackTrim::default();
        loop {
            let first = if stack.due() {
                match rx.recv_timeout(crate::connection::IDLE_TRIM_AFTER) {
                    Err(RecvTimeoutError::Timeout) => {
                        // Idle: give back the stack pages this thread is not using.
                        stack.trim();
                        rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    }
                    other => other,
                }
            } else {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            match first {
                Ok(Some(batch)) => self.pending.push(batch),
                Ok(None) => {}
                Err(_) => return CloseReason::PeerClosed,
            }
            while self.pending.len() < MAX_SLICES {
                match rx.try_recv() {
                    Ok(Some(batch)) => self.pending.push(batch),
                    Ok(None) => {}
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if let Err(error) = self.write_pending() {
                log::info!("c{}: write failed: {error}", self.peer.id);
                self.peer.close(CloseReason::WriteFailed);
                return CloseReason::WriteFailed;
            }
            if rx.is_empty()
                && let Some(reason) = self.peer.close_reason()
            {
                return reason;
            }
        }
    }

    #[inline(never)]
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if log::log_enabled!(log::Level::Debug) {
            self.log_frames();
        }
        let total: usize = self.pending.iter().map(|b| b.bytes.len()).sum();
        let frames: u64 = self.pending.iter().map(|b| u64::from(b.frames)).sum();
        // Queue room is given back as the client reads, not once the whole
        // write is done: a member reading slowly but steadily makes room for
        // its publishers all along, so it is never mistaken for a stuck one.
        let mut released = 0;
        let result = {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            for (slice, batch) in slices.iter_mut().zip(&self.pending) {
                *slice = IoSlice::new(&batch.bytes);
            }
            let peer = &self.peer;
            write_all_vectored(&peer.stream, &mut slices[..self.pending.len()], |n| {
                peer.written(n);
                released += n;
            })
        };
        self.pending.clear();
        self.peer.written(total - released);
        if result.is_ok() {
            self.bytes_out += total as u64;
            self.shared
                .counters
                .bytes_out
                .fetch_add(total as u64, Relaxed);
            self.shared.counters.frames_out.fetch_add(frames, Relaxed);
        }
        result
    }

    fn log_frames(&self) {
        for batch in &self.pending {
            let mut rest = &batch.bytes[..];
            while let Ok(Some((frame, used))) = parse_frame(rest, u32::MAX) {
                log::debug!(
                    "c{} ← {} v1 flags={:?} payload={}B",
                    self.peer.id,
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
    fn finish(&mut self, reason: CloseReason) {
        let peer = Arc::clone(&self.peer);
        let stream = &peer.stream;
        match reason {
            CloseReason::WriteFailed => {
                let _ = stream.shutdown(Shutdown::Both);
            }
            CloseReason::PeerClosed => {
                let _ = stream.shutdown(Shutdown::Write);
            }
            CloseReason::Fatal | CloseReason::SlowConsumer | CloseReason::ShuttingDown => {
                let last = match reason.final_error() {
                    Some((code, message)) => Some((code, Arc::new(Batch::error(code, message)))),
                    None => peer.final_error(),
                };
                if let Some((code, batch)) = last {
                    self.peer.reserve_unbounded(batch.bytes.len());
                    self.pending.push(batch);
                    if self.write_pending().is_ok() {
                        self.shared.counters.error_sent(code);
                    }
                }
                // Only our direction: the reader keeps draining input until
                // the client has read all this (see Session::linger).
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
    }
}

/// Writes every byte of `slices`, in as few calls as the kernel allows,
/// reporting each call's progress.
fn write_all_vectored(
    mut stream: &std::net::TcpStream,
    mut slices: &mut [IoSlice<'_>],
    mut progress: impl FnMut(usize),
) -> io::Result<()> {
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::WriteZero,
                    "socket accepted no bytes",
                ));
            }
            Ok(n) => {
                progress(n);
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "no progress for the write timeout; the client stopped reading",
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
