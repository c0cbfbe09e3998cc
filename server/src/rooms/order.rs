//! A room's order: the epoch, the `seq` each message gets, and the history
//! kept for members that come back (SPEC.md 5.11).
//!
//! A publisher encodes its deliveries before it holds the room's lock, so
//! it cannot know their `seq` yet. It notes instead, for each message
//! frame, where the `seq` and `epoch` go (a [`Splice`]), and
//! [`Order::sequence`] writes them in under the lock: one copy of the
//! batch, with the numbers inserted and each frame's length corrected. The
//! frames without the insert are exactly what a member that did not ask
//! for `seq` in binary deliveries gets, so a batch with binary messages
//! has two encodings, built only when some member needs the second.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use protocol::{Gap, LENGTH_PREFIX, Recovery, push_seq_binary, push_seq_json};

use crate::budget::MemoryBudget;
use crate::conn::outbound::{Batch, Outbound};

/// Where one message frame of a batch takes its `seq` and `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Splice {
    /// Offset of the frame's length field in the batch.
    pub(crate) frame: usize,
    /// Offset at which the numbers are inserted.
    pub(crate) at: usize,
    /// A binary delivery (the insert is binary, and optional per member).
    pub(crate) binary: bool,
}

/// Test batches: one helper for every module that needs numbered frames.
#[cfg(test)]
impl Splice {
    /// Appends a JSON delivery of `n` in `room` to `out`, and says where
    /// the server numbers it.
    pub(crate) fn json_delivery(out: &mut Vec<u8>, room: &str, n: u64) -> Splice {
        let frame = out.len();
        let payload = format!(r#"{{"room":"{room}","from":"c1","content":{n},"timestamp":1}}"#);
        protocol::encode(
            out,
            protocol::MessageType::Message,
            protocol::Flags::JSON,
            payload.as_bytes(),
        )
        .unwrap();
        Splice {
            frame,
            at: out.len() - 1,
            binary: false,
        }
    }
}

/// What a room keeps of its past messages (`--history-messages`,
/// `--history-bytes`, `--history-seconds`). All zero keeps nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryLimits {
    /// The most messages a room keeps; 0: none.
    pub messages: usize,
    /// The most bytes of frames a room keeps.
    pub bytes: usize,
    /// The oldest a kept message may be; `None`: no age limit.
    pub max_age: Option<Duration>,
}

impl HistoryLimits {
    /// The most messages `--history-messages` accepts.
    pub const MAX_MESSAGES: usize = 1_000_000;
    /// The most bytes `--history-bytes` accepts per room.
    pub const MAX_BYTES: usize = 1 << 30;

    pub(crate) fn is_on(&self) -> bool {
        self.messages > 0 && self.bytes > 0
    }
}

/// What one kept message costs against the budget beyond its frame: the
/// entry in the ring and the allocation's rounding.
pub(crate) const HISTORY_ENTRY_BYTES: usize = 64;

/// The part of the memory budget all rooms' history may hold together:
/// half of it. History is never shed, so without a share of its own it
/// could fill the budget and leave the queues of connections that read
/// no room at all, and the server would cut them for a cache.
#[derive(Debug)]
pub(crate) struct HistoryShare {
    used: AtomicUsize,
    cap: usize,
    memory: Arc<MemoryBudget>,
}

impl HistoryShare {
    pub(crate) fn new(memory: Arc<MemoryBudget>) -> HistoryShare {
        HistoryShare {
            used: AtomicUsize::new(0),
            cap: usize::try_from(memory.limit() / 2).unwrap_or(usize::MAX),
            memory,
        }
    }

    /// Takes `bytes` of the share (and the budget), if both have them.
    fn take(&self, bytes: usize) -> bool {
        if self.memory.would_exceed(bytes) {
            return false;
        }
        let taken = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.cap)
            })
            .is_ok();
        if taken {
            self.memory.charge(bytes);
        }
        taken
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.memory.credit(bytes);
    }

    /// Bytes of history kept now, all rooms together.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One kept message: where its frame is in the batch members that asked
