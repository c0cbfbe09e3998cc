//! A connection's outbound side: the bounded queue that rooms and the
//! connection's own reader push into, its byte accounting, and the verdict
//! that ends the connection's output. No socket is involved (the write half
//! is attached to its `output` when the connection starts), so all of it is
//! tested in memory below.
//!
//! The queue is a bounded `crossbeam_channel` of shared byte batches,
//! bounded both in entries and in bytes. A push never waits while a lock is
//! held: [`Outbound::offer`] is what runs under the room lock, and only after
//! the lock is released does a publisher wait for the members whose queue
//! was full, with [`Stalled::settle`]. That pair is the one deliver-or-cut
//! rule: wait for them all against one deadline, the stall bound, then cut
//! off whoever is still full as a slow consumer. A publisher is therefore
//! held up at most the stall bound per delivery, and only when a member is
//! not keeping up.
//!
//! **Order.** A batch offered to a full queue is not simply retried later:
//! another publisher's batch, offered after it under the room's lock, could
//! find room first and overtake it, and members would disagree on the
//! room's order (SPEC.md 5.6). So a full queue grows a *backlog*: the
//! batches offered while it is full, in the order they were offered. While
//! the backlog holds anything, every offer joins its end, and the waiting
//! publishers move it into the queue front first, one at a time. Nobody
//! waits under the room's lock, so a stalled member holds up nobody else's
//! deliveries, and its backlog holds at most one batch per publisher
//! waiting for it, each for at most the stall bound.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;
use protocol::ErrorPayload;

pub(crate) use super::batch::{Batch, Outgoing};
use super::close::CloseReason;
use super::doorbell::Doorbell;
use super::output::{Accounts, Flushed, Output};
use super::state::{ConnState, StateCell};
use crate::budget::MemoryBudget;
use crate::counters::Counters;
use crate::sys::wake::Wakeable;

/// Why a push did not go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// No room now (entries or bytes); the caller may wait.
    Full,
    /// The connection is closing; drop the frames for it.
    Closed,
}

/// Limits of one outbound queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) items: usize,
    pub(crate) bytes: usize,
}

/// The sending side of one connection's queue, and its fate.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Server-unique number; the connectionId is `c{id}`.
    id: u64,
    tx: Sender<Outgoing>,
    /// Bytes pushed and not yet written; bounded by `max_bytes`.
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// The server-wide budget: every change of `queued_bytes` is charged
    /// or credited to it too, and what is left when the queue goes.
    memory: Arc<MemoryBudget>,
    /// INIT → OPEN ⟷ DRAINING → CLOSING → CLOSED; DRAINING follows the
    /// queue's fill, which is why the state lives beside the queue.
    state: StateCell,
    /// Why the connection ends; set once, and every push after it fails.
    reason: OnceLock<CloseReason>,
    /// The ERROR a fatal close from the reader ends with; recorded before
    /// the close so the writer sends it after everything queued, last.
    final_error: OnceLock<Arc<Batch>>,
    /// The `retryAfterMs` a SHUTTING_DOWN close carries: each connection
    /// gets its own, so that a drain's reconnects spread (SPEC.md 5.9).
    shutdown_hint: OnceLock<u64>,
    /// The user the first HELLO settled on (a later one cannot change it),
    /// for `/connz`.
    user: OnceLock<Box<str>>,
    /// The reader, so a close decided on another thread interrupts its wait.
    reader: Wakeable,
    /// The writer's: rung when a publisher cannot finish writing, after a
    /// push that had to wait, and on close.
    bell: Doorbell,
    /// The write half and what is being written, shared by the writer and
    /// the publishers that flush for it.
    output: Output,
    /// Batches offered while the queue was full, oldest first (see the
    /// module's doc on order). Not charged to the budget: each is held by
    /// the publisher waiting for it anyway, and shared with the queues of
    /// the other members.
    backlog: Mutex<VecDeque<Arc<Batch>>>,
    /// Whether `backlog` may hold anything: read without its lock on every
    /// offer, written under it.
    backlogged: AtomicBool,
    /// Held by the one publisher moving the backlog into the queue, so two
    /// cannot move two batches in the wrong order.
    mover: Mutex<()>,
    /// The HELLO asked for `seq` and `epoch` in binary deliveries.
    binary_seq: AtomicBool,
    /// The HELLO turned membership events off.
    quiet: AtomicBool,
}

