//! A connection's output: the write half, and the batches taken from the
//! queue and not yet fully written, behind one lock. Whoever holds the lock
//! writes, taking batches from the front of the queue, so bytes leave in
//! queue order and the accounting stays one, whichever thread writes.
//!
//! Two kinds of thread write:
//!
//! - **Publishers flush** ([`Output::flush_now`]): after a read, the thread
//!   that relayed a message writes it to the members it went to, without
//!   waiting (`MSG_DONTWAIT`). When traffic is thin this is the whole story:
//!   one `sendmsg` per delivery, no wake-up, no context switch. nats-server's
//!   read loop does the same (`flushClients`).
//! - **The writer thread** ([`Output::write_waiting`]) takes over whenever a
//!   publisher cannot finish: the socket would block, a write was partial,
//!   or the lock was busy. It writes with the write timeout, and it alone
//!   ends the output (the final ERROR, then the close).
//!
//! A publisher never waits for the lock (`try_lock`); the writer's waits are
//! for a publisher's non-blocking write at most. A publisher that cannot
//! finish rings the writer's doorbell, so nothing queued is left unwritten.
//! A publisher that finds the lock held by another publisher leaves its
//! batch to that one, which looks at the queue again before it lets go:
//! publishers of one room, flushing the same members at once, then cost no
//! wake-up (in the rooms bench, futex calls fell from about 2,500 to 270 a
//! second, and the server's CPU by a fifth).
//!
//! The writer also keeps an eye on a client that stops reading (see
//! `progress`): while it owes bytes it looks every check interval, blocked
//! in a write or asleep, and gives up once the client has taken nothing for
//! the write timeout. Bytes a publisher leaves in a socket the writer is not
//! watching start the clock, without a wake-up (thin traffic stays one
//! `sendmsg` per delivery); the housekeeping thread rings such a writer
//! within a second ([`Output::unwatched`]). After a close, the final flush
//! has the write timeout from the moment of the close, however slowly the
//! client keeps reading.
//!
//! A transport may accept bytes and still hold some of them (TLS encrypts
//! a record, and the socket takes only part of it): the write half says so
//! ([`WriteHalf::has_pending`]), that counts as work left for the writer,
//! and the writer flushes it like any other backlog.
//!
//! A WebSocket write half is handed each batch's WebSocket framing, made
//! once per batch and shared by every WebSocket member (`Batch::wire`,
//! `ws::framed`), where TCP and TLS are handed its Relay bytes: one slice
//! per batch either way. The offset into a batch counts the bytes handed
//! over; the queue, the memory budget and the counters are told the Relay
//! bytes each write took, exactly, a header's bytes counting none
//! (`Batch::relay_within`), so their accounting is the same whatever the
//! transport. The client's progress is judged on the bytes handed over,
//! headers included, since the socket's unsent count includes them.
//!
//! The writing functions are `#[inline(never)]`: their frames (an array of
//! 64 slices) then stay off the writer's frame that sleeps, and off the
//! reader's, so the stack pages they touch can be given back while the
//! connection is idle (see `sys::thread::trim_stack`).

use std::io::{self, IoSlice};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, fence};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use protocol::parse_frame;

use super::batch::{Batch, Outgoing, Wire};
use super::progress::{Delivery, Seen, check_interval};
use super::transport::{WriteHalf, is_timeout};
use super::ws::framed::Mark;
use crate::budget::MemoryBudget;
use crate::counters::{Counters, Tally};

/// What an output tells its queue as it writes (the queue's byte
/// accounting), and how it hands work to the writer thread.
pub(crate) trait Accounts {
    /// The connection's number, for logs.
    fn id(&self) -> u64;
    /// `len` bytes of queued batches were written.
    fn written(&self, len: usize);
    /// `len` bytes the output adds on its own (the final ERROR).
    fn reserve_unbounded(&self, len: usize);
    /// Wakes the writer thread.
    fn ring(&self);
}

/// Batches written per system call at most (IOV_MAX is 1024).
const MAX_SLICES: usize = 64;
/// Writes a publisher's flush makes at most, taking what other publishers
/// queued meanwhile, before it leaves the rest to the writer thread: a
/// publisher's own client waits while it writes for others.
const MAX_FLUSH_ROUNDS: u32 = 4;