/// for `seq` got. Entries share their batch (nothing is copied to keep a
/// message); the entries of one batch are next to each other.
#[derive(Debug)]
struct Entry {
    seq: u64,
    at_ms: u64,
    batch: Arc<Batch>,
    /// The frame's bytes in `batch`.
    frame: std::ops::Range<usize>,
    /// For a binary delivery, where the `seq` insert is in the frame and
    /// how long, so the frame can be replayed without it.
    binary_insert: Option<(usize, usize)>,
}

impl Entry {
    fn frame(&self) -> &[u8] {
        self.batch.bytes.get(self.frame.clone()).unwrap_or_default()
    }
}

/// A room's place in its sequence. Lives under the room's order lock.
#[derive(Debug)]
pub(crate) struct Order {
    /// Changes whenever the sequence starts over: a new one per room
    /// created.
    epoch: Arc<str>,
    /// The last `seq` given; 0 before the first message.
    last_seq: u64,
    /// The last messages, oldest first, with consecutive `seq`s ending at
    /// `last_seq`.
    history: VecDeque<Entry>,
    history_bytes: usize,
    limits: HistoryLimits,
    share: Arc<HistoryShare>,
    /// Messages this node relayed of the room to the other nodes of a
    /// cluster (SPEC.md 14): they count them to tell what they missed.
    relayed: u64,
    /// Per node that relayed messages of the room here: its epoch of the
    /// room and the count it relays next. At most [`MAX_ORIGINS`].
    origins: VecDeque<Origin>,
}

/// The most nodes whose counts a room follows; past it, the one heard
/// from least recently is forgotten (its next batch starts afresh, with
/// no gap notice).
const MAX_ORIGINS: usize = 64;

#[derive(Debug)]
struct Origin {
    node: Arc<str>,
    epoch: Arc<str>,
    next: u64,
}

/// Where a room stands across the cluster (`--cluster-order room`), as
/// read from Redis for a room new on this node.
#[derive(Debug)]
pub(crate) struct Seed {
    pub(crate) epoch: Arc<str>,
    pub(crate) last_seq: u64,
    /// The newest batches of the room's stream, oldest first.
    pub(crate) kept: Vec<SeedBatch>,
}

/// A batch read back from a room's stream.
#[derive(Debug)]
pub(crate) struct SeedBatch {
    pub(crate) first: u64,
    pub(crate) at_ms: u64,
    pub(crate) bytes: Vec<u8>,
    pub(crate) splices: Vec<Splice>,
}

/// A batch with its numbers in: for members that asked for `seq` in
/// binary deliveries, and for those that did not (the same `Arc` when the
/// batch has no binary message).
#[derive(Debug)]
pub(crate) struct Sequenced {
    pub(crate) full: Arc<Batch>,
    pub(crate) plain: Arc<Batch>,
    /// The last `seq` given to the batch's messages.
    pub(crate) last_seq: u64,
}

impl Sequenced {
    /// The encoding for a member: with `seq` in binary deliveries if its
    /// HELLO asked for that (`binarySeq`), else the original layout.
    pub(crate) fn for_member(&self, member: &Outbound) -> &Arc<Batch> {
        if member.binary_seq() {
            &self.full
        } else {
            &self.plain
        }
    }
}

/// What a joining member is sent before the live messages.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub(crate) gap: Option<Gap>,
    /// Frames to send, in order.
    pub(crate) frames: Vec<u8>,
    pub(crate) count: u32,
}

/// A new epoch: 16 hex digits, different for every room created on every
/// run (the process's random hash keys, a counter, the clock).
pub(crate) fn new_epoch() -> Arc<str> {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let n = CREATED.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let value = RandomState::new().hash_one((n, nanos, std::process::id()));
    Arc::from(format!("{value:016x}"))
}

impl Order {
    pub(crate) fn new(limits: HistoryLimits, share: Arc<HistoryShare>) -> Order {
        Order {
            epoch: new_epoch(),
            last_seq: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            limits,
            share,
            relayed: 0,
            origins: VecDeque::new(),
        }
    }

