//! Server-wide counters: atomics written on the hot path, read as a
//! [`protocol::Stats`] snapshot by HELLO answers, the library API and shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use protocol::{ErrorCode, MessageType, Stats};

use crate::budget::MemoryBudget;
use crate::conn::close::CloseReason;
use crate::histogram::Histograms;

/// A counter on a cache line of its own: readers update the inbound ones and
/// writers the outbound ones, and sharing a line would make every update of
/// one side stall the other.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded(pub(crate) AtomicU64);

impl std::ops::Deref for Padded {
    type Target = AtomicU64;

    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

/// How many message types there are.
const TYPES: usize = MessageType::ALL.len();

/// Message types, as `/metrics` labels them, indexed like
/// [`MessageType::ALL`].
pub(crate) const TYPE_LABELS: [&str; TYPES] = [
    "hello",
    "join_room",
    "leave_room",
    "message",
    "heartbeat",
    "error",
    "who",
];

/// Frames and their bytes by message type, counted by one thread (a read,
/// a batch, a write) and added to the shared [`ByType`] in one go.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    frames: [u64; TYPES],
    bytes: [u64; TYPES],
}

impl Tally {
    /// One frame of `kind`, `len` bytes long (its header included).
    pub(crate) fn add(&mut self, kind: MessageType, len: usize) {
        let i = kind as usize - 1;
        self.frames[i] += 1;
        self.bytes[i] += len as u64;
    }

    /// `frames` frames of `kind` with `bytes` bytes between them.
    #[cfg(test)]
    pub(crate) fn of(kind: MessageType, frames: u64, bytes: u64) -> Tally {
        let mut tally = Tally::default();
        tally.frames[kind as usize - 1] = frames;
        tally.bytes[kind as usize - 1] = bytes;
        tally
    }

    /// Adds everything `other` counted.
    pub(crate) fn merge(&mut self, other: &Tally) {
        for i in 0..TYPES {
            self.frames[i] += other.frames[i];
            self.bytes[i] += other.bytes[i];
        }
    }

    pub(crate) fn frames(&self) -> u64 {
        self.frames.iter().sum()
    }
}

/// Whole frames and their bytes, by message type (indexed like
/// [`TYPE_LABELS`]): the one count of frames, which HELLO's `framesIn` and
/// `framesOut` sum and `/metrics` lists.
#[derive(Debug, Default)]
pub(crate) struct ByType {
    frames: [Padded; TYPES],
    bytes: [Padded; TYPES],
}

impl ByType {
    /// Adds a tally: one relaxed add per type it counted, none for the
    /// others.
    pub(crate) fn add(&self, tally: &Tally) {
        for i in 0..TYPES {
            if tally.frames[i] > 0 {
                self.frames[i].fetch_add(tally.frames[i], Relaxed);
                self.bytes[i].fetch_add(tally.bytes[i], Relaxed);
            }
        }
    }

    /// Frames of every type together.
    pub(crate) fn frames_total(&self) -> u64 {
        self.frames.iter().map(|count| count.load(Relaxed)).sum()
    }

    /// Frames so far, by type label.
    pub(crate) fn frames(&self) -> Vec<(&'static str, u64)> {
        TYPE_LABELS
            .iter()
            .zip(&self.frames)
            .map(|(&name, count)| (name, count.load(Relaxed)))
            .collect()
    }

    /// Bytes of those frames so far, by type label.
    pub(crate) fn bytes(&self) -> Vec<(&'static str, u64)> {
        TYPE_LABELS
            .iter()
            .zip(&self.bytes)
            .map(|(&name, count)| (name, count.load(Relaxed)))
            .collect()
    }
}

/// Why the accept loop turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// At `--max-connections` (or the system's limit).
    Full = 0,
    /// At `--max-connections-per-ip` for the client's address.
    PerAddress = 1,
    /// Over the memory budget, shedding load.
    Memory = 2,
}

impl Refusal {
    /// Label values, indexed by discriminant.
    pub(crate) const NAMES: [&'static str; 3] = ["server_full", "per_address", "memory_budget"];
}

/// Live counters. Each is independent; a snapshot is not one atomic instant.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) rooms: AtomicU64,
    /// Connections in rooms, summed over rooms (one per connection per room).
    pub(crate) memberships: AtomicU64,
    /// The server-wide memory budget and what is charged against it.
    pub(crate) memory: Arc<MemoryBudget>,
    /// Frames handled, by type (each counted when its read is done).
    pub(crate) received: ByType,
    /// Bytes read from sockets, as they arrive (partial frames included).
    pub(crate) bytes_in: Padded,
    /// Frames written whole, by type (each counted when the write that
    /// completes it returns).
    pub(crate) sent: ByType,
    /// Bytes written to sockets, as each write returns.
    pub(crate) bytes_out: Padded,
    pub(crate) slow_consumers: AtomicU64,
    /// Times a publisher had to wait for a member whose queue was full (one
    /// per such member per broadcast), whether or not it made room in
    /// time. Not on the wire.
    pub(crate) stall_waits: AtomicU64,
    /// Connection threads that panicked (a bug; each one's connection was
    /// still closed cleanly). Not on the wire.
    pub(crate) thread_panics: AtomicU64,
    /// TLS handshakes that failed or timed out (a plain client on the TLS
    /// port, a slowloris, a refused client certificate). Not on the wire.
    pub(crate) tls_handshake_failures: AtomicU64,
    /// WebSocket upgrades refused or not finished in time.
    pub(crate) ws_upgrade_failures: AtomicU64,
    /// Connections turned away at accept, indexed like [`Refusal::NAMES`].
    /// Not on the wire.
    refused: [AtomicU64; Refusal::NAMES.len()],
    /// ERROR frames sent, indexed like [`ErrorCode::ALL`].
    errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Connections closed, by kind of close reason. Not on the wire.
    closes: [AtomicU64; CloseReason::KINDS],
    /// Queue depth, fan-out and delivery latency. Not on the wire.
    pub(crate) histograms: Histograms,
}