#[derive(Debug)]
pub(crate) struct Output {
    state: Mutex<State>,
    /// When the connection's close was decided: the final flush must end
    /// within the write timeout of it.
    closing_at: OnceLock<Instant>,
    /// The write timeout, set once at `attach`: read without the lock by
    /// a lingering reader, which must not wait for a writer blocked in a
    /// write (it would stop draining the client's input meanwhile).
    write_timeout: OnceLock<Duration>,
    /// Frames and bytes written to this client, readable without the lock
    /// (a `/connz` must not wait behind a blocked write).
    sent: Sent,
    /// Set while a publisher holds the lock and will look at the queue
    /// again before it lets go: a publisher that finds the lock held then
    /// leaves its batch to that one instead of ringing the writer.
    combining: AtomicBool,
}

/// A connection's output so far, written only by the lock holder.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    frames: AtomicU64,
    bytes: AtomicU64,
}

impl Sent {
    /// Only the output's lock holder writes, so a load and a store do (no
    /// read-modify-write needed).
    fn add(&self, bytes: usize, frames: u64) {
        self.bytes
            .store(self.bytes.load(Relaxed) + bytes as u64, Relaxed);
        if frames > 0 {
            self.frames
                .store(self.frames.load(Relaxed) + frames, Relaxed);
        }
    }

    /// Frames written whole so far.
    pub(crate) fn frames(&self) -> u64 {
        self.frames.load(Relaxed)
    }

    /// Bytes written so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
}

struct State {
    /// The queue's receiving end; only the lock holder takes from it.
    /// Dropped when the output ends, which disconnects the queue: a
    /// publisher still waiting for room in it then stops at once.
    rx: Option<Receiver<Outgoing>>,
    /// Where the bytes go; `None` until the connection starts (and in tests
    /// of the queue alone).
    sink: Option<Box<dyn WriteHalf>>,
    /// What the sink is handed of each batch: its Relay bytes, or the
    /// batch's shared WebSocket framing.
    wire: Wire,
    /// Batches taken from the queue, oldest first, not yet fully written.
    pending: Vec<Arc<Batch>>,
    /// Bytes of `pending[0]` already written, counted as handed to the
    /// sink (its `wire` bytes).
    offset: usize,
    /// Of those, the batch's Relay bytes: what the queue and the counters
    /// have been told. The same as `offset` unless the sink is handed a
    /// WebSocket framing, where headers count nothing.
    relay_offset: usize,
    /// Where the walk of `pending[0]`'s framing that finds `relay_offset`
    /// resumes.
    mark: Mark,
    /// The output has ended (final ERROR written, direction closed).
    done: bool,
    /// Relay bytes written to this client, for the disconnect log.
    bytes_out: u64,
    /// Bytes handed to the sink in all (with a WebSocket framing's
    /// headers): what the client's progress is judged against, since the
    /// socket's unsent count includes them.
    wire_out: u64,
    /// Whether the client takes what it is sent.
    delivery: Delivery,
    /// The writer looks at this socket every check interval while it owes
    /// bytes. When it does not, bytes a publisher leaves behind set
    /// `unwatched`, and the housekeeping thread turns that into `rewatch`
    /// and rings it.
    watching: bool,
    unwatched: bool,
    rewatch: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("pending", &self.pending.len())
            .field("offset", &self.offset)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// How a publisher's flush went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything queued was written.
    All,
    /// The writer thread has to finish (busy lock, would block, partial).
    Handed,
}

impl Output {
    pub(crate) fn new(rx: Receiver<Outgoing>) -> Output {
        Output {
            state: Mutex::new(State {
                rx: Some(rx),
                sink: None,
                wire: Wire::Relay,
                pending: Vec::new(),
                offset: 0,
                relay_offset: 0,
                mark: Mark::default(),
                done: false,
                bytes_out: 0,
                wire_out: 0,
                delivery: Delivery::new(crate::config::MAX_TIMEOUT),
                watching: false,
                unwatched: false,
                rewatch: false,
            }),
            closing_at: OnceLock::new(),
            write_timeout: OnceLock::new(),
            sent: Sent::default(),
            combining: AtomicBool::new(false),
        }
    }

    /// What has been written to this client so far.
    pub(crate) fn sent(&self) -> &Sent {
        &self.sent
    }