    pub(crate) fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Counts `messages` more relayed to the other nodes; the count of
    /// the first of them.
    pub(crate) fn relay(&mut self, messages: u64) -> u64 {
        let first = self.relayed + 1;
        self.relayed += messages;
        first
    }

    /// Messages relayed to the other nodes so far.
    pub(crate) fn relayed(&self) -> u64 {
        self.relayed
    }

    /// Checks a batch of `messages` from node `node` (its epoch `epoch`,
    /// counted from `first`) against what came from there before: how many
    /// of that node's messages were missed just before it, or `None` for a
    /// batch already seen. The first batch heard from a node (or from a
    /// new epoch of it) misses nothing: what it sent before was sent before
    /// this node followed the room.
    pub(crate) fn admit(
        &mut self,
        node: &str,
        epoch: &str,
        first: u64,
        messages: u64,
    ) -> Option<u64> {
        let next = first.saturating_add(messages);
        let Some(at) = self.origins.iter().position(|o| &*o.node == node) else {
            if self.origins.len() >= MAX_ORIGINS {
                self.origins.pop_front();
            }
            self.origins.push_back(Origin {
                node: Arc::from(node),
                epoch: Arc::from(epoch),
                next,
            });
            return Some(0);
        };
        // The most recently heard from last.
        let mut origin = self.origins.remove(at)?;
        let missed = if *origin.epoch != *epoch {
            origin.epoch = Arc::from(epoch);
            origin.next = next;
            Some(0)
        } else if first < origin.next {
            None
        } else {
            let missed = first - origin.next;
            origin.next = next;
            Some(missed)
        };
        self.origins.push_back(origin);
        missed
    }

    /// Takes the cluster's `epoch` and position (`--cluster-order room`):
    /// the next message is `last_seq` + 1 of that epoch. What was kept
    /// belonged to another position, so it goes.
    pub(crate) fn adopt(&mut self, epoch: Arc<str>, last_seq: u64) {
        self.epoch = epoch;
        self.last_seq = last_seq;
        self.clear();
    }

    /// Starts a room at the cluster's position (`--cluster-order room`),
    /// keeping the batches read from the room's stream as history, as
    /// though this node had delivered them.
    pub(crate) fn seed(&mut self, seed: &Seed) {
        self.adopt(Arc::clone(&seed.epoch), 0);
        for batch in &seed.kept {
            if batch.first <= self.last_seq || batch.splices.is_empty() {
                continue;
            }
            // A jump clears what was kept before it (`push`).
            self.last_seq = batch.first - 1;
            self.sequence(
                batch.bytes.clone(),
                &batch.splices,
                false,
                batch.at_ms,
                None,
            );
        }
        if self.last_seq != seed.last_seq {
            // What was read does not end at the position: not a run that
            // leads to the next message, so none of it is replayed.
            self.clear();
            self.last_seq = seed.last_seq;
        }
    }

    /// Gives `count` `seq`s to messages that will never come (missed from
    /// another node): the range, for a gap notice. What history kept
    /// before them is no longer followed by the next message, so it goes.
    pub(crate) fn skip(&mut self, count: u64) -> (u64, u64) {
        let from = self.last_seq + 1;
        self.last_seq += count;
        self.clear();
        (from, self.last_seq)
    }

    /// Gives the batch's message frames their `seq`s, writing them in, and
    /// keeps them in the history. `plain_wanted`: some member takes binary
    /// deliveries without `seq`.
    pub(crate) fn sequence(
        &mut self,
        bytes: Vec<u8>,
        splices: &[Splice],
        plain_wanted: bool,
        now_ms: u64,
        read_at: Option<Instant>,
    ) -> Sequenced {
        if splices.is_empty() {
            let batch = Arc::new(Batch::new(bytes, read_at));
            return Sequenced {
                full: Arc::clone(&batch),
                plain: batch,
                last_seq: self.last_seq,
            };
        }
        let binary = splices.iter().any(|splice| splice.binary);
        let first = self.last_seq + 1;
        let full = Arc::new(Batch::new(
            insert(&bytes, splices, first, &self.epoch, true),
            read_at,
        ));
        self.last_seq += splices.len() as u64;
        if self.limits.is_on() {
            self.keep(&full, splices, first, now_ms);
        }
        let plain = if binary && plain_wanted {
            Arc::new(Batch::new(
                insert(&bytes, splices, first, &self.epoch, false),
                read_at,
            ))
        } else {
            Arc::clone(&full)
        };
        Sequenced {
            full,
            plain,
            last_seq: self.last_seq,
        }
    }

