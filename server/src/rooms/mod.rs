//! The room registry: which connections are in which room, within the
//! server-wide caps on rooms and memberships.
//!
//! The rooms are spread over [`SHARDS`] maps, each under its own `RwLock`,
//! by a hash of the room's name. Broadcasts take one shard's read lock and
//! only offer under it (no I/O, no waiting); joins and leaves take one
//! shard's write lock briefly. A publisher that finds a member's queue
//! full waits for it after the lock is released, by the outbound queue's
//! one deliver-or-cut rule.
//!
//! Each room also has an order lock (`order`, SPEC.md 5.11): a broadcast
//! takes it under the shard's read lock to give its messages their `seq`s
//! and offer them to every member before the next broadcast in the room
//! can, so every member sees the room's messages in one order. A join with
//! recovery runs under the shard's write lock, which no broadcast in the
//! shard holds at the same time, so its replay and the live messages after
//! it meet with no gap and no duplicate.
//!
//! Why shards: with one map, a client creating rooms as fast as it could
//! made the map grow under its one write lock, and every broadcast in every
//! other room waited for each rehash: p99 latency went from milliseconds to
//! 2.4 s while 2 M rooms were created. A shard holds a 64th of the rooms, so
//! its rehash is a 64th as long, and only rooms in that shard wait for it.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use protocol::{Member, Recovery};

use crate::budget::{MEMBERSHIP_BYTES, MemoryBudget, ROOM_BYTES};
use crate::config::Budget;
use crate::conn::outbound::{Batch, Outbound, Stalled};
use crate::counters::Counters;

mod notices;
mod numbered;
mod order;

pub use notices::MemberBatching;
use notices::Window;
pub(crate) use numbered::NumberedBatch;
pub use order::HistoryLimits;
use order::{HistoryShare, Order};
pub(crate) use order::{Seed, SeedBatch, Splice, new_epoch};

/// How many maps the rooms are spread over.
pub(crate) const SHARDS: usize = 64;

struct Room {
    /// The same `Arc` as the map key, handed to members for their own lists.
    name: Arc<str>,
    members: Vec<Arc<Outbound>>,
    /// Each member's membership number, beside it in `members`: growing in
    /// join order, never reused in the room, so a WHO cursor stays valid
    /// while members come and go (SPEC.md 3.15).
    numbers: Vec<u64>,
    /// The number the next member gets.
    next_number: u64,
    /// Membership changes waiting for the next `members` notice.
    window: Mutex<Window>,
    /// MESSAGE frames relayed to the room since it was created (member
    /// events too), for `/roomz`: one relaxed add per broadcast batch, under the read lock
    /// the broadcast holds anyway.
    messages: AtomicU64,
    /// The room's epoch, next `seq` and history; held across numbering and
    /// offering a batch, so the room has one order.
    order: Mutex<Order>,
}

impl Room {
    /// Whether a batch needs its second encoding: only when it has a
    /// binary message and a member takes binary deliveries without `seq`.
    fn plain_wanted(&self, splices: &[Splice]) -> bool {
        splices.iter().any(|splice| splice.binary) && self.members.iter().any(|m| !m.binary_seq())
    }

    /// Offers every member a gap notice (SPEC.md 3.13), encoded once.
    fn tell_gap(
        &self,
        gap: &protocol::Gap,
        touched: &mut Vec<Arc<Outbound>>,
        stalled: &mut Stalled,
        counters: &Counters,
    ) {
        let mut bytes = Vec::new();
        if protocol::encode_json(&mut bytes, protocol::MessageType::Message, gap).is_ok() {
            let notice = Arc::new(Batch::new(bytes, None));
            for member in &self.members {
                member.offer(&notice, touched, stalled, counters);
            }
        }
    }
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.members.len();
        write!(
            f,
            "{:?} ({n} member{})",
            self.name,
            if n == 1 { "" } else { "s" }
        )
    }
}

type Map = HashMap<Arc<str>, Room>;

/// One shard, on cache lines of its own so that locking one does not slow
/// the threads working in its neighbours.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(RwLock<Map>);

#[derive(Debug)]
pub(crate) struct Rooms {
    shards: Box<[Shard]>,
    /// Picks a room's shard; keyed per server, so no client can aim all
    /// its rooms at one shard.
    hasher: RandomState,
    max_rooms: u64,
    max_memberships: u64,
    /// Room state is charged against it at [`ROOM_BYTES`] and
    /// [`MEMBERSHIP_BYTES`], and history at what it holds.
    memory: Arc<MemoryBudget>,
    history: HistoryLimits,
    /// The part of `memory` all rooms' history may hold together.
    history_share: Arc<HistoryShare>,
    batching: MemberBatching,
    /// Rooms whose window opened since the last flush (a room at most once
    /// per window, so at most one entry per room).
    dirty: Mutex<Vec<Arc<str>>>,
    /// In a cluster, where every local batch is also queued for the other
    /// nodes (SPEC.md 14).
    outlink: Option<Arc<dyn RelayOut>>,
}

/// Where a node of a cluster sends its rooms' batches for the other nodes
/// (SPEC.md 14): the cluster's outlink. Called under the room's order
/// lock, so that the room's batches leave in its order: it must not wait.
pub(crate) trait RelayOut: fmt::Debug + Send + Sync {
    /// Queues `batch` of `room` for the other nodes, or drops it (and its
    /// messages, counted all the same, show there as a gap).
    fn relay(&self, room: &str, batch: &Relayed<'_>);
}

/// A batch as it goes between nodes: the frames as the origin encoded
/// them, before their `seq`s, and the origin's count of the messages it
/// relayed in the room (SPEC.md 14), for the receivers to tell what they
/// missed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relayed<'a> {
    /// The origin's epoch of the room: a new one restarts the count.
    pub(crate) epoch: &'a str,
    /// The count of the first message (the next count when there is none).
    pub(crate) first: u64,
    pub(crate) frames: u32,
    pub(crate) splices: &'a [Splice],
    pub(crate) bytes: &'a [u8],
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms::new(
            Budget::default(),
            HistoryLimits::default(),
            Arc::new(MemoryBudget::unlimited()),
        )
    }
}