    /// Gives the output its write half, the write timeout that judges
    /// whether the client still takes what it is sent, and the server's
    /// memory budget, which a batch's WebSocket framing is charged to.
    pub(crate) fn attach(
        &self,
        sink: Box<dyn WriteHalf>,
        write_timeout: Duration,
        memory: &Arc<MemoryBudget>,
    ) {
        let mut state = self.state.lock();
        state.wire = Wire::new(sink.framing(), memory);
        state.sink = Some(sink);
        state.delivery = Delivery::new(write_timeout);
        let _ = self.write_timeout.set(write_timeout);
    }

    /// Starts the final flush's clock: the connection is closing.
    pub(crate) fn closing(&self) {
        self.closing_at.get_or_init(Instant::now);
    }

    /// Whether the connection has been closing for longer than the final
    /// flush may take.
    pub(crate) fn past_flush_bound(&self) -> bool {
        let Some(at) = self.closing_at.get() else {
            return false;
        };
        let timeout = self
            .write_timeout
            .get()
            .copied()
            .unwrap_or(crate::config::MAX_TIMEOUT);
        at.elapsed() >= timeout
    }

    /// Whether a publisher left bytes in this socket while the writer was
    /// not watching it; if so the writer is to look (the caller rings it).
    /// Never waits for the lock: a writer blocked in a write holds it for
    /// up to the write timeout, and the housekeeping thread that asks must
    /// not stall behind it (it also sheds load past the memory budget). A
    /// held lock means someone is writing; the next tick looks again.
    pub(crate) fn unwatched(&self) -> bool {
        let Some(mut state) = self.state.try_lock() else {
            return false;
        };
        if !state.unwatched || state.watching {
            return false;
        }
        state.unwatched = false;
        // The usual case: the client has taken everything already. Looking
        // here costs one ioctl; waking the writer to look cost a context
        // switch per connection per second, 5% of the server's CPU with
        // 1,000 clients in chat rooms.
        if state
            .sink
            .as_ref()
            .and_then(|sink| sink.unsent_bytes())
            .is_some_and(|unsent| unsent == 0)
        {
            return false;
        }
        state.rewatch = true;
        true
    }

    /// The idle writer's look at bytes still in the socket: how long it may
    /// sleep before looking again (`None`: nothing is owed, sleep until
    /// rung), or `TimedOut` when the client has taken nothing for the
    /// write timeout.
    pub(crate) fn watch(&self) -> io::Result<Option<Duration>> {
        let mut state = self.state.lock();
        state.rewatch = false;
        state.unwatched = false;
        if state.done {
            return Ok(None);
        }
        let queued =
            !state.pending.is_empty() || state.rx.as_ref().is_some_and(|rx| !rx.is_empty());
        let unsent = state.sink.as_ref().and_then(|sink| sink.unsent_bytes());
        let written = state.wire_out;
        match state.delivery.look(written, unsent, queued, Instant::now()) {
            Seen::Idle => {
                state.watching = false;
                Ok(None)
            }
            Seen::Owed => {
                state.watching = true;
                Ok(Some(check_interval(state.delivery.timeout())))
            }
            Seen::Stuck => Err(stuck()),
        }
    }

    /// Bytes written to this client so far.
    pub(crate) fn bytes_out(&self) -> u64 {
        self.state.lock().bytes_out
    }