    /// Keeps the message frames of `full` (sequenced from `first`).
    fn keep(&mut self, full: &Arc<Batch>, splices: &[Splice], first: u64, now_ms: u64) {
        let mut shift = 0;
        for (i, splice) in splices.iter().enumerate() {
            let start = splice.frame + shift;
            let Some(length) = full
                .bytes
                .get(start..start + LENGTH_PREFIX)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
            else {
                return;
            };
            let end = start + LENGTH_PREFIX + length as usize;
            let inserted = seq_insert_len(splice.binary, first + i as u64, &self.epoch);
            if end > full.bytes.len() {
                return;
            }
            let entry = Entry {
                seq: first + i as u64,
                at_ms: now_ms,
                batch: Arc::clone(full),
                frame: start..end,
                binary_insert: splice
                    .binary
                    .then_some((splice.at - splice.frame, inserted)),
            };
            shift += inserted;
            self.push(entry);
        }
        self.trim(now_ms);
    }

    /// What keeping `entry` costs: its entry, and its batch if no kept
    /// message holds that batch yet (a batch is counted whole, from its
    /// first kept message until its last one goes).
    fn cost(&self, entry: &Entry) -> usize {
        let shared = self
            .history
            .back()
            .is_some_and(|last| Arc::ptr_eq(&last.batch, &entry.batch));
        HISTORY_ENTRY_BYTES + if shared { 0 } else { entry.batch.bytes.len() }
    }

    fn push(&mut self, entry: Entry) {
        if self
            .history
            .back()
            .is_some_and(|last| last.seq + 1 != entry.seq)
        {
            // A message could not be kept: what is older is not
            // contiguous with what follows, so it goes too.
            self.clear();
        }
        // History never takes the server past its share of the budget: it
        // is a cache, and what it cannot keep is reported exactly as a gap.
        let mut cost = self.cost(&entry);
        while !self.share.take(cost) {
            if self.history.is_empty() {
                return;
            }
            self.drop_oldest();
            cost = self.cost(&entry);
        }
        self.history_bytes += cost;
        self.history.push_back(entry);
    }

    fn drop_oldest(&mut self) {
        if let Some(entry) = self.history.pop_front() {
            let last_of_its_batch = self
                .history
                .front()
                .is_none_or(|next| !Arc::ptr_eq(&next.batch, &entry.batch));
            let cost = HISTORY_ENTRY_BYTES
                + if last_of_its_batch {
                    entry.batch.bytes.len()
                } else {
                    0
                };
            self.history_bytes -= cost;
            self.share.give(cost);
        }
    }

    fn clear(&mut self) {
        while !self.history.is_empty() {
            self.drop_oldest();
        }
    }

    /// Drops what is over the limits: too many, too many bytes, too old.
    fn trim(&mut self, now_ms: u64) {
        let max_age_ms = self.limits.max_age.map(|age| age.as_millis() as u64);
        while let Some(oldest) = self.history.front() {
            let too_old = max_age_ms.is_some_and(|max| now_ms.saturating_sub(oldest.at_ms) > max);
            if self.history.len() > self.limits.messages
                || self.history_bytes > self.limits.bytes + self.history.len() * HISTORY_ENTRY_BYTES
                || too_old
            {
                self.drop_oldest();
            } else {
                break;
            }
        }
    }

    /// The `seq` of the oldest message kept, or the next one to be given
    /// when none is.
    fn first_kept(&self) -> u64 {
        self.history
            .front()
            .map_or(self.last_seq + 1, |entry| entry.seq)
    }

