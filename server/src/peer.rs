//! A connection as the rest of the server sees it: its bounded outbound queue
//! (what broadcasters push into), its state, and why it is closing.
//!
//! The queue is a bounded `crossbeam_channel` of shared byte batches, bounded
//! both in entries and in bytes. A push never blocks while a lock is held:
//! [`Peer::try_push`] is what runs under the room lock, and only after the
//! lock is released does a publisher wait (up to the stall bound) with
//! [`Peer::push_until`] for a member whose queue was full.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use protocol::{ErrorCode, ErrorPayload, Flags, MessageType, begin_frame, end_frame};

use crate::counters::Counters;
use crate::state::{ConnState, StateCell};

/// Encoded frames ready to write: one or more whole frames, shared by every
/// member they go to.
#[derive(Debug)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// How many frames `bytes` holds.
    pub frames: u32,
}

impl Batch {
    /// One ERROR frame, as a batch of its own.
    pub fn error(code: ErrorCode, message: &str) -> Batch {
        let mut bytes = Vec::new();
        let start = begin_frame(&mut bytes, MessageType::Error, Flags::JSON);
        // Serialising a struct of strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut bytes, &ErrorPayload::new(code, message));
        let _ = end_frame(&mut bytes, start);
        Batch { bytes, frames: 1 }
    }
}

/// A queue entry: frames to write, or `None` to wake the writer so it looks
/// at the close reason.
pub type Outgoing = Option<Arc<Batch>>;

/// Why a connection ends. The first reason recorded wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The client closed or reset its side.
    PeerClosed = 1,
    /// The reader found a fatal error and queued its ERROR frame itself.
    Fatal = 2,
    /// Fell behind: flush what is queued, then SLOW_CONSUMER.
    SlowConsumer = 3,
    /// The server is stopping: flush, then SHUTTING_DOWN.
    ShuttingDown = 4,
    /// A write made no progress for the write timeout, or failed.
    WriteFailed = 5,
}

impl CloseReason {
    fn from_u8(value: u8) -> Option<CloseReason> {
        Some(match value {
            1 => CloseReason::PeerClosed,
            2 => CloseReason::Fatal,
            3 => CloseReason::SlowConsumer,
            4 => CloseReason::ShuttingDown,
            5 => CloseReason::WriteFailed,
            _ => return None,
        })
    }

    /// The ERROR the writer sends last for this reason, if any.
    pub fn final_error(self) -> Option<(ErrorCode, &'static str)> {
        match self {
            CloseReason::SlowConsumer => Some((
                ErrorCode::SlowConsumer,
                "you fell too far behind your rooms and were disconnected; read faster or join fewer busy rooms",
            )),
            CloseReason::ShuttingDown => Some((
                ErrorCode::ShuttingDown,
                "the server is shutting down; reconnect later",
            )),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "closed by client",
            CloseReason::Fatal => "fatal protocol error",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::ShuttingDown => "server shutdown",
            CloseReason::WriteFailed => "write failed or timed out",
        }
    }
}

/// Why a push did not go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// No room now (entries or bytes); the caller may wait.
    Full,
    /// The connection is closing; drop the frames for it.
    Closed,
}

/// Limits of one outbound queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub items: usize,
    pub bytes: usize,
}

/// The shared half of a connection.
#[derive(Debug)]
pub struct Peer {
    /// Server-unique number; the connectionId is `c{id}`.
    pub id: u64,
    pub addr: SocketAddr,
    /// Shared by the reader and the writer: one file descriptor a connection.
    pub stream: TcpStream,
    pub state: StateCell,
    /// Reader and writer threads still running; the last one out closes.
    pub threads_left: AtomicU8,
    /// Totals, stored by each thread as it ends, for the disconnect log.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The reader thread while it runs, so a close can wake it.
    reader: parking_lot::Mutex<Option<libc::pthread_t>>,
    /// Set once the writer has written its last byte.
    writer_done: std::sync::atomic::AtomicBool,
    /// The ERROR a fatal close from the reader ends with; written by the
    /// writer after everything queued, so it is always the last frame.
    final_error: std::sync::OnceLock<(ErrorCode, Arc<Batch>)>,
    tx: Sender<Outgoing>,
    /// Bytes pushed and not yet written; bounded by `max_bytes`.
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    reason: AtomicU8,
}