    /// A publisher's flush: writes what is queued without waiting, if the
    /// output is free and the socket takes it; otherwise leaves it to the
    /// writer thread and rings it.
    ///
    /// Publishers of one room flush the same members at nearly the same
    /// moment. One that finds the lock held by another publisher does not
    /// ring: the holder takes what was queued meanwhile before it lets go
    /// (see [`Output::combining`]), so two publishes cost no wake-up, and
    /// often one `sendmsg` for both.
    #[inline(never)]
    pub(crate) fn flush_now(&self, outbound: &impl Accounts, counters: &Counters) -> Flushed {
        let Some(mut state) = self.state.try_lock() else {
            // Our batch is in the queue (the caller pushed it before).
            // Either the holder's last look at the queue comes after this
            // fence and sees it, or the holder had stopped combining and
            // the writer is rung.
            fence(SeqCst);
            if self.combining.load(Relaxed) {
                return Flushed::Handed;
            }
            outbound.ring();
            return Flushed::Handed;
        };
        // Left over from an earlier partial write (the writer is on it), an
        // ended output, or no socket yet.
        if !state.pending.is_empty() || state.done || state.sink.is_none() {
            drop(state);
            outbound.ring();
            return Flushed::Handed;
        }
        self.combining.store(true, Relaxed);
        let before = state.wire_out;
        let mut rounds = 0;
        let (flushed, more) = loop {
            state.take_queued();
            let flushed =
                match state.write(outbound, counters, &self.sent, Wait::No, &self.closing_at) {
                    Ok(()) if state.pending.is_empty() && !state.sink_has_pending() => Flushed::All,
                    // Partial, would block, or a real error (which the
                    // writer meets too, and closes).
                    _ => Flushed::Handed,
                };
            rounds += 1;
            // Stop combining, then look once more: a publisher that failed
            // `try_lock` before this store relies on this look.
            self.combining.store(false, Relaxed);
            fence(SeqCst);
            let more = state.rx.as_ref().is_some_and(|rx| !rx.is_empty());
            if flushed == Flushed::Handed || !more || rounds == MAX_FLUSH_ROUNDS {
                break (flushed, more);
            }
            self.combining.store(true, Relaxed);
        };
        // Bytes left in a socket nobody watches: the clock starts now, and
        // the writer looks once housekeeping rings it.
        if !state.watching && state.wire_out > before {
            state.unwatched = true;
            state.delivery.owing(Instant::now());
        }
        drop(state);
        if flushed == Flushed::Handed || more {
            outbound.ring();
        }
        flushed
    }

    /// The writer thread's write: takes what is queued and writes all of it,
    /// waiting up to the write timeout for each bit of progress. Returns
    /// whether there was anything to write.
    #[inline(never)]
    pub(crate) fn write_waiting(
        &self,
        outbound: &impl Accounts,
        counters: &Counters,
    ) -> io::Result<bool> {
        let mut state = self.state.lock();
        if state.done {
            return Ok(false);
        }
        state.take_queued();
        if state.pending.is_empty() {
            if state.sink_has_pending() {
                state.flush_sink(&self.closing_at)?;
                return Ok(true);
            }
            return Ok(false);
        }
        state.write(outbound, counters, &self.sent, Wait::Yes, &self.closing_at)?;
        Ok(true)
    }

    /// Whether anything is queued or pending, here or in the transport, or
    /// a socket is to be watched.
    pub(crate) fn has_work(&self) -> bool {
        let state = self.state.lock();
        !state.pending.is_empty()
            || state.rewatch
            || state.rx.as_ref().is_some_and(|rx| !rx.is_empty())
            || state.sink_has_pending()
    }

    /// Ends the output: writes what is queued and `last` (the final ERROR),
    /// then closes the direction. Returns whether `last` was written.
    #[inline(never)]
    pub(crate) fn finish(
        &self,
        outbound: &impl Accounts,
        counters: &Counters,
        last: Option<Arc<Batch>>,
    ) -> bool {
        let mut state = self.state.lock();
        if state.done {
            return false;
        }
        let mut written = false;
        let mut result = Ok(());
        while result.is_ok() {
            state.take_queued();
            if state.pending.is_empty() {
                break;
            }
            result = state.write(outbound, counters, &self.sent, Wait::Yes, &self.closing_at);
        }
        if result.is_ok()
            && let Some(last) = last
        {
            outbound.reserve_unbounded(last.bytes.len());
            state.pending.push(last);
            // Written means in the socket, not merely accepted by the
            // transport.
            written = state
                .write(outbound, counters, &self.sent, Wait::Yes, &self.closing_at)
                .is_ok()
                && state.flush_sink(&self.closing_at).is_ok();
        }
        state.close();
        written
    }

    /// Ends the output without writing anything more.
    pub(crate) fn abandon(&self) {
        self.state.lock().close();
    }