impl Outbound {
    /// A queue for connection `id` outside any server's budget, and the
    /// receiver its writer takes from.
    #[cfg(test)]
    pub(crate) fn new(id: u64, limits: QueueLimits) -> (Arc<Outbound>, Receiver<Outgoing>) {
        Outbound::accounted(id, limits, Arc::default())
    }

    /// A queue for connection `id` whose bytes count against `memory`, and
    /// the receiver its writer takes from.
    pub(crate) fn accounted(
        id: u64,
        limits: QueueLimits,
        memory: Arc<MemoryBudget>,
    ) -> (Arc<Outbound>, Receiver<Outgoing>) {
        let (tx, rx) = crossbeam_channel::bounded(limits.items);
        let output = Output::new(rx.clone());
        let outbound = Outbound {
            id,
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes: limits.bytes,
            memory,
            state: StateCell::default(),
            reason: OnceLock::new(),
            final_error: OnceLock::new(),
            shutdown_hint: OnceLock::new(),
            user: OnceLock::new(),
            reader: Wakeable::default(),
            bell: Doorbell::default(),
            output,
            backlog: Mutex::new(VecDeque::new()),
            backlogged: AtomicBool::new(false),
            mover: Mutex::new(()),
            binary_seq: AtomicBool::new(false),
            quiet: AtomicBool::new(false),
        };
        (Arc::new(outbound), rx)
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Records the connection's user, once.
    pub(crate) fn set_user(&self, user: &str) {
        let _ = self.user.set(user.into());
    }

    /// Records what the HELLO asked for: binary deliveries with `seq`, and
    /// whether membership events are wanted.
    pub(crate) fn set_options(&self, binary_seq: bool, member_events: bool) {
        self.binary_seq.store(binary_seq, Ordering::Relaxed);
        self.quiet.store(!member_events, Ordering::Relaxed);
    }

    /// Whether binary deliveries to it carry `seq` and `epoch`.
    pub(crate) fn binary_seq(&self) -> bool {
        self.binary_seq.load(Ordering::Relaxed)
    }

    /// Whether it turned membership events off.
    pub(crate) fn quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed)
    }

    /// The connection's user, once its HELLO named one.
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.get().map(|user| &**user)
    }

    pub(crate) fn state(&self) -> &StateCell {
        &self.state
    }

    /// The reader's registration, for interrupting its waits.
    pub(crate) fn reader(&self) -> &Wakeable {
        &self.reader
    }

    /// The writer's doorbell, for it to sleep on.
    pub(crate) fn bell(&self) -> &Doorbell {
        &self.bell
    }

    /// The connection's output, for its writer thread.
    pub(crate) fn output(&self) -> &Output {
        &self.output
    }

    /// Writes what is queued for this connection now, from the calling
    /// thread, or hands it to the writer (see `output`). Publishers call it
    /// after queueing, once they hold no lock.
    pub(crate) fn flush_now(&self, counters: &Counters) -> Flushed {
        self.output.flush_now(self, counters)
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    /// Whether frames pushed now may still be written.
    pub(crate) fn is_closing(&self) -> bool {
        self.reason.get().is_some()
    }

    /// Records why the connection ends (first reason wins), moves it to
    /// CLOSING, and wakes its writer and its reader. Returns whether this
    /// call decided it.
    pub(crate) fn close(&self, reason: CloseReason) -> bool {
        if self.reason.set(reason).is_err() {
            return false;
        }
        if let Ok(from) = self.state.advance(ConnState::Closing) {
            tracing::debug!("c{}: {from} → CLOSING ({reason})", self.id);
        }
        // The final flush is bounded from now.
        self.output.closing();
        // Nothing more goes into the queue, so nothing waits to.
        self.backlog.lock().clear();
        // The writer finishes what is queued, then sees the reason.
        self.bell.ring();
        self.reader.wake();
        true
    }

    /// Closes with SHUTTING_DOWN carrying `retry_after_ms`, sent after
    /// everything already queued. Returns whether this call decided it.
    pub(crate) fn close_for_shutdown(&self, retry_after_ms: u64) -> bool {
        if self.is_closing() {
            return false;
        }
        let _ = self.shutdown_hint.set(retry_after_ms);
        self.close(CloseReason::Shutdown)
    }

    /// Closes for a fatal `error`, sent after everything already queued.
    /// Returns whether this call decided the close (otherwise the earlier
    /// reason's ERROR, if any, is sent).
    pub(crate) fn close_with_error(&self, error: &ErrorPayload) -> bool {
        if self.is_closing() {
            return false;
        }
        let _ = self.final_error.set(Arc::new(Batch::error_payload(error)));
        self.close(CloseReason::for_fatal(error.code))
    }

    /// The ERROR the writer sends last, if the close reason has one.
    pub(crate) fn final_error(&self) -> Option<Arc<Batch>> {
        let reason = self.close_reason()?;
        let code = reason.code()?;
        // A reason decided elsewhere has its own words, even if the reader
        // raced it and recorded an ERROR of its own.
        match reason.standard_message() {
            Some(message) if matches!(reason, CloseReason::Shutdown) => {
                let mut error = ErrorPayload::new(code, message);
                if let Some(&hint) = self.shutdown_hint.get() {
                    error = error.retry_after(hint);
                }
                Some(Arc::new(Batch::error_payload(&error)))
            }
            Some(message) => Some(Arc::new(Batch::error(code, message))),
            None => self.final_error.get().cloned(),
        }
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Reserves queue bytes for `len`; one batch is always allowed into an
    /// empty queue so a frame larger than the bound still goes through.
    /// While the server is over its memory budget a queue that holds
    /// anything takes nothing more, so the budget is exceeded by at most
    /// one batch per connection while the heaviest are being shed.
    /// Returns the bytes queued with `len` in, or `None` for no room.
    fn reserve(&self, len: usize) -> Option<usize> {
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && (before + len > self.max_bytes || self.memory.is_over()) {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return None;
        }
        self.memory.charge(len);
        if before + len > self.max_bytes / 2
            && before <= self.max_bytes / 2
            && self
                .state
                .advance_from(ConnState::Open, ConnState::Draining)
        {
            tracing::debug!(
                "c{}: OPEN → DRAINING ({} bytes queued)",
                self.id,
                before + len
            );
        }
        Some(before + len)
    }

    /// Counts bytes the writer adds on its own (the final ERROR).
    pub(crate) fn reserve_unbounded(&self, len: usize) {
        self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        self.memory.charge(len);
    }

    /// Called by the writer after writing `len` bytes, as each partial write
    /// completes, so a member reading slowly but steadily makes room for its
    /// publishers all along and is never taken for a stuck one.
    pub(crate) fn written(&self, len: usize) {
        let after = self.queued_bytes.fetch_sub(len, Ordering::AcqRel) - len;
        self.memory.credit(len);
        if after < self.max_bytes / 4
            && self.state.get() == ConnState::Draining
            && self
                .state
                .advance_from(ConnState::Draining, ConnState::Open)
        {
            tracing::debug!("c{}: DRAINING → OPEN ({after} bytes queued)", self.id);
        }
    }

    /// Pushes without waiting.
    #[cfg(test)]
    pub(crate) fn try_push(&self, batch: &Arc<Batch>) -> Result<(), PushError> {
        self.push_now(batch).map(drop)
    }

    /// Pushes without waiting; the bytes queued with the batch in.
    fn push_now(&self, batch: &Arc<Batch>) -> Result<usize, PushError> {
        if self.is_closing() {
            return Err(PushError::Closed);
        }
        let Some(queued) = self.reserve(batch.bytes.len()) else {
            return Err(PushError::Full);
        };
        self.send_reserved(batch, None).map(|()| queued)
    }

    /// Records the queue depth a sampled batch met (SPEC.md 12.1), once
    /// for each MESSAGE in it.
    fn observe_depth(&self, batch: &Batch, queued: usize, counters: &Counters) {
        if batch.read_at.is_some() {
            counters.histograms.queue_bytes.observe_times(
                self.id,
                queued as u64,
                u64::from(batch.frames),
            );
        }
    }

    /// Sends a batch whose bytes are reserved, without waiting or waiting up
    /// to `wait`; gives the reservation back if it does not go in.
    fn send_reserved(&self, batch: &Arc<Batch>, wait: Option<Duration>) -> Result<(), PushError> {
        let item = Arc::clone(batch);
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
        match result {
            // A push that had to wait is not followed by a flush: the
            // writer takes it.
            Ok(()) if wait.is_some() => self.bell.ring(),
            Ok(()) => {}
            Err(_) => {
                self.queued_bytes
                    .fetch_sub(batch.bytes.len(), Ordering::AcqRel);
                self.memory.credit(batch.bytes.len());
            }
        }
        result
    }

    /// Pushes, waiting for room until `deadline`. `Full` means the queue
    /// stayed full; otherwise the bytes queued with the batch in.
    fn push_until(&self, batch: &Arc<Batch>, deadline: Instant) -> Result<usize, PushError> {
        let len = batch.bytes.len();
        loop {
            if self.is_closing() {
                return Err(PushError::Closed);
            }
            let now = Instant::now();
            if let Some(queued) = self.reserve(len) {
                let wait = deadline.saturating_duration_since(now);
                return self.send_reserved(batch, Some(wait)).map(|()| queued);
            }
            if now >= deadline {
                return Err(PushError::Full);
            }
            // Over the byte bound with entries to spare: the writer frees
            // bytes as it writes; look again shortly.
            std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
        }
    }

    /// Pushes without waiting. A member that took the batch goes into
    /// `touched`, to be flushed by the caller once it holds no lock; one
    /// whose queue is full goes into `stalled`, to be waited for by
    /// [`Stalled::settle`].
    ///
    /// Returns whether the batch is on its way (queued, or in the backlog
    /// for the publisher to wait for): false only for a closing connection.
    pub(crate) fn offer(
        self: &Arc<Self>,
        batch: &Arc<Batch>,
        touched: &mut Vec<Arc<Outbound>>,
        stalled: &mut Stalled,
        counters: &Counters,
    ) -> bool {
        if self.backlogged.load(Ordering::Acquire) {
            let mut backlog = self.backlog.lock();
            if !backlog.is_empty() {
                if self.is_closing() {
                    return false;
                }
                backlog.push_back(Arc::clone(batch));
                stalled.0.push((Arc::clone(self), Arc::clone(batch)));
                return true;
            }
        }
        match self.push_now(batch) {
            Ok(queued) => {
                self.observe_depth(batch, queued, counters);
                touched.push(Arc::clone(self));
                true
            }
            Err(PushError::Full) => {
                let mut backlog = self.backlog.lock();
                if self.is_closing() {
                    return false;
                }
                backlog.push_back(Arc::clone(batch));
                self.backlogged.store(true, Ordering::Release);
                stalled.0.push((Arc::clone(self), Arc::clone(batch)));
                true
            }
            Err(PushError::Closed) => false,
        }
    }

    /// Moves the backlog into the queue, front first, until `batch` is in
    /// it, waiting for room until `deadline`. `Full` means the queue stayed
    /// full (or another publisher moving the backlog did) until then.
    /// `Ok` has the bytes queued with the batch in, when this call moved it.
    fn push_in_order(
        &self,
        batch: &Arc<Batch>,
        deadline: Instant,
    ) -> Result<Option<usize>, PushError> {
        let Some(_mover) = self.mover.try_lock_until(deadline) else {
            return if self.in_backlog(batch) {
                Err(PushError::Full)
            } else {
                Ok(None)
            };
        };
        loop {
            let front = {
                let backlog = self.backlog.lock();
                if !backlog.iter().any(|queued| Arc::ptr_eq(queued, batch)) {
                    // Moved by an earlier publisher, or dropped by a close.
                    return if self.is_closing() {
                        Err(PushError::Closed)
                    } else {
                        Ok(None)
                    };
                }
                match backlog.front() {
                    Some(front) => Arc::clone(front),
                    None => return Ok(None),
                }
            };
            let queued = self.push_until(&front, deadline)?;
            let mut backlog = self.backlog.lock();
            if backlog
                .front()
                .is_some_and(|queued| Arc::ptr_eq(queued, &front))
            {
                backlog.pop_front();
            }
            if backlog.is_empty() {
                self.backlogged.store(false, Ordering::Release);
            }
            if Arc::ptr_eq(&front, batch) {
                return Ok(Some(queued));
            }
        }
    }

    fn in_backlog(&self, batch: &Arc<Batch>) -> bool {
        self.backlog
            .lock()
            .iter()
            .any(|queued| Arc::ptr_eq(queued, batch))
    }

    /// Cuts the connection off as a slow consumer (once).
    fn cut_slow(&self, counters: &Counters) {
        let queued_bytes = self.queued_bytes();
        if self.close(CloseReason::SlowConsumer { queued_bytes }) {
            counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Outbound {
    /// What was queued and never written (a connection that ended with a
    /// backlog) goes with the queue: it leaves the budget now.
    fn drop(&mut self) {
        self.memory.credit(*self.queued_bytes.get_mut());
    }
}

impl Accounts for Outbound {
    fn id(&self) -> u64 {
        self.id
    }

    fn written(&self, len: usize) {
        Outbound::written(self, len);
    }

    fn reserve_unbounded(&self, len: usize) {
        Outbound::reserve_unbounded(self, len);
    }

    fn ring(&self) {
        self.bell.ring();
    }
}

/// Members whose queue was full when a batch was offered, each with the
/// batch it was offered (members of one room may get different encodings
/// of the same messages). Empty (and not allocated) on the fast path.
#[derive(Debug, Default)]
pub(crate) struct Stalled(Vec<(Arc<Outbound>, Arc<Batch>)>);

impl Stalled {
    /// Waits for every stalled member against one deadline, `stall` from
    /// now, and cuts off whoever is still full then as a slow consumer.
    /// Returns how many took their batch.
    pub(crate) fn settle(self, stall: Duration, counters: &Counters) -> usize {
        if self.0.is_empty() {
            return 0;
        }
        counters
            .stall_waits
            .fetch_add(self.0.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + stall;
        let mut took = 0;
        for (member, batch) in self.0 {
            match member.push_in_order(&batch, deadline) {
                Ok(queued) => {
                    if let Some(queued) = queued {
                        member.observe_depth(&batch, queued, counters);
                    }
                    took += 1;
                }
                Err(PushError::Full) => member.cut_slow(counters),
                Err(PushError::Closed) => {}
            }
        }
        took
    }
}

#[cfg(test)]
mod tests {
    use protocol::ErrorCode;

    use super::*;

    fn batch(len: usize) -> Arc<Batch> {
        Arc::new(Batch::raw(vec![0; len], 1))
    }

    fn open(limits: QueueLimits) -> (Arc<Outbound>, Receiver<Outgoing>) {
        let (outbound, rx) = Outbound::new(7, limits);
        outbound.state().advance(ConnState::Open).unwrap();
        (outbound, rx)
    }

    /// What the writer does with an entry: take it, report it written.
    fn write_one(outbound: &Outbound, rx: &Receiver<Outgoing>) -> Option<usize> {
        let batch = rx.try_recv().ok()?;
        outbound.written(batch.bytes.len());
        Some(batch.bytes.len())
    }

    const SMALL: QueueLimits = QueueLimits {
        items: 4,
        bytes: 1000,
    };

    #[test]
    fn a_full_queue_refuses_on_entries_and_on_bytes() {
        let (outbound, _rx) = open(SMALL);
        for _ in 0..4 {
            outbound.try_push(&batch(10)).unwrap();
        }
        assert_eq!(outbound.try_push(&batch(10)), Err(PushError::Full));
        assert_eq!(
            outbound.queued_bytes(),
            40,
            "a refused push reserves nothing"
        );

        let (outbound, _rx) = open(SMALL);
        outbound.try_push(&batch(600)).unwrap();
        assert_eq!(outbound.try_push(&batch(600)), Err(PushError::Full));
        assert_eq!(outbound.queued_bytes(), 600);
    }

    #[test]
    fn the_queue_charges_the_budget_and_gives_it_all_back() {
        let memory = Arc::new(MemoryBudget::new(1000));
        let (outbound, rx) = Outbound::accounted(7, SMALL, Arc::clone(&memory));
        outbound.state().advance(ConnState::Open).unwrap();
        outbound.try_push(&batch(300)).unwrap();
        outbound.try_push(&batch(200)).unwrap();
        assert_eq!(memory.used(), 500);
        // Another's bytes take the server over its budget: a queue holding
        // anything takes no more, an empty one still takes one batch.
        memory.charge(600);
        assert_eq!(outbound.try_push(&batch(10)), Err(PushError::Full));
        let (empty, _empty_rx) = Outbound::accounted(8, SMALL, Arc::clone(&memory));
        empty.state().advance(ConnState::Open).unwrap();
        empty.try_push(&batch(50)).unwrap();
        assert_eq!(memory.used(), 1150);
        memory.credit(600);
        drop((empty, _empty_rx));
        assert_eq!(memory.used(), 500, "a queue gives back what it held");
        // Written bytes leave the budget as they go.
        write_one(&outbound, &rx);
        assert_eq!(memory.used(), 200);
        outbound.try_push(&batch(10)).unwrap();
        drop((outbound, rx));
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn one_oversized_batch_still_fits_an_empty_queue() {
        let (outbound, rx) = open(SMALL);
        outbound.try_push(&batch(5000)).unwrap();
        assert_eq!(outbound.try_push(&batch(1)), Err(PushError::Full));
        assert_eq!(write_one(&outbound, &rx), Some(5000));
        outbound.try_push(&batch(1)).unwrap();
    }

    #[test]
    fn filling_past_half_drains_and_emptying_below_a_quarter_reopens() {
        let (outbound, rx) = open(SMALL);
        outbound.try_push(&batch(400)).unwrap();
        assert_eq!(outbound.state().get(), ConnState::Open);
        outbound.try_push(&batch(200)).unwrap();
        assert_eq!(outbound.state().get(), ConnState::Draining);
        write_one(&outbound, &rx);
        assert_eq!(outbound.state().get(), ConnState::Open, "200 of 1000 left");
    }

    #[test]
    fn partial_writes_give_room_back_as_they_complete() {
        let (outbound, rx) = open(SMALL);
        outbound.try_push(&batch(900)).unwrap();
        assert_eq!(outbound.try_push(&batch(300)), Err(PushError::Full));
        let taken = rx.try_recv().unwrap();
        // The writer has written 700 of the 900 bytes so far.
        outbound.written(700);
        outbound.try_push(&batch(300)).unwrap();
        outbound.written(taken.bytes.len() - 700);
        assert_eq!(outbound.queued_bytes(), 300);
    }

    #[test]
    fn a_member_that_stays_full_past_the_stall_bound_is_cut_off() {
        let counters = Counters::default();
        let (stuck, _stuck_rx) = open(QueueLimits {
            items: 1,
            bytes: 1000,
        });
        let (healthy, healthy_rx) = open(SMALL);
        stuck.try_push(&batch(10)).unwrap();
        let delivery = batch(10);
        let mut stalled = Stalled::default();
        stuck.offer(&delivery, &mut Vec::new(), &mut stalled, &counters);
        healthy.offer(&delivery, &mut Vec::new(), &mut stalled, &counters);
        let started = Instant::now();
        stalled.settle(Duration::from_millis(30), &counters);
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(
            stuck.close_reason(),
            Some(CloseReason::SlowConsumer { queued_bytes: 10 })
        );
        assert_eq!(stuck.state().get(), ConnState::Closing);
        assert_eq!(counters.slow_consumers(), 1);
        assert_eq!(
            counters.stall_waits(),
            1,
            "only the full member was waited for"
        );
        assert_eq!(healthy.close_reason(), None);
        assert_eq!(write_one(&healthy, &healthy_rx), Some(10));
        // Cut off: nothing more is queued for it.
        assert_eq!(stuck.try_push(&batch(1)), Err(PushError::Closed));
    }

    #[test]
    fn a_member_that_makes_room_within_the_stall_bound_gets_the_batch() {
        let counters = Counters::default();
        let (slow, rx) = open(QueueLimits {
            items: 1,
            bytes: 1000,
        });
        slow.try_push(&batch(10)).unwrap();
        let delivery = batch(20);
        let mut stalled = Stalled::default();
        slow.offer(&delivery, &mut Vec::new(), &mut stalled, &counters);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // The writer gets to it while the publisher waits.
                let first = rx.recv().unwrap();
                slow.written(first.bytes.len());
            });
            stalled.settle(Duration::from_secs(30), &counters);
        });
        assert_eq!(slow.close_reason(), None);
        assert_eq!(write_one(&slow, &rx), Some(20));
        assert_eq!(counters.slow_consumers(), 0);
        assert_eq!(counters.stall_waits(), 1);
    }

    #[test]
    fn a_full_member_gets_what_waits_for_it_in_the_order_offered() {
        let counters = Counters::default();
        let (member, rx) = open(QueueLimits {
            items: 1,
            bytes: 1000,
        });
        member.try_push(&batch(1)).unwrap();
        // Two publishers offer in turn (as the room's lock orders them);
        // both find the queue full.
        let (first, second) = (batch(2), batch(3));
        let mut stalled_first = Stalled::default();
        let mut stalled_second = Stalled::default();
        assert!(member.offer(&first, &mut Vec::new(), &mut stalled_first, &counters));
        assert!(member.offer(&second, &mut Vec::new(), &mut stalled_second, &counters));
        // Room frees up while the second publisher settles first: it must
        // not overtake the first.
        let written = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                (0..3)
                    .map(|_| {
                        let taken = rx.recv().unwrap();
                        member.written(taken.bytes.len());
                        taken.bytes.len()
                    })
                    .collect::<Vec<_>>()
            });
            stalled_second.settle(Duration::from_secs(30), &counters);
            stalled_first.settle(Duration::from_secs(30), &counters);
            writer.join().unwrap()
        });
        assert_eq!(written, [1, 2, 3], "the batches in the order offered");
        assert_eq!(member.close_reason(), None);
        assert_eq!(counters.slow_consumers(), 0);
        // And once the backlog is empty, offers go straight in again.
        let mut touched = Vec::new();
        assert!(member.offer(&batch(4), &mut touched, &mut Stalled::default(), &counters));
        assert_eq!(touched.len(), 1);
    }

    #[test]
    fn a_member_still_full_at_the_bound_is_cut_and_its_backlog_dropped() {
        let counters = Counters::default();
        let (member, _rx) = open(QueueLimits {
            items: 1,
            bytes: 1000,
        });
        member.try_push(&batch(1)).unwrap();
        let waiting = batch(2);
        let mut stalled = Stalled::default();
        member.offer(&waiting, &mut Vec::new(), &mut stalled, &counters);
        stalled.settle(Duration::from_millis(20), &counters);
        assert!(matches!(
            member.close_reason(),
            Some(CloseReason::SlowConsumer { .. })
        ));
        assert!(!member.in_backlog(&waiting));
        assert!(!member.offer(
            &batch(3),
            &mut Vec::new(),
            &mut Stalled::default(),
            &counters
        ));
    }

    #[test]
    fn the_fatal_error_is_last_and_the_first_reason_wins() {
        let (outbound, rx) = open(SMALL);
        outbound.try_push(&batch(10)).unwrap();
        assert!(outbound.close_with_error(&ErrorPayload::new(ErrorCode::ParseError, "bad JSON")));
        assert_eq!(outbound.try_push(&batch(10)), Err(PushError::Closed));
        assert!(!outbound.close(CloseReason::Shutdown));
        assert!(!outbound.close_with_error(&ErrorPayload::new(ErrorCode::InvalidFrame, "late")));
        assert_eq!(
            outbound.close_reason(),
            Some(CloseReason::Protocol(ErrorCode::ParseError))
        );
        // Queued: the delivery, and nothing behind it.
        assert_eq!(write_one(&outbound, &rx), Some(10));
        assert!(rx.try_recv().is_err());
        let last = outbound.final_error().unwrap();
        let (frame, _) = protocol::parse_frame(&last.bytes, u32::MAX)
            .unwrap()
            .unwrap();
        let error: ErrorPayload = serde_json::from_slice(frame.payload).unwrap();
        assert_eq!(error, ErrorPayload::new(ErrorCode::ParseError, "bad JSON"));
    }

    #[test]
    fn closes_decided_elsewhere_end_with_their_standard_error() {
        let (outbound, _rx) = open(SMALL);
        outbound.close(CloseReason::Shutdown);
        let last = outbound.final_error().unwrap();
        let (frame, _) = protocol::parse_frame(&last.bytes, u32::MAX)
            .unwrap()
            .unwrap();
        let error: ErrorPayload = serde_json::from_slice(frame.payload).unwrap();
        assert_eq!(error.code, ErrorCode::ShuttingDown);

        let (outbound, _rx) = open(SMALL);
        outbound.close(CloseReason::ClientClosed);
        assert!(outbound.final_error().is_none());
    }
}