impl Peer {
    pub fn new(
        id: u64,
        addr: SocketAddr,
        stream: TcpStream,
        limits: QueueLimits,
    ) -> (Arc<Peer>, Receiver<Outgoing>) {
        let (tx, rx) = crossbeam_channel::bounded(limits.items.max(2));
        let peer = Peer {
            id,
            addr,
            stream,
            state: StateCell::default(),
            threads_left: AtomicU8::new(2),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            reader: parking_lot::Mutex::new(None),
            writer_done: std::sync::atomic::AtomicBool::new(false),
            final_error: std::sync::OnceLock::new(),
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes: limits.bytes,
            reason: AtomicU8::new(0),
        };
        (Arc::new(peer), rx)
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.reason.load(Ordering::Acquire))
    }

    /// Whether frames pushed now may still be written.
    pub fn is_closing(&self) -> bool {
        self.reason.load(Ordering::Acquire) != 0
    }

    /// Records why the connection ends (first reason wins), moves it to
    /// CLOSING and wakes its writer. Returns whether this call decided it.
    pub fn close(&self, reason: CloseReason) -> bool {
        let won = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            if let Ok(from) = self.state.advance(ConnState::Closing) {
                log::debug!("c{}: {from} → CLOSING ({})", self.id, reason.describe());
            }
            // If the queue is full the writer is busy and sees the reason
            // once it has drained; otherwise this wakes it.
            let _ = self.tx.try_send(None);
            self.wake_reader();
        }
        won
    }

    /// Closes for a fatal protocol error whose ERROR frame is `error`.
    ///
    /// The frame is recorded before the close, and the close stops every
    /// later push, so nothing can be queued behind it. Returns whether this
    /// call decided the close (otherwise another reason's ERROR is sent).
    pub fn close_fatal(&self, code: ErrorCode, message: &str) -> bool {
        let _ = self
            .final_error
            .set((code, Arc::new(Batch::error(code, message))));
        self.close(CloseReason::Fatal)
    }

    /// The ERROR recorded by [`Peer::close_fatal`].
    pub fn final_error(&self) -> Option<(ErrorCode, Arc<Batch>)> {
        self.final_error.get().cloned()
    }

    /// Records the calling thread as this connection's reader (`true`) or
    /// that it is leaving (`false`).
    pub fn register_reader(&self, running: bool) {
        *self.reader.lock() = running.then(crate::wake::current);
    }

    /// Interrupts the reader if it is waiting for input.
    fn wake_reader(&self) {
        // The lock keeps the reader from exiting while it is signalled.
        if let Some(thread) = *self.reader.lock()
            && thread != crate::wake::current()
        {
            crate::wake::wake(thread);
        }
    }

    pub fn set_writer_done(&self) {
        self.writer_done.store(true, Ordering::Release);
    }

    pub fn writer_done(&self) -> bool {
        self.writer_done.load(Ordering::Acquire)
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Reserves queue bytes for `len`; one batch is always allowed into an
    /// empty queue so a frame larger than the bound still goes through.
    fn reserve(&self, len: usize) -> bool {
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if before + len > self.max_bytes / 2 && before <= self.max_bytes / 2 {
            self.enter_draining();
        }
        true
    }

    fn enter_draining(&self) {
        if self
            .state
            .advance_from(ConnState::Open, ConnState::Draining)
        {
            log::debug!(
                "c{}: OPEN → DRAINING ({} bytes queued)",
                self.id,
                self.queued_bytes()
            );
        }
    }

    /// Counts bytes the writer adds on its own (the final ERROR).
    pub fn reserve_unbounded(&self, len: usize) {
        self.queued_bytes.fetch_add(len, Ordering::AcqRel);
    }

    /// Called by the writer after writing `len` bytes.
    pub fn written(&self, len: usize) {
        let after = self.queued_bytes.fetch_sub(len, Ordering::AcqRel) - len;
        if after < self.max_bytes / 4
            && self.state.get() == ConnState::Draining
            && self
                .state
                .advance_from(ConnState::Draining, ConnState::Open)
        {
            log::debug!("c{}: DRAINING → OPEN ({after} bytes queued)", self.id);
        }
    }

    /// Pushes without waiting.
    pub fn try_push(&self, batch: &Arc<Batch>) -> Result<(), PushError> {
        if self.is_closing() {
            return Err(PushError::Closed);
        }
        let len = batch.bytes.len();
        if !self.reserve(len) {
            return Err(PushError::Full);
        }
        self.send_reserved(batch, None)
    }

    /// Sends a batch whose bytes are reserved, without waiting or waiting up
    /// to `wait`; gives the reservation back if it does not go in.
    fn send_reserved(&self, batch: &Arc<Batch>, wait: Option<Duration>) -> Result<(), PushError> {
        let item = Some(Arc::clone(batch));
        let result = match wait {
            None => self.tx.try_send(item).map_err(|e| match e {
                TrySendError::Full(_) => PushError::Full,
                TrySendError::Disconnected(_) => PushError::Closed,
            }),
            Some(wait) => self.tx.send_timeout(item, wait).map_err(|e| match e {
                SendTimeoutError::Timeout(_) => PushError::Full,
                SendTimeoutError::Disconnected(_) => PushError::Closed,
            }),
        };
        if result.is_err() {
            self.queued_bytes
                .fetch_sub(batch.bytes.len(), Ordering::AcqRel);
        }
        result
    }

    /// Pushes, waiting for room until `deadline`. `Full` means the queue
    /// stayed full: the caller decides whether that makes a slow consumer.
    pub fn push_until(&self, batch: &Arc<Batch>, deadline: Instant) -> Result<(), PushError> {
        let len = batch.bytes.len();
        loop {
            if self.is_closing() {
                return Err(PushError::Closed);
            }
            let now = Instant::now();
            if self.reserve(len) {
                return self.send_reserved(batch, Some(deadline.saturating_duration_since(now)));
            }
            if now >= deadline {
                return Err(PushError::Full);
            }
            // Over the byte bound with entries to spare: the writer frees
            // bytes as it writes; look again shortly.
            std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
        }
    }

    /// Pushes with the publisher's backpressure rule: wait up to the stall
    /// bound, then cut the member off as a slow consumer.
    pub fn push_or_cut(&self, batch: &Arc<Batch>, stall: Duration, counters: &Counters) {
        match self.try_push(batch) {
            Ok(()) | Err(PushError::Closed) => {}
            Err(PushError::Full) => {
                if self.push_until(batch, Instant::now() + stall) == Err(PushError::Full) {
                    self.cut_slow(counters);
                }
            }
        }
    }

    /// Cuts the connection off as a slow consumer (once).
    pub fn cut_slow(&self, counters: &Counters) {
        if self.close(CloseReason::SlowConsumer) {
            counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "c{}: slow consumer detected ({} bytes queued); flushing and disconnecting",
                self.id,
                self.queued_bytes()
            );
        }
    }
}