    /// Ends the output of a connection being shed: drops what is queued
    /// unwritten and writes `last` (the final ERROR) only if no write is
    /// under way and the socket takes it without waiting. A client that is
    /// not reading, the usual reason to be shed, has a full socket and
    /// never gets it; nothing waits for it. Returns whether `last` went
    /// out whole.
    #[inline(never)]
    pub(crate) fn shed(
        &self,
        outbound: &impl Accounts,
        counters: &Counters,
        last: Option<Arc<Batch>>,
    ) -> bool {
        let Some(mut state) = self.state.try_lock() else {
            return false;
        };
        if state.done {
            return false;
        }
        // Queued bytes leave the budget when the queue goes, with the
        // connection; the memory itself goes now.
        let written = if state.offset == 0
            && let Some(last) = last
        {
            state.pending.clear();
            state.relay_offset = 0;
            state.mark = Mark::default();
            if let Some(rx) = &state.rx {
                while rx.try_recv().is_ok() {}
            }
            outbound.reserve_unbounded(last.bytes.len());
            state.pending.push(last);
            state
                .write(outbound, counters, &self.sent, Wait::No, &self.closing_at)
                .is_ok()
                && state.pending.is_empty()
                && !state.sink_has_pending()
        } else {
            false
        };
        state.pending.clear();
        state.close();
        written
    }
}

/// Whether a write may wait for the socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Yes,
    No,
}

impl State {
    fn take_queued(&mut self) {
        let Some(rx) = &self.rx else { return };
        while self.pending.len() < MAX_SLICES {
            match rx.try_recv() {
                Ok(batch) => self.pending.push(batch),
                Err(_) => break,
            }
        }
    }

    fn sink_has_pending(&self) -> bool {
        self.sink.as_ref().is_some_and(|sink| sink.has_pending())
    }