/// What a join asks for besides the membership, and whom for.
#[derive(Debug, Default)]
pub(crate) struct JoinRequest<'a> {
    pub(crate) recovery: Option<&'a Recovery>,
    /// Milliseconds since the Unix epoch, for the history's age limit.
    pub(crate) now_ms: u64,
    /// The `userJoined` event for the other members, if the join makes a
    /// new member of a room that has others.
    pub(crate) event: Option<Arc<Batch>>,
    /// Where the room stands across the cluster (`--cluster-order room`),
    /// for a room this join creates here.
    pub(crate) seed: Option<order::Seed>,
    /// A room this join would create needs `seed`: without it the join
    /// is refused with [`JoinRefused::Unseeded`], for the caller to read
    /// the seed and try again.
    pub(crate) needs_seed: bool,
}

/// A published batch: where it went in the room's order.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    /// The last `seq` the batch's messages got.
    pub(crate) last_seq: u64,
    pub(crate) epoch: Arc<str>,
    /// Members the batch was queued for.
    pub(crate) queued: usize,
}

/// Frames gathered for a room, before they have their `seq`s.
#[derive(Debug)]
pub(crate) struct Pending<'a> {
    pub(crate) bytes: Vec<u8>,
    pub(crate) frames: u32,
    pub(crate) splices: &'a [Splice],
    pub(crate) now_ms: u64,
    /// For a broadcast to be timed, when its read returned.
    pub(crate) read_at: Option<std::time::Instant>,
}

/// The outcome of a join.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The registry's shared name for the room.
    pub(crate) name: Arc<str>,
    /// Members after the join.
    pub(crate) members: usize,
    /// False if the connection was already a member.
    pub(crate) new: bool,
    pub(crate) epoch: Arc<str>,
    /// The last `seq` given in the room before the join.
    pub(crate) last_seq: u64,
    /// The members, oldest first, at most `MAX_MEMBER_LIST`.
    pub(crate) member_list: Vec<Member>,
}

/// Why a join was refused: a server-wide bound was reached. The JOIN gets
/// INVALID_ROOM (non-fatal) with this as its message's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinRefused {
    /// `--max-total-rooms` rooms exist already.
    Rooms(u64),
    /// `--max-memberships` memberships exist already.
    Memberships(u64),
    /// The server is at its memory budget.
    Memory,
    /// The room is not here and the join brought no seed for it
    /// (`JoinRequest::needs_seed`): never shown to a client.
    Unseeded,
}

impl fmt::Display for JoinRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinRefused::Rooms(limit) => write!(
                f,
                "the server's limit of {limit} rooms is reached; join an existing room, or try again later"
            ),
            JoinRefused::Memberships(limit) => write!(
                f,
                "the server's limit of {limit} room memberships is reached; try again later"
            ),
            JoinRefused::Memory => {
                f.write_str("the server is at its memory budget; try again later")
            }
            JoinRefused::Unseeded => {
                f.write_str("the room's position in the cluster could not be read; try again")
            }
        }
    }
}

impl Rooms {
    pub(crate) fn new(budget: Budget, history: HistoryLimits, memory: Arc<MemoryBudget>) -> Rooms {
        Rooms {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
            max_rooms: budget.max_rooms as u64,
            max_memberships: budget.max_memberships as u64,
            history_share: Arc::new(HistoryShare::new(Arc::clone(&memory))),
            memory,
            history,
            batching: MemberBatching::default(),
            dirty: Mutex::new(Vec::new()),
            outlink: None,
        }
    }

    /// The same rooms, relaying every local batch to the other nodes of a
    /// cluster through `outlink`.
    pub(crate) fn with_outlink(self, outlink: Arc<dyn RelayOut>) -> Rooms {
        Rooms {
            outlink: Some(outlink),
            ..self
        }
    }

    /// Sets when rooms batch membership changes (SPEC.md 3.17).
    pub(crate) fn with_batching(mut self, batching: MemberBatching) -> Rooms {
        self.batching = batching;
        self
    }

    fn shard_of(&self, room: &str) -> usize {
        // The high bits: the shard's own map uses other hash keys, but the
        // low bits are the ones tables index by.
        (self.hasher.hash_one(room) >> 32) as usize % SHARDS
    }

    fn shard(&self, room: &str) -> &RwLock<Map> {
        &self.shards[self.shard_of(room)].0
    }