    /// What a member joining with `recovery` is sent before the live
    /// messages: a gap notice for what is gone, and the kept messages it
    /// asked for, without `seq` in binary ones unless `binary_seq`.
    pub(crate) fn replay(
        &mut self,
        room: &str,
        recovery: &Recovery,
        binary_seq: bool,
        now_ms: u64,
    ) -> Replay {
        self.trim(now_ms);
        let first_kept = self.first_kept();
        let (wanted_from, previous_epoch) = match recovery {
            // A client's seq may be anything, u64::MAX included.
            Recovery::Since(since) if *since.epoch == *self.epoch => {
                (since.seq.saturating_add(1), None)
            }
            Recovery::Since(since) => (1, Some(since.epoch.clone())),
            Recovery::Last(n) => (
                self.last_seq.saturating_sub(*n).saturating_add(1).max(1),
                None,
            ),
        };
        let lost_to = first_kept.min(self.last_seq + 1) - 1;
        let lost = (wanted_from <= lost_to).then_some((wanted_from, lost_to));
        let gap = (lost.is_some() || previous_epoch.is_some()).then(|| Gap {
            kind: "gap".into(),
            room: room.to_owned(),
            epoch: self.epoch.to_string(),
            from: lost.map(|(from, _)| from),
            to: lost.map(|(_, to)| to),
            previous_epoch,
        });
        let mut replay = Replay {
            gap,
            ..Replay::default()
        };
        for entry in self.history.iter().filter(|entry| entry.seq >= wanted_from) {
            let frame = entry.frame();
            match entry.binary_insert {
                Some((at, len)) if !binary_seq && at + len <= frame.len() => {
                    let start = replay.frames.len();
                    replay.frames.extend_from_slice(&frame[..at]);
                    replay.frames.extend_from_slice(&frame[at + len..]);
                    let length = (frame.len() - len - LENGTH_PREFIX) as u32;
                    replay.frames[start..start + LENGTH_PREFIX]
                        .copy_from_slice(&length.to_be_bytes());
                }
                _ => replay.frames.extend_from_slice(frame),
            }
            replay.count += 1;
        }
        replay
    }
}

impl Drop for Order {
    /// The room goes: its history leaves the budget.
    fn drop(&mut self) {
        self.share.give(self.history_bytes);
    }
}

/// How many bytes the numbers take in a frame.
fn seq_insert_len(binary: bool, seq: u64, epoch: &str) -> usize {
    let mut scratch = Vec::with_capacity(64);
    if binary {
        push_seq_binary(&mut scratch, seq, epoch);
    } else {
        push_seq_json(&mut scratch, seq, epoch);
    }
    scratch.len()
}

/// `bytes` with the numbers written in at each splice, from `first` on;
/// binary deliveries get theirs only if `binary_seq`.
fn insert(bytes: &[u8], splices: &[Splice], first: u64, epoch: &str, binary_seq: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + splices.len() * 48);
    let mut from = 0;
    for (i, splice) in splices.iter().enumerate() {
        let seq = first + i as u64;
        if splice.binary && !binary_seq {
            continue;
        }
        out.extend_from_slice(&bytes[from..splice.at]);
        let frame = out.len() - (splice.at - splice.frame);
        let before = out.len();
        if splice.binary {
            push_seq_binary(&mut out, seq, epoch);
        } else {
            push_seq_json(&mut out, seq, epoch);
        }
        let added = out.len() - before;
        if let Some(field) = out.get_mut(frame..frame + LENGTH_PREFIX) {
            let length = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
            field.copy_from_slice(&(length + added as u32).to_be_bytes());
        }
        from = splice.at;
    }
    out.extend_from_slice(&bytes[from..]);
    out
}

#[cfg(test)]
mod tests {
    use protocol::{ServerMessage, Since, parse_frame};

    use super::*;