    /// Writes what the transport still holds, looking at the client's
    /// progress every check interval like a waiting write (see `write`).
    fn flush_sink(&mut self, closing_at: &OnceLock<Instant>) -> io::Result<()> {
        let State {
            sink,
            wire_out,
            delivery,
            ..
        } = self;
        let Some(sink) = sink.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        past_bound(delivery, closing_at, now)?;
        delivery.owing(now);
        loop {
            match sink.flush_pending() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    look(delivery, &**sink, *wire_out, closing_at, Instant::now())?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn close(&mut self) {
        self.done = true;
        self.rx = None;
        if let Some(sink) = self.sink.as_mut() {
            sink.close_write();
        }
    }

    /// Writes `pending`, all of it (`Wait::Yes`) or what the socket takes
    /// now (`Wait::No`). Queue room is given back as bytes go out, so a
    /// member reading slowly but steadily makes room for its publishers all
    /// along and is never taken for a stuck one. A waiting write looks at
    /// the client's progress every check interval, and ends once the client
    /// has taken nothing for the write timeout, or once the connection has
    /// been closing (`closing_at`) for that long.
    fn write(
        &mut self,
        outbound: &impl Accounts,
        counters: &Counters,
        sent: &Sent,
        wait: Wait,
        closing_at: &OnceLock<Instant>,
    ) -> io::Result<()> {
        let State {
            sink,
            wire,
            pending,
            offset,
            relay_offset,
            mark,
            bytes_out,
            wire_out,
            delivery,
            ..
        } = self;
        let interval = check_interval(delivery.timeout());
        // When a waiting write last looked at the client; a publisher's
        // write never waits, and reads no clock.
        let mut looked = match wait {
            Wait::Yes => {
                let now = Instant::now();
                past_bound(delivery, closing_at, now)?;
                delivery.owing(now);
                Some(now)
            }
            Wait::No => None,
        };
        let Some(sink) = sink.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "no socket yet"));
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            log_frames(outbound.id(), pending, *offset);
        }
        while !pending.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            for (slice, batch) in slices.iter_mut().zip(pending.iter()) {
                *slice = IoSlice::new(batch.wire(wire));
            }
            let count = pending.len();
            let mut view = &mut slices[..count];
            IoSlice::advance_slices(&mut view, *offset);
            let result = match wait {
                Wait::Yes => sink.write_vectored(view),
                Wait::No => sink.write_vectored_now(view),
            };
            let n = match result {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "socket accepted no bytes",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if wait == Wait::Yes && is_timeout(&e) => {
                    // A check interval without the socket taking a byte.
                    let now = Instant::now();
                    looked = Some(now);
                    look(delivery, &**sink, *wire_out, closing_at, now)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            *wire_out += n as u64;
            // Count and drop the batches this write completed; a sampled
            // one is timed from its read, with one clock read per write.
            let mut left = *offset + n;
            let mut done = 0;
            let mut relay = 0;
            let mut fatal = None;
            let mut tally = Tally::default();
            let mut now = None;
            for batch in pending.iter() {
                let len = batch.wire(wire).len();
                if left < len {
                    break;
                }
                left -= len;
                relay += batch.bytes.len();
                fatal = batch.fatal;
                tally.merge(&batch.tally);
                if let Some(read_at) = batch.read_at {
                    // Each MESSAGE in the batch was read and written at the
                    // same moments: counted once each.
                    let now = *now.get_or_insert_with(Instant::now);
                    counters.histograms.latency.observe_duration(
                        outbound.id(),
                        now.saturating_duration_since(read_at),
                        u64::from(batch.frames),
                    );
                }
                done += 1;
            }
            pending.drain(..done);
            *offset = left;
            // The Relay bytes this write took: those of the batches it
            // completed and of the part of the next it wrote, less what
            // earlier writes took of the first. Exact at every offset, so
            // the queue and the budget are credited as bytes go out.
            let before = *relay_offset;
            if done > 0 {
                *mark = Mark::default();
            }
            *relay_offset = match pending.first() {
                Some(batch) if left > 0 => batch.relay_within(wire, left, mark),
                _ => 0,
            };
            let taken = relay + *relay_offset - before;
            outbound.written(taken);
            *bytes_out += taken as u64;
            counters.bytes_out.fetch_add(taken as u64, Relaxed);
            counters.sent.add(&tally);
            sent.add(taken, tally.frames());
            if let Some(code) = fatal
                && left == 0
            {
                sink.ended_with(code);
            }
            if let Some(at) = looked
                && !pending.is_empty()
            {
                // A client trickling a few bytes at a time keeps writes
                // succeeding: look all the same.
                let now = Instant::now();
                if now - at >= interval {
                    looked = Some(now);
                    look(delivery, &**sink, *wire_out, closing_at, now)?;
                } else {
                    past_bound(delivery, closing_at, now)?;
                }
            }
            if wait == Wait::No && !pending.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A waiting write's look at the client: an error once it has taken
/// nothing for the write timeout, or the final flush has run out of time.
fn look(
    delivery: &mut Delivery,
    sink: &dyn WriteHalf,
    written: u64,
    closing_at: &OnceLock<Instant>,
    now: Instant,
) -> io::Result<()> {
    past_bound(delivery, closing_at, now)?;
    match delivery.look(written, sink.unsent_bytes(), true, now) {
        Seen::Stuck => Err(stuck()),
        Seen::Idle | Seen::Owed => Ok(()),
    }
}

/// An error once the connection has been closing for the write timeout: a
/// client that keeps reading a byte at a time cannot hold its connection,
/// its threads and its backlog after it was cut.
fn past_bound(delivery: &Delivery, closing_at: &OnceLock<Instant>, now: Instant) -> io::Result<()> {
    match closing_at.get() {
        Some(at) if now.saturating_duration_since(*at) >= delivery.timeout() => {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the final flush took the whole write timeout; the client reads too slowly",
            ))
        }
        _ => Ok(()),
    }
}

fn stuck() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client took nothing for the write timeout; it stopped reading",
    )
}