impl Counters {
    /// Counters for a server whose memory is accounted in `memory`.
    pub(crate) fn with_memory(memory: Arc<MemoryBudget>) -> Counters {
        Counters {
            memory,
            ..Counters::default()
        }
    }

    /// Log lines dropped because stderr was not read fast enough; one
    /// count for the process (see [`crate::logging`]), here so the
    /// counters' readers find it with the rest.
    pub fn log_lines_dropped(&self) -> u64 {
        crate::logging::lines_dropped()
    }

    pub(crate) fn error_sent(&self, code: ErrorCode) {
        if let Some(index) = ErrorCode::ALL.iter().position(|&c| c == code) {
            self.errors[index].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    /// Connections turned away at accept so far, by why, every reason
    /// listed.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        Refusal::NAMES
            .iter()
            .zip(&self.refused)
            .map(|(&name, count)| (name, count.load(Relaxed)))
            .collect()
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closes[reason.index()].fetch_add(1, Relaxed);
    }

    /// Connections closed so far, by why they closed (`client_closed`,
    /// `slow_consumer`, ...), every kind listed.
    pub fn closes(&self) -> Vec<(&'static str, u64)> {
        CloseReason::NAMES
            .iter()
            .zip(&self.closes)
            .map(|(&name, count)| (name, count.load(Relaxed)))
            .collect()
    }

    /// ERROR frames sent with `code` so far.
    pub fn errors_sent(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|&c| c == code)
            .map_or(0, |index| self.errors[index].load(Relaxed))
    }

    /// Connections open now.
    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }

    /// Rooms with at least one member now.
    pub fn rooms(&self) -> u64 {
        self.rooms.load(Relaxed)
    }

    /// Memberships now: connections in rooms, one per connection per room.
    pub fn memberships(&self) -> u64 {
        self.memberships.load(Relaxed)
    }

    /// Bytes charged against the memory budget now: queued output,
    /// partially received frames and room state (SPEC.md 11.4).
    pub fn memory_used(&self) -> u64 {
        self.memory.used()
    }

    /// The memory budget, in bytes.
    pub fn memory_budget(&self) -> u64 {
        self.memory.limit()
    }

    /// Whether the server is shedding load: it went over its memory budget
    /// and is not yet back to the low-water mark.
    pub fn memory_shedding(&self) -> bool {
        self.memory.is_shedding()
    }

    /// Connections cut off as slow consumers so far.
    pub fn slow_consumers(&self) -> u64 {
        self.slow_consumers.load(Relaxed)
    }

    /// Times a publisher waited for a member with a full queue so far.
    pub fn stall_waits(&self) -> u64 {
        self.stall_waits.load(Relaxed)
    }

    /// Connection threads that panicked so far; anything but 0 is a bug.
    pub fn thread_panics(&self) -> u64 {
        self.thread_panics.load(Relaxed)
    }

    /// WebSocket upgrades refused or not finished in time so far.
    pub fn ws_upgrade_failures(&self) -> u64 {
        self.ws_upgrade_failures.load(Relaxed)
    }

    /// TLS handshakes that failed or ran out of time so far.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.tls_handshake_failures.load(Relaxed)
    }

    /// All counters, as HELLO answers carry them.
    pub fn snapshot(&self) -> Stats {
        let errors: BTreeMap<String, u64> = ErrorCode::ALL
            .iter()
            .zip(&self.errors)
            .map(|(code, count)| (code.as_str().to_owned(), count.load(Relaxed)))
            .filter(|&(_, count)| count > 0)
            .collect();
        Stats {
            connections: self.connections.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            rooms: self.rooms.load(Relaxed),
            frames_in: self.received.frames_total(),
            frames_out: self.sent.frames_total(),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            slow_consumers: self.slow_consumers.load(Relaxed),
            errors,
            memberships: self.memberships.load(Relaxed),
            memory_used: self.memory.used(),
            memory_budget: self.memory.limit(),
        }
    }
}