    fn seqs(bytes: &[u8]) -> Vec<u64> {
        let mut rest = bytes;
        let mut seqs = Vec::new();
        while let Some((frame, used)) = parse_frame(rest, u32::MAX).unwrap() {
            if let Ok(ServerMessage::Delivery(delivery)) = ServerMessage::parse(frame.payload) {
                seqs.push(delivery.seq.unwrap());
            }
            rest = &rest[used..];
        }
        seqs
    }

    fn order(messages: usize) -> Order {
        let limits = HistoryLimits {
            messages,
            bytes: 1 << 20,
            max_age: None,
        };
        let memory = Arc::new(MemoryBudget::new(1 << 20));
        Order::new(limits, Arc::new(HistoryShare::new(memory)))
    }

    #[test]
    fn messages_are_numbered_in_order_and_frames_stay_whole() {
        let mut order = order(0);
        let mut bytes = Vec::new();
        let splices = [
            Splice::json_delivery(&mut bytes, "r", 1),
            Splice::json_delivery(&mut bytes, "r", 2),
        ];
        let sequenced = order.sequence(bytes, &splices, false, 5, None);
        assert_eq!(seqs(&sequenced.full.bytes), [1, 2]);
        assert_eq!(sequenced.last_seq, 2);
        let mut bytes = Vec::new();
        let splices = [Splice::json_delivery(&mut bytes, "r", 3)];
        assert_eq!(
            seqs(&order.sequence(bytes, &splices, false, 5, None).full.bytes),
            [3]
        );
    }

    #[test]
    fn a_replay_says_exactly_what_is_gone() {
        let mut order = order(3);
        for n in 1..=5 {
            let mut bytes = Vec::new();
            let splices = [Splice::json_delivery(&mut bytes, "r", n)];
            order.sequence(bytes, &splices, false, 5, None);
        }
        let epoch = order.epoch().to_string();
        // Kept: 3, 4, 5.
        let since = |seq| {
            Recovery::Since(Since {
                epoch: epoch.clone(),
                seq,
            })
        };
        let replay = order.replay("r", &since(1), false, 5);
        let gap = replay.gap.unwrap();
        assert_eq!((gap.from, gap.to), (Some(2), Some(2)));
        assert_eq!(seqs(&replay.frames), [3, 4, 5]);
        let replay = order.replay("r", &since(3), false, 5);
        assert!(replay.gap.is_none());
        assert_eq!(seqs(&replay.frames), [4, 5]);
        let replay = order.replay("r", &since(5), false, 5);
        assert!(replay.gap.is_none() && replay.count == 0);
        let replay = order.replay("r", &Recovery::Last(4), false, 5);
        let gap = replay.gap.unwrap();
        assert_eq!((gap.from, gap.to), (Some(2), Some(2)));
        let replay = order.replay("r", &Recovery::Last(2), false, 5);
        assert!(replay.gap.is_none());
        assert_eq!(seqs(&replay.frames), [4, 5]);
        // A seq from the future (or u64::MAX) asks for nothing.
        let replay = order.replay("r", &since(u64::MAX), false, 5);
        assert!(replay.gap.is_none() && replay.count == 0);
        let replay = order.replay("r", &Recovery::Last(u64::MAX), false, 5);
        assert_eq!(
            replay.gap.map(|gap| (gap.from, gap.to)),
            Some((Some(1), Some(2)))
        );
        let old = Recovery::Since(Since {
            epoch: "other".into(),
            seq: 9,
        });
        let gap = order.replay("r", &old, false, 5).gap.unwrap();
        assert_eq!(gap.previous_epoch.as_deref(), Some("other"));
        assert_eq!((gap.from, gap.to), (Some(1), Some(2)));
    }