/// Logs each frame about to be written (`--debug`).
fn log_frames(id: u64, pending: &[Arc<Batch>], offset: usize) {
    for (i, batch) in pending.iter().enumerate() {
        if i == 0 && offset > 0 {
            continue;
        }
        let mut rest = &batch.bytes[..];
        while let Ok(Some((frame, used))) = parse_frame(rest, u32::MAX) {
            tracing::debug!(
                "c{id} ← {} v1 flags={:?} payload={}B",
                frame.kind,
                frame.flags,
                frame.payload.len()
            );
            rest = &rest[used..];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A write half that takes at most `budget` bytes per call now
    /// (`WouldBlock` at 0), and records everything written, in order.
    #[derive(Clone, Default)]
    struct Script {
        written: Arc<Mutex<Vec<u8>>>,
        budget: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
        /// Bytes accepted but held back, as TLS holds records the socket
        /// did not take; the next non-waiting write holds its bytes too
        /// when `hold` is set.
        held: Arc<AtomicUsize>,
        hold: Arc<AtomicUsize>,
        /// When set, the next non-waiting write says it has begun and
        /// waits to be let go: a publisher caught holding the lock.
        pause: Arc<Mutex<Option<Pause>>>,
    }

    type Pause = (
        crossbeam_channel::Sender<()>,
        crossbeam_channel::Receiver<()>,
    );

    impl WriteHalf for Script {
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut out = self.written.lock();
            let mut n = 0;
            for buf in bufs {
                out.extend_from_slice(buf);
                n += buf.len();
            }
            Ok(n)
        }

        fn write_vectored_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let pause = self.pause.lock().take();
            if let Some((begun, go_on)) = pause {
                begun.send(()).unwrap();
                go_on.recv().unwrap();
            }
            let budget = self.budget.load(Ordering::Relaxed);
            if budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut out = self.written.lock();
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(budget - n);
                out.extend_from_slice(&buf[..take]);
                n += take;
                if n == budget {
                    break;
                }
            }
            if self.hold.load(Ordering::Relaxed) > 0 {
                self.held.fetch_add(n, Ordering::Relaxed);
            }
            Ok(n)
        }

        fn has_pending(&self) -> bool {
            self.held.load(Ordering::Relaxed) > 0
        }

        fn flush_pending(&mut self) -> io::Result<()> {
            self.held.store(0, Ordering::Relaxed);
            Ok(())
        }

        fn close_write(&mut self) {
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The queue's side of the accounting, recorded.
    #[derive(Default)]
    struct Ledger {
        written: AtomicUsize,
        rings: AtomicUsize,
    }

    impl Accounts for Ledger {
        fn id(&self) -> u64 {
            1
        }

        fn written(&self, len: usize) {
            self.written.fetch_add(len, Ordering::Relaxed);
        }

        fn reserve_unbounded(&self, _len: usize) {}

        fn ring(&self) {
            self.rings.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn batch(byte: u8, len: usize) -> Arc<Batch> {
        Arc::new(Batch::raw(vec![byte; len], 1))
    }

    fn setup(budget: usize) -> (Output, crossbeam_channel::Sender<Outgoing>, Script) {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let output = Output::new(rx);
        let script = Script::default();
        script.budget.store(budget, Ordering::Relaxed);
        output.attach(
            Box::new(script.clone()),
            Duration::from_secs(30),
            &Arc::default(),
        );
        (output, tx, script)
    }

    #[test]
    fn a_publisher_writes_everything_when_the_socket_takes_it() {
        let (output, tx, script) = setup(usize::MAX);
        let ledger = Ledger::default();
        let counters = Counters::default();
        tx.send(batch(1, 10)).unwrap();
        tx.send(batch(2, 5)).unwrap();
        assert_eq!(output.flush_now(&ledger, &counters), Flushed::All);
        assert_eq!(*script.written.lock(), [vec![1; 10], vec![2; 5]].concat());
        assert_eq!(ledger.written.load(Ordering::Relaxed), 15);
        assert_eq!(ledger.rings.load(Ordering::Relaxed), 0, "no writer woken");
        assert!(!output.has_work());
    }

    #[test]
    fn a_publisher_that_finds_another_flushing_leaves_its_batch_to_it() {
        let (output, tx, script) = setup(usize::MAX);
        let (output, ledger) = (Arc::new(output), Arc::new(Ledger::default()));
        let (begun_tx, begun) = crossbeam_channel::bounded(1);
        let (go_on, go_on_rx) = crossbeam_channel::bounded(1);
        *script.pause.lock() = Some((begun_tx, go_on_rx));
        tx.send(batch(1, 10)).unwrap();
        let first = {
            let (output, ledger) = (Arc::clone(&output), Arc::clone(&ledger));
            std::thread::spawn(move || output.flush_now(&*ledger, &Counters::default()))
        };
        // The first publisher is in its write, holding the lock.
        begun.recv_timeout(Duration::from_secs(30)).unwrap();
        tx.send(batch(2, 5)).unwrap();
        let counters = Counters::default();
        assert_eq!(output.flush_now(&*ledger, &counters), Flushed::Handed);
        assert_eq!(ledger.rings.load(Ordering::Relaxed), 0, "no writer woken");
        go_on.send(()).unwrap();
        assert_eq!(first.join().unwrap(), Flushed::All);
        // The first wrote the second's batch after its own.
        assert_eq!(*script.written.lock(), [vec![1; 10], vec![2; 5]].concat());
        assert_eq!(ledger.written.load(Ordering::Relaxed), 15);
        assert_eq!(ledger.rings.load(Ordering::Relaxed), 0, "no writer woken");
        assert!(!output.has_work());
    }

    #[test]
    fn a_partial_write_is_finished_by_the_writer_in_order() {
        let (output, tx, script) = setup(7);
        let ledger = Ledger::default();
        let counters = Counters::default();
        tx.send(batch(1, 10)).unwrap();
        tx.send(batch(2, 5)).unwrap();
        assert_eq!(output.flush_now(&ledger, &counters), Flushed::Handed);
        assert_eq!(
            ledger.rings.load(Ordering::Relaxed),
            1,
            "the writer is rung"
        );
        // Another publisher finds the leftover and leaves it to the writer.
        tx.send(batch(3, 4)).unwrap();
        assert_eq!(output.flush_now(&ledger, &counters), Flushed::Handed);
        assert_eq!(script.written.lock().len(), 7);
        // The writer picks up where the publisher stopped.
        assert!(output.write_waiting(&ledger, &counters).unwrap());
        assert_eq!(
            *script.written.lock(),
            [vec![1; 10], vec![2; 5], vec![3; 4]].concat()
        );
        assert_eq!(ledger.written.load(Ordering::Relaxed), 19);
        assert_eq!(counters.sent.frames_total(), 3);
        assert_eq!(output.sent().frames(), 3);
        assert_eq!(output.sent().bytes(), 19);
    }

    #[test]
    fn a_socket_that_would_block_hands_everything_to_the_writer() {
        let (output, tx, script) = setup(0);
        let ledger = Ledger::default();
        let counters = Counters::default();
        tx.send(batch(1, 3)).unwrap();
        assert_eq!(output.flush_now(&ledger, &counters), Flushed::Handed);
        assert!(script.written.lock().is_empty());
        assert!(output.has_work());
        assert!(output.write_waiting(&ledger, &counters).unwrap());
        assert_eq!(*script.written.lock(), vec![1; 3]);
    }

    #[test]
    fn the_final_error_is_last_and_nothing_follows_it() {
        let (output, tx, script) = setup(usize::MAX);
        let ledger = Ledger::default();
        let counters = Counters::default();
        tx.send(batch(1, 4)).unwrap();
        assert!(output.finish(&ledger, &counters, Some(batch(9, 2))));
        assert_eq!(*script.written.lock(), [vec![1; 4], vec![9; 2]].concat());
        assert_eq!(script.closed.load(Ordering::Relaxed), 1);
        // The queue is disconnected, and later flushes write nothing.
        assert!(tx.send(batch(5, 1)).is_err());
        assert_eq!(output.flush_now(&ledger, &counters), Flushed::Handed);
        assert!(!output.write_waiting(&ledger, &counters).unwrap());
        assert_eq!(script.written.lock().len(), 6);
    }

    #[test]
    fn bytes_the_transport_holds_back_are_left_to_the_writer_to_flush() {
        let (output, tx, script) = setup(usize::MAX);
        script.hold.store(1, Ordering::Relaxed);
        let ledger = Ledger::default();
        let counters = Counters::default();
        tx.send(batch(1, 10)).unwrap();
        // All taken, but not all in the socket: not done, and the writer
        // is rung.
        assert_eq!(output.flush_now(&ledger, &counters), Flushed::Handed);
        assert_eq!(ledger.rings.load(Ordering::Relaxed), 1);
        assert!(output.has_work(), "held bytes are work for the writer");
        assert!(output.write_waiting(&ledger, &counters).unwrap());
        assert_eq!(script.held.load(Ordering::Relaxed), 0);
        assert!(!output.has_work());
        assert!(!output.write_waiting(&ledger, &counters).unwrap());
    }

    #[test]
    fn without_a_socket_nothing_is_taken_from_the_queue() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let output = Output::new(rx.clone());
        tx.send(batch(1, 1)).unwrap();
        let ledger = Ledger::default();
        assert_eq!(
            output.flush_now(&ledger, &Counters::default()),
            Flushed::Handed
        );
        assert_eq!(rx.len(), 1);
    }
}