    /// Adds `member` to `room`, creating the room if needed, unless a
    /// server-wide bound says no. Joining a room one is in always succeeds.
    ///
    /// `answer` writes the JOIN answer for what the join found; it is
    /// queued for the member under the shard's write lock, followed by the
    /// replay a new member asked for, so no delivery in the room comes
    /// between them, and none is missed or repeated after. The other
    /// members' `userJoined` is queued under the same lock, so a member
    /// that joins later finds the newcomer in its JOIN answer's list and
    /// never gets an event about it. A member whose queue is full is left
    /// in `stalled` for the caller to wait for once the lock is released.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn join(
        &self,
        room: &str,
        member: &Arc<Outbound>,
        request: &JoinRequest<'_>,
        counters: &Counters,
        answer: &mut dyn FnMut(&Joined, &mut Vec<u8>) -> u32,
        touched: &mut Vec<Arc<Outbound>>,
        stalled: &mut Stalled,
    ) -> Result<Joined, JoinRefused> {
        let mut map = self.shard(room).write();
        let new_room = !map.contains_key(room);
        if new_room && request.needs_seed && request.seed.is_none() {
            return Err(JoinRefused::Unseeded);
        }
        if new_room {
            if self
                .memory
                .would_exceed(ROOM_BYTES + room.len() + MEMBERSHIP_BYTES)
            {
                return Err(JoinRefused::Memory);
            }
            if counters.rooms.fetch_add(1, Ordering::Relaxed) >= self.max_rooms {
                counters.rooms.fetch_sub(1, Ordering::Relaxed);
                return Err(JoinRefused::Rooms(self.max_rooms));
            }
            if let Err(refused) = self.take_membership(counters) {
                counters.rooms.fetch_sub(1, Ordering::Relaxed);
                return Err(refused);
            }
            let name: Arc<str> = Arc::from(room);
            let mut order = Order::new(self.history, Arc::clone(&self.history_share));
            if let Some(seed) = &request.seed {
                order.seed(seed);
            }
            let entry = Room {
                name: Arc::clone(&name),
                members: Vec::new(),
                numbers: Vec::new(),
                next_number: 1,
                window: Mutex::new(Window::default()),
                messages: AtomicU64::new(0),
                order: Mutex::new(order),
            };
            map.insert(name, entry);
            self.memory.charge(ROOM_BYTES + room.len());
            tracing::debug!("room {room:?} created");
        }
        let Some(entry) = map.get_mut(room) else {
            return Err(JoinRefused::Memory);
        };
        let new = new_room || !entry.members.iter().any(|m| m.id() == member.id());
        if new && !new_room {
            self.take_membership(counters)?;
        }
        if new {
            entry.members.push(Arc::clone(member));
            entry.numbers.push(entry.next_number);
            entry.next_number += 1;
        }
        let order = entry.order.get_mut();
        let joined = Joined {
            name: Arc::clone(&entry.name),
            members: entry.members.len(),
            new,
            epoch: Arc::clone(order.epoch()),
            last_seq: order.last_seq(),
            member_list: entry
                .members
                .iter()
                .take(protocol::MAX_MEMBER_LIST)
                .map(|m| Member {
                    connection_id: format!("c{}", m.id()),
                    user: m.user().map(str::to_owned),
                })
                .collect(),
        };
        let mut bytes = Vec::new();
        let mut frames = answer(&joined, &mut bytes);
        if new && let Some(recovery) = request.recovery {
            let replay = order.replay(room, recovery, member.binary_seq(), request.now_ms);
            if let Some(gap) = &replay.gap
                && protocol::encode_json(&mut bytes, protocol::MessageType::Message, gap).is_ok()
            {
                frames += 1;
            }
            bytes.extend_from_slice(&replay.frames);
            frames += replay.count;
        }
        if new
            && entry.members.len() > 1
            && let Some(event) = &request.event
        {
            let told = Told {
                room: entry,
                about: member,
                change: protocol::MemberChange::Joined,
                event,
            };
            self.tell(&told, touched, stalled, counters);
        }
        if new && member.batched() {
            let window = entry.window.get_mut();
            if window.is_open() {
                window.arrived(member.id());
            }
        }
        if new && let Some(event) = &request.event {
            self.relay_event(room, entry, event);
        }
        if frames > 0 {
            member.offer(
                &Arc::new(Batch::new(bytes, None)),
                touched,
                stalled,
                counters,
            );
        }
        drop(map);
        Ok(joined)
    }

    /// Counts one more membership, if the cap and the budget allow it.
    /// Room state is never shed, so it never takes the server over the
    /// budget: a join that would is refused instead.
    fn take_membership(&self, counters: &Counters) -> Result<(), JoinRefused> {
        if self.memory.would_exceed(MEMBERSHIP_BYTES) {
            return Err(JoinRefused::Memory);
        }
        if counters.memberships.fetch_add(1, Ordering::Relaxed) >= self.max_memberships {
            counters.memberships.fetch_sub(1, Ordering::Relaxed);
            return Err(JoinRefused::Memberships(self.max_memberships));
        }
        self.memory.charge(MEMBERSHIP_BYTES);
        Ok(())
    }

    /// Removes connection `id` from `room`; deletes the room when it empties.
    /// Returns the members left.
    ///
    /// The members left are told with `event(room)`'s `userLeft` under the
    /// shard's write lock, so one that joins after never gets an event
    /// about a member its JOIN answer did not list; those whose queue is
    /// full are left in `stalled`.
    pub(crate) fn leave(
        &self,
        room: &str,
        id: u64,
        counters: &Counters,
        event: &mut dyn FnMut(&str) -> Arc<Batch>,
        touched: &mut Vec<Arc<Outbound>>,
        stalled: &mut Stalled,
    ) -> usize {
        let mut map = self.shard(room).write();
        if let Some(entry) = map.get(room) {
            self.relay_leaving(room, entry, id, event);
        }
        let left = self.remove_member(&mut map, room, id, counters);
        if let Some((left, Some(gone))) = &left
            && *left > 0
            && let Some(entry) = map.get(room)
        {
            let told = Told {
                room: entry,
                about: gone,
                change: protocol::MemberChange::Left,
                event: &event(room),
            };
            self.tell(&told, touched, stalled, counters);
        }
        let left = left.map(|(left, _)| left);
        drop(map);
        if left == Some(0) {
            tracing::debug!("room {room:?} deleted");
        }
        left.unwrap_or(0)
    }

    /// Removes connection `id` from every room in `rooms`, taking each
    /// shard's write lock once, and tells the members left in each, as
    /// [`Rooms::leave`] does. A departing connection in many rooms takes each lock
    /// once rather than once a room: when a crowd leaves at once, one
    /// acquisition per room kept thousands of threads queueing (4,000
    /// clients in 100 rooms each took 24 s to leave).
    pub(crate) fn leave_all(
        &self,
        rooms: Vec<Arc<str>>,
        id: u64,
        counters: &Counters,
        event: &mut dyn FnMut(&str) -> Arc<Batch>,
        touched: &mut Vec<Arc<Outbound>>,
        stalled: &mut Stalled,
    ) {
        let mut deleted = Vec::new();
        let mut by_shard: Vec<(usize, Arc<str>)> = rooms
            .into_iter()
            .map(|room| (self.shard_of(&room), room))
            .collect();
        by_shard.sort_unstable_by_key(|&(shard, _)| shard);
        for group in by_shard.chunk_by(|a, b| a.0 == b.0) {
            let mut map = self.shards[group[0].0].0.write();
            for (_, room) in group {
                if let Some(entry) = map.get(&**room) {
                    self.relay_leaving(room, entry, id, event);
                }
                match self.remove_member(&mut map, room, id, counters) {
                    Some((0, _)) => deleted.push(Arc::clone(room)),
                    Some((_, Some(gone))) => {
                        if let Some(entry) = map.get(&**room) {
                            let told = Told {
                                room: entry,
                                about: &gone,
                                change: protocol::MemberChange::Left,
                                event: &event(room),
                            };
                            self.tell(&told, touched, stalled, counters);
                        }
                    }
                    Some((_, None)) | None => {}
                }
            }
        }
        for room in deleted {
            tracing::debug!("room {room:?} deleted");
        }
    }

    /// Relays a membership event of `entry` to the other nodes of a
    /// cluster (SPEC.md 14.1), whether or not this node has other members
    /// to tell: the room's members elsewhere are told too. Under the
    /// caller's lock, so it keeps its place in the room's relayed order.
    fn relay_event(&self, room: &str, entry: &Room, event: &Batch) {
        let Some(outlink) = &self.outlink else {
            return;
        };
        let mut order = entry.order.lock();
        let first = order.relay(0);
        let relayed = Relayed {
            epoch: order.epoch(),
            first,
            frames: event.frames,
            splices: &[],
            bytes: &event.bytes,
        };
        outlink.relay(room, &relayed);
    }

    /// The `userLeft` of connection `id`, if it is a member of `entry`,
    /// for the other nodes; before it is taken out, since the room goes
    /// with its last local member.
    fn relay_leaving(
        &self,
        room: &str,
        entry: &Room,
        id: u64,
        event: &mut dyn FnMut(&str) -> Arc<Batch>,
    ) {
        if self.outlink.is_some() && entry.members.iter().any(|m| m.id() == id) {
            self.relay_event(room, entry, &event(room));
        }
    }

    /// Every room now with its member count, sorted by name, for
    /// `/roomz`. Takes each shard's read lock in turn, briefly; the list is
    /// as big as the room cap allows (`--max-rooms`).
    pub(crate) fn list(&self) -> Vec<(Arc<str>, usize, u64)> {
        let mut rooms: Vec<(Arc<str>, usize, u64)> = Vec::new();
        for shard in self.shards.iter() {
            rooms.extend(shard.0.read().values().map(|room| {
                (
                    Arc::clone(&room.name),
                    room.members.len(),
                    room.messages.load(Ordering::Relaxed),
                )
            }));
        }
        rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rooms
    }

    /// The rooms each of the connections `ids` is in, by name, at most
    /// `max` names each, with the full count: for `/connz`. Walks every
    /// membership (bounded by `--max-memberships`), one shard's read lock
    /// at a time, briefly; the connections keep no list of their own for
    /// it, so nothing is added to joins and leaves.
    pub(crate) fn rooms_of(
        &self,
        ids: &std::collections::HashSet<u64>,
        max: usize,
    ) -> HashMap<u64, (Vec<Arc<str>>, usize)> {
        let mut found: HashMap<u64, (Vec<Arc<str>>, usize)> = HashMap::new();
        for shard in self.shards.iter() {
            let map = shard.0.read();
            for room in map.values() {
                for member in &room.members {
                    if !ids.contains(&member.id()) {
                        continue;
                    }
                    let (names, count) = found.entry(member.id()).or_default();
                    *count += 1;
                    if names.len() < max {
                        names.push(Arc::clone(&room.name));
                    }
                }
            }
        }
        for (names, _) in found.values_mut() {
            names.sort_unstable();
        }
        found
    }

    /// Members of `room` now.
    pub(crate) fn members(&self, room: &str) -> usize {
        self.shard(room)
            .read()
            .get(room)
            .map_or(0, |entry| entry.members.len())
    }

    /// Numbers the messages of `pending` in `room`'s order and queues them
    /// for every member but `skip`; `None` if there is no such room.
    ///
    /// Members with room in their queue get it at once, under the locks;
    /// the others are settled after the locks are dropped (see
    /// [`Stalled::settle`]), their place in the order kept by their
    /// backlog. The members that took the batch are left in `touched`
    /// (which the caller keeps between calls, so this allocates little once
    /// it has grown), for the caller to flush.
    pub(crate) fn broadcast(
        &self,
        room: &str,
        pending: Pending<'_>,
        skip: Option<u64>,
        stall: Duration,
        counters: &Counters,
        touched: &mut Vec<Arc<Outbound>>,
    ) -> Option<Published> {
        let mut stalled = Stalled::default();
        let before = touched.len();
        let frames = pending.frames;
        let published = {
            let map = self.shard(room).read();
            let entry = map.get(room)?;
            entry
                .messages
                .fetch_add(u64::from(pending.frames), Ordering::Relaxed);
            let mut order = entry.order.lock();
            let plain_wanted = entry.plain_wanted(pending.splices);
            if let Some(outlink) = &self.outlink {
                // Under the order lock: the room's batches leave in its
                // order, each counted whether or not it gets through.
                let first = order.relay(pending.splices.len() as u64);
                let relayed = Relayed {
                    epoch: order.epoch(),
                    first,
                    frames: pending.frames,
                    splices: pending.splices,
                    bytes: &pending.bytes,
                };
                outlink.relay(room, &relayed);
            }
            let sequenced = order.sequence(
                pending.bytes,
                pending.splices,
                plain_wanted,
                pending.now_ms,
                pending.read_at,
            );
            let mut queued = 0;
            for member in &entry.members {
                if Some(member.id()) == skip || (pending.splices.is_empty() && member.quiet()) {
                    continue;
                }
                if member.offer(
                    sequenced.for_member(member),
                    touched,
                    &mut stalled,
                    counters,
                ) {
                    queued += 1;
                }
            }
            Published {
                last_seq: sequenced.last_seq,
                epoch: Arc::clone(order.epoch()),
                queued,
            }
        };
        let fan_out = touched.len() - before + stalled.settle(stall, counters);
        // Per MESSAGE: every frame in the batch went to the same members.
        counters.histograms.fan_out.observe_times(
            skip.unwrap_or(0),
            fan_out as u64,
            u64::from(frames),
        );
        Some(published)
    }

    /// Relays a batch from node `node` of the cluster to this node's
    /// members of `room`, numbered in this node's order, after a gap
    /// notice for what was missed from that node just before it (its
    /// `seq`s are given to nothing). Returns how many messages were
    /// missed, or `None` if the room is not here or the batch was seen.
    pub(crate) fn relay_remote(
        &self,
        room: &str,
        node: &str,
        batch: &Relayed<'_>,
        stall: Duration,
        counters: &Counters,
        touched: &mut Vec<Arc<Outbound>>,
    ) -> Option<u64> {
        let mut stalled = Stalled::default();
        let missed = {
            let map = self.shard(room).read();
            let entry = map.get(room)?;
            let mut order = entry.order.lock();
            let messages = batch.splices.len() as u64;
            let missed = order.admit(node, batch.epoch, batch.first, messages)?;
            if missed > 0 {
                let (from, to) = order.skip(missed);
                let gap = protocol::Gap {
                    kind: "gap".into(),
                    room: room.to_owned(),
                    epoch: order.epoch().to_string(),
                    from: Some(from),
                    to: Some(to),
                    previous_epoch: None,
                };
                entry.tell_gap(&gap, touched, &mut stalled, counters);
            }
            if batch.frames > 0 {
                entry
                    .messages
                    .fetch_add(u64::from(batch.frames), Ordering::Relaxed);
                let plain_wanted = entry.plain_wanted(batch.splices);
                let sequenced = order.sequence(
                    batch.bytes.to_vec(),
                    batch.splices,
                    plain_wanted,
                    now_ms(),
                    None,
                );
                for member in &entry.members {
                    if batch.splices.is_empty() && member.quiet() {
                        continue;
                    }
                    member.offer(
                        sequenced.for_member(member),
                        touched,
                        &mut stalled,
                        counters,
                    );
                }
            }
            missed
        };
        stalled.settle(stall, counters);
        Some(missed)
    }

    /// Tells the other nodes how many messages this node has relayed in
    /// each of its rooms (an empty batch), so that one that missed the
    /// last of them learns it without waiting for the next message.
    pub(crate) fn announce_relayed(&self, outlink: &dyn RelayOut) {
        for shard in self.shards.iter() {
            let map = shard.0.read();
            for (name, room) in map.iter() {
                let mut order = room.order.lock();
                if order.relayed() == 0 {
                    continue;
                }
                let first = order.relay(0);
                let relayed = Relayed {
                    epoch: order.epoch(),
                    first,
                    frames: 0,
                    splices: &[],
                    bytes: &[],
                };
                outlink.relay(name, &relayed);
            }
        }
    }

    /// Relays a `userJoined` (from `event`) for every member of every
    /// room to `outlink`, each under its room's locks and in its room's
    /// relayed order like any event, so none comes between a member's own
    /// events: for a node of a cluster that was declared gone to announce
    /// its members again (SPEC.md 14.3). Takes each shard's read lock in
    /// turn; the work is one event per membership (`--max-memberships`).
    pub(crate) fn announce_members(
        &self,
        outlink: &dyn RelayOut,
        event: &mut dyn FnMut(&str, &Outbound) -> Option<Vec<u8>>,
    ) {
        for shard in self.shards.iter() {
            let map = shard.0.read();
            for (name, room) in map.iter() {
                let mut order = room.order.lock();
                for member in &room.members {
                    let Some(bytes) = event(name, member) else {
                        continue;
                    };
                    let first = order.relay(0);
                    let relayed = Relayed {
                        epoch: order.epoch(),
                        first,
                        frames: 1,
                        splices: &[],
                        bytes: &bytes,
                    };
                    outlink.relay(name, &relayed);
                }
            }
        }
    }

    /// Queues membership events that come from the cluster rather than a
    /// node (the leaves of a node that is gone, SPEC.md 14.3) for this
    /// node's members of `room` that take events, in the room's order of
    /// deliveries; `false` if the room is not here.
    pub(crate) fn tell_remote(
        &self,
        room: &str,
        events: &Arc<Batch>,
        stall: Duration,
        counters: &Counters,
        touched: &mut Vec<Arc<Outbound>>,
    ) -> bool {
        let mut stalled = Stalled::default();
        {
            let map = self.shard(room).read();
            let Some(entry) = map.get(room) else {
                return false;
            };
            let _order = entry.order.lock();
            entry
                .messages
                .fetch_add(u64::from(events.frames), Ordering::Relaxed);
            for member in &entry.members {
                if !member.quiet() {
                    member.offer(events, touched, &mut stalled, counters);
                }
            }
        }
        stalled.settle(stall, counters);
        true
    }

    /// The members of `room` now, for WHO: their count, and a page of at
    /// most `limit` (at most `MAX_MEMBER_LIST`) oldest first, those whose
    /// membership number is above `after`, each with its number; and
    /// whether more follow the page.
    pub(crate) fn who(
        &self,
        room: &str,
        after: u64,
        limit: usize,
    ) -> (usize, Vec<(u64, Member)>, bool) {
        let map = self.shard(room).read();
        let Some(entry) = map.get(room) else {
            return (0, Vec::new(), false);
        };
        let limit = limit.min(protocol::MAX_MEMBER_LIST);
        let from = entry.numbers.partition_point(|&number| number <= after);
        let list: Vec<(u64, Member)> = entry.numbers[from..]
            .iter()
            .zip(&entry.members[from..])
            .take(limit)
            .map(|(&number, m)| {
                let member = Member {
                    connection_id: format!("c{}", m.id()),
                    user: m.user().map(str::to_owned),
                };
                (number, member)
            })
            .collect();
        let more = from + list.len() < entry.members.len();
        (entry.members.len(), list, more)
    }

    /// Sends every room's waiting membership changes as `members` notices
    /// to the members that asked for them batched; run by the flush thread
    /// every [`MemberBatching::interval`]. A member whose queue is full is
    /// waited for as a publisher would (up to `stall`), after the room's
    /// lock is released.
    pub(crate) fn flush_notices(
        &self,
        now_ms: u64,
        max_frame: usize,
        stall: Duration,
        counters: &Counters,
    ) {
        let dirty = std::mem::take(&mut *self.dirty.lock());
        let mut touched = Vec::new();
        for name in dirty {
            let mut stalled = Stalled::default();
            {
                let map = self.shard(&name).read();
                let Some(entry) = map.get(&*name) else {
                    continue;
                };
                let window = entry.window.lock().take();
                let count = entry.members.len();
                let everything = window
                    .notice(&name, count, now_ms, None)
                    .and_then(|notice| notice_batch(notice, max_frame));
                for member in &entry.members {
                    if !member.batched() || member.quiet() {
                        continue;
                    }
                    let batch = if window.is_newcomer(member.id()) {
                        window
                            .notice(&name, count, now_ms, Some(member.id()))
                            .and_then(|notice| notice_batch(notice, max_frame))
                    } else {
                        everything.clone()
                    };
                    if let Some(batch) = batch {
                        member.offer(&batch, &mut touched, &mut stalled, counters);
                    }
                }
            }
            stalled.settle(stall, counters);
            for member in touched.drain(..) {
                member.flush_now(counters);
            }
        }
    }

    /// Queues a membership event for the other members of a room (those
    /// that did not turn events off), under the caller's lock; counted like
    /// a broadcast. In a room past the batching bound, or whose window is
    /// already open, members that asked for batching get the change in the
    /// room's next notice instead.
    fn tell(
        &self,
        told: &Told<'_>,
        touched: &mut Vec<Arc<Outbound>>,
        stalled: &mut Stalled,
        counters: &Counters,
    ) {
        let room = told.room;
        let about = told.about.id();
        let batched = {
            let mut window = room.window.lock();
            let batched = room.members.len() > self.batching.above || window.is_open();
            if batched {
                if !window.is_open() {
                    self.dirty.lock().push(Arc::clone(&room.name));
                }
                window.record(told.change, about, told.about.user());
            }
            batched
        };
        room.messages.fetch_add(1, Ordering::Relaxed);
        let mut count = 0;
        for member in &room.members {
            if member.id() != about
                && !member.quiet()
                && !(batched && member.batched())
                && member.offer(told.event, touched, stalled, counters)
            {
                count += 1;
            }
        }
        counters.histograms.fan_out.observe_times(about, count, 1);
    }

    /// Takes connection `id` out of `room` in its locked shard, deleting
    /// the room when it empties; the members left, or `None` if there is no
    /// such room. Logging is the caller's, once the lock is released.
    fn remove_member(
        &self,
        map: &mut Map,
        room: &str,
        id: u64,
        counters: &Counters,
    ) -> Option<(usize, Option<Arc<Outbound>>)> {
        let entry = map.get_mut(room)?;
        let gone = entry.members.iter().position(|m| m.id() == id).map(|at| {
            entry.numbers.remove(at);
            counters.memberships.fetch_sub(1, Ordering::Relaxed);
            self.memory.credit(MEMBERSHIP_BYTES);
            entry.members.remove(at)
        });
        let left = entry.members.len();
        if left == 0 {
            map.remove(room);
            counters.rooms.fetch_sub(1, Ordering::Relaxed);
            self.memory.credit(ROOM_BYTES + room.len());
        }
        Some((left, gone))
    }
}