    #[test]
    fn history_is_charged_and_given_back() {
        let memory = Arc::new(MemoryBudget::new(1 << 20));
        let limits = HistoryLimits {
            messages: 10,
            bytes: 1 << 20,
            max_age: Some(Duration::from_millis(100)),
        };
        let share = Arc::new(HistoryShare::new(Arc::clone(&memory)));
        let mut order = Order::new(limits, Arc::clone(&share));
        for n in 1..=20 {
            let mut bytes = Vec::new();
            let splices = [Splice::json_delivery(&mut bytes, "r", n)];
            order.sequence(bytes, &splices, false, 5, None);
        }
        assert_eq!(order.history.len(), 10);
        assert_eq!(memory.used() as usize, order.history_bytes);
        assert_eq!(share.used(), order.history_bytes);
        // Too old: all gone at the next look.
        let replay = order.replay("r", &Recovery::Last(5), false, 500);
        assert_eq!(replay.count, 0);
        assert_eq!(memory.used(), 0);
        drop(order);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn all_history_together_keeps_to_half_the_budget() {
        let memory = Arc::new(MemoryBudget::new(64 * 1024));
        let share = Arc::new(HistoryShare::new(Arc::clone(&memory)));
        let limits = HistoryLimits {
            messages: 1000,
            bytes: 1 << 20,
            max_age: None,
        };
        let mut rooms: Vec<Order> = (0..4)
            .map(|_| Order::new(limits, Arc::clone(&share)))
            .collect();
        for n in 1..=400 {
            for order in &mut rooms {
                let mut bytes = Vec::new();
                let splices = [Splice::json_delivery(&mut bytes, "r", n)];
                order.sequence(bytes, &splices, false, 5, None);
            }
        }
        assert!(share.used() <= 32 * 1024, "{} bytes kept", share.used());
        assert_eq!(memory.used() as usize, share.used());
        // Each room keeps a run of its newest messages.
        for order in &mut rooms {
            let replay = order.replay("r", &Recovery::Last(1000), false, 5);
            assert!(replay.count > 0 || replay.gap.is_some());
            if let Some(gap) = replay.gap {
                assert_eq!(gap.from, Some(1));
                assert_eq!(gap.to, Some(400 - u64::from(replay.count)));
            }
        }
        drop(rooms);
        assert_eq!((share.used(), memory.used()), (0, 0));
    }

    #[test]
    fn a_jump_in_another_nodes_count_is_exactly_the_messages_missed() {
        let mut order = order(10);
        // The first batch heard from a node misses nothing, whatever its count.
        assert_eq!(order.admit("b", "eb", 41, 2), Some(0));
        assert_eq!(order.admit("b", "eb", 43, 1), Some(0));
        // 44 to 46 never came.
        assert_eq!(order.admit("b", "eb", 47, 1), Some(3));
        // An empty batch (an announcement) says where the count is.
        assert_eq!(order.admit("b", "eb", 50, 0), Some(2));
        assert_eq!(order.admit("b", "eb", 50, 1), Some(0));
        // Seen already: not relayed again.
        assert_eq!(order.admit("b", "eb", 49, 1), None);
        // A new epoch of that node starts afresh; other nodes count apart.
        assert_eq!(order.admit("b", "eb2", 1, 1), Some(0));
        assert_eq!(order.admit("c", "ec", 7, 1), Some(0));
        assert_eq!(order.admit("b", "eb2", 2, 1), Some(0));
    }

    #[test]
    fn skipped_seqs_are_a_gap_for_whoever_asks_after_them() {
        let mut order = order(10);
        for n in 1..=3 {
            let mut bytes = Vec::new();
            let splices = [Splice::json_delivery(&mut bytes, "r", n)];
            order.sequence(bytes, &splices, false, 5, None);
        }
        assert_eq!(order.skip(4), (4, 7));
        let mut bytes = Vec::new();
        let splices = [Splice::json_delivery(&mut bytes, "r", 8)];
        let sequenced = order.sequence(bytes, &splices, false, 5, None);
        assert_eq!(sequenced.last_seq, 8);
        let since = Recovery::Since(Since {
            epoch: order.epoch().to_string(),
            seq: 2,
        });
        let replay = order.replay("r", &since, false, 5);
        let gap = replay.gap.unwrap();
        // History before the skip is dropped: it no longer runs on into 8.
        assert_eq!((gap.from, gap.to), (Some(3), Some(7)));
        assert_eq!(seqs(&replay.frames), [8]);
    }
}