/// A membership change to tell a room's other members of.
struct Told<'a> {
    room: &'a Room,
    /// The member that joined or left.
    about: &'a Outbound,
    change: protocol::MemberChange,
    /// Its `userJoined` or `userLeft`, for the members that take those.
    event: &'a Arc<Batch>,
}

/// A `members` notice as a frame of its own, fewer changes listed (down to
/// none) until it fits `max_frame`; the counts stay exact.
fn notice_batch(mut notice: protocol::MembersNotice, max_frame: usize) -> Option<Arc<Batch>> {
    loop {
        let mut bytes = Vec::new();
        match protocol::encode_json(&mut bytes, protocol::MessageType::Message, &notice) {
            Ok(length) if length as usize > max_frame && !notice.changes.is_empty() => {
                let keep = notice.changes.len() / 2;
                notice.changes.truncate(keep);
            }
            Ok(_) => return Some(Arc::new(Batch::new(bytes, None))),
            Err(error) => {
                tracing::error!("members notice not encoded: {error}");
                return None;
            }
        }
    }
}

/// Milliseconds since the Unix epoch, for the history's age limit.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::outbound::QueueLimits;
    use crate::sys::alloc_count::allocations_in;

    /// A leave whose event names the room, for the members left to get.
    fn leave(rooms: &Rooms, room: &str, id: u64, counters: &Counters) -> usize {
        let mut event = |room: &str| Arc::new(Batch::raw(room.as_bytes().to_vec(), 1));
        let mut stalled = Stalled::default();
        rooms.leave(
            room,
            id,
            counters,
            &mut event,
            &mut Vec::new(),
            &mut stalled,
        )
    }

    fn leave_all(rooms: &Rooms, names: Vec<Arc<str>>, id: u64, counters: &Counters) {
        let mut event = |room: &str| Arc::new(Batch::raw(room.as_bytes().to_vec(), 1));
        let mut stalled = Stalled::default();
        rooms.leave_all(
            names,
            id,
            counters,
            &mut event,
            &mut Vec::new(),
            &mut stalled,
        );
    }

    /// A plain join: no recovery, no answer.
    fn join(
        rooms: &Rooms,
        room: &str,
        member: &Arc<Outbound>,
        counters: &Counters,
    ) -> Result<Joined, JoinRefused> {
        let mut answer = |_: &Joined, _: &mut Vec<u8>| 0;
        rooms.join(
            room,
            member,
            &JoinRequest::default(),
            counters,
            &mut answer,
            &mut Vec::new(),
            &mut Stalled::default(),
        )
    }

    #[test]
    fn broadcasting_to_a_hundred_members_allocates_per_batch_not_per_member() {
        let counters = Counters::default();
        let rooms = Rooms::default();
        let limits = QueueLimits {
            items: 64,
            bytes: 1 << 20,
        };
        let members: Vec<_> = (0..100).map(|id| Outbound::new(id, limits)).collect();
        for (member, _) in &members {
            join(&rooms, "room", member, &counters).unwrap();
        }
        // Thirty deliveries per batch, each to be numbered.
        let mut bytes = Vec::new();
        let splices: Vec<Splice> = (0..30)
            .map(|n| Splice::json_delivery(&mut bytes, "room", n))
            .collect();
        let mut batches: Vec<Vec<u8>> = (0..10).map(|_| bytes.clone()).collect();
        let mut touched = Vec::with_capacity(100);
        let allocations = allocations_in(|| {
            for bytes in batches.drain(..) {
                let stall = Duration::from_millis(10);
                let pending = Pending {
                    bytes,
                    frames: 30,
                    splices: &splices,
                    now_ms: 1,
                    read_at: None,
                };
                rooms.broadcast("room", pending, Some(0), stall, &counters, &mut touched);
                touched.clear();
            }
        });
        // The numbered copy and its Arc, once a batch; nothing per member.
        assert!(
            allocations <= 10 * 2,
            "10 broadcasts to 100 members allocated {allocations} times"
        );
        assert_eq!(members[0].1.len(), 0);
        assert!(members[1..].iter().all(|(_, rx)| rx.len() == 10));
        // Every member got the same bytes, numbered 1 to 300 in order.
        let first = members[1].1.try_recv().unwrap();
        assert!(members[2..].iter().all(|(_, rx)| {
            let batch = rx.try_recv().unwrap();
            Arc::ptr_eq(&batch, &first)
        }));
        let (frame, _) = protocol::parse_frame(&first.bytes, u32::MAX)
            .unwrap()
            .unwrap();
        let delivery: serde_json::Value = serde_json::from_slice(frame.payload).unwrap();
        assert_eq!(delivery["seq"], 1);
    }

    #[test]
    fn a_room_lives_while_it_has_members() {
        let counters = Counters::default();
        let rooms = Rooms::default();
        let limits = QueueLimits {
            items: 4,
            bytes: 1000,
        };
        let (a, _) = Outbound::new(1, limits);
        let (b, _) = Outbound::new(2, limits);
        assert!(join(&rooms, "r", &a, &counters).unwrap().new);
        assert_eq!(join(&rooms, "r", &b, &counters).unwrap().members, 2);
        assert!(
            !join(&rooms, "r", &b, &counters).unwrap().new,
            "joining twice is one membership"
        );
        assert_eq!(counters.rooms(), 1);
        assert_eq!(leave(&rooms, "r", 1, &counters), 1);
        assert_eq!(leave(&rooms, "r", 2, &counters), 0);
        assert_eq!(counters.rooms(), 0);
        assert_eq!(rooms.members("r"), 0);
    }

    fn capped(max_rooms: usize, max_memberships: usize) -> Rooms {
        let budget = Budget {
            max_rooms,
            max_memberships,
            memory: None,
        };
        Rooms::new(
            budget,
            HistoryLimits::default(),
            Arc::new(MemoryBudget::new(1 << 20)),
        )
    }

    #[test]
    fn the_room_cap_refuses_a_new_room_and_admits_one_after_a_room_goes() {
        let counters = Counters::default();
        let rooms = capped(2, 100);
        let limits = QueueLimits {
            items: 4,
            bytes: 1000,
        };
        let (a, _) = Outbound::new(1, limits);
        let (b, _) = Outbound::new(2, limits);
        join(&rooms, "one", &a, &counters).unwrap();
        join(&rooms, "two", &a, &counters).unwrap();
        let refused = join(&rooms, "three", &a, &counters).unwrap_err();
        assert_eq!(refused, JoinRefused::Rooms(2));
        assert!(refused.to_string().contains("limit of 2 rooms"));
        // Joining a room that exists is not creating one.
        assert!(join(&rooms, "two", &b, &counters).unwrap().new);
        assert_eq!((counters.rooms(), counters.memberships()), (2, 3));
        leave(&rooms, "one", 1, &counters);
        join(&rooms, "three", &b, &counters).unwrap();
        assert_eq!((counters.rooms(), counters.memberships()), (2, 3));
    }

    #[test]
    fn the_membership_cap_counts_every_room_of_every_connection() {
        let counters = Counters::default();
        let rooms = capped(100, 3);
        let limits = QueueLimits {
            items: 4,
            bytes: 1000,
        };
        let (a, _) = Outbound::new(1, limits);
        let (b, _) = Outbound::new(2, limits);
        join(&rooms, "x", &a, &counters).unwrap();
        join(&rooms, "y", &a, &counters).unwrap();
        join(&rooms, "x", &b, &counters).unwrap();
        assert_eq!(
            join(&rooms, "y", &b, &counters).unwrap_err(),
            JoinRefused::Memberships(3)
        );
        assert_eq!(
            join(&rooms, "z", &b, &counters).unwrap_err(),
            JoinRefused::Memberships(3),
            "a refused new room is not left counted"
        );
        assert_eq!(counters.rooms(), 2);
        assert!(
            !join(&rooms, "x", &b, &counters).unwrap().new,
            "rejoining is free"
        );
        leave_all(&rooms, vec![Arc::from("x"), Arc::from("y")], 1, &counters);
        assert_eq!((counters.rooms(), counters.memberships()), (1, 1));
        join(&rooms, "y", &b, &counters).unwrap();
        assert_eq!(counters.memberships(), 2);
    }

    #[test]
    fn room_state_is_charged_to_the_budget_and_given_back_exactly() {
        let counters = Counters::default();
        let rooms = capped(1000, 1000);
        let limits = QueueLimits {
            items: 4,
            bytes: 1000,
        };
        let members: Vec<_> = (0..20).map(|id| Outbound::new(id, limits).0).collect();
        for (i, member) in members.iter().enumerate() {
            for room in 0..=i % 7 {
                join(&rooms, &format!("room-{room}"), member, &counters).unwrap();
            }
        }
        let memberships = counters.memberships() as usize;
        let names: usize = (0..7).map(|room| format!("room-{room}").len()).sum();
        assert_eq!(
            rooms.memory.used() as usize,
            7 * ROOM_BYTES + names + memberships * MEMBERSHIP_BYTES
        );
        for (i, member) in members.iter().enumerate() {
            if i % 2 == 0 {
                leave(&rooms, "room-0", member.id(), &counters);
            }
            let all = (0..7)
                .map(|room| Arc::from(format!("room-{room}")))
                .collect();
            leave_all(&rooms, all, member.id(), &counters);
        }
        assert_eq!((counters.rooms(), counters.memberships()), (0, 0));
        assert_eq!(rooms.memory.used(), 0);
    }

    #[test]
    fn a_server_over_its_budget_refuses_joins() {
        let counters = Counters::default();
        let rooms = capped(100, 100);
        let (a, _) = Outbound::new(
            1,
            QueueLimits {
                items: 4,
                bytes: 1000,
            },
        );
        join(&rooms, "r", &a, &counters).unwrap();
        rooms.memory.charge(1 << 20);
        let (b, _) = Outbound::new(
            2,
            QueueLimits {
                items: 4,
                bytes: 1000,
            },
        );
        assert_eq!(
            join(&rooms, "r", &b, &counters).unwrap_err(),
            JoinRefused::Memory
        );
        assert_eq!(
            join(&rooms, "s", &b, &counters).unwrap_err(),
            JoinRefused::Memory
        );
        rooms.memory.credit(1 << 20);
        join(&rooms, "s", &b, &counters).unwrap();
    }

    #[test]
    fn leaving_all_rooms_at_once_keeps_the_rooms_others_are_in() {
        let counters = Counters::default();
        let rooms = Rooms::default();
        let limits = QueueLimits {
            items: 4,
            bytes: 1000,
        };
        let (a, _) = Outbound::new(1, limits);
        let (b, b_rx) = Outbound::new(2, limits);
        for room in ["shared", "alone", "also"] {
            join(&rooms, room, &a, &counters).unwrap();
        }
        join(&rooms, "shared", &b, &counters).unwrap();
        let names: Vec<Arc<str>> = ["shared", "alone", "also", "never"]
            .into_iter()
            .map(Arc::from)
            .collect();
        leave_all(&rooms, names, 1, &counters);
        // The one room with a member left told it, and only it.
        let told: Vec<_> = b_rx.try_iter().map(|batch| batch.bytes.clone()).collect();
        assert_eq!(told, [b"shared".to_vec()]);
        assert_eq!(rooms.members("shared"), 1);
        assert_eq!(counters.rooms(), 1);
    }
}
