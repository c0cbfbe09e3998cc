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

use parking_lot::RwLock;

use crate::budget::{MEMBERSHIP_BYTES, MemoryBudget, ROOM_BYTES};
use crate::config::Budget;
use crate::conn::outbound::{Batch, Outbound, Stalled};
use crate::counters::Counters;

/// How many maps the rooms are spread over.
pub(crate) const SHARDS: usize = 64;

struct Room {
    /// The same `Arc` as the map key, handed to members for their own lists.
    name: Arc<str>,
    members: Vec<Arc<Outbound>>,
    /// MESSAGE frames relayed to the room since it was created (member
    /// events too), for `/roomz`: one relaxed add per broadcast batch, under the read lock
    /// the broadcast holds anyway.
    messages: AtomicU64,
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
    /// [`MEMBERSHIP_BYTES`].
    memory: Arc<MemoryBudget>,
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms::new(Budget::default(), Arc::new(MemoryBudget::unlimited()))
    }
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
        }
    }
}

impl Rooms {
    pub(crate) fn new(budget: Budget, memory: Arc<MemoryBudget>) -> Rooms {
        Rooms {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
            max_rooms: budget.max_rooms as u64,
            max_memberships: budget.max_memberships as u64,
            memory,
        }
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
    pub(crate) fn join(
        &self,
        room: &str,
        member: &Arc<Outbound>,
        counters: &Counters,
    ) -> Result<Joined, JoinRefused> {
        let mut map = self.shard(room).write();
        if let Some(entry) = map.get_mut(room) {
            let new = !entry.members.iter().any(|m| m.id() == member.id());
            if new {
                self.take_membership(counters)?;
                entry.members.push(Arc::clone(member));
            }
            return Ok(Joined {
                name: Arc::clone(&entry.name),
                members: entry.members.len(),
                new,
            });
        }
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
        let entry = Room {
            name: Arc::clone(&name),
            members: vec![Arc::clone(member)],
            messages: AtomicU64::new(0),
        };
        map.insert(Arc::clone(&name), entry);
        drop(map);
        self.memory.charge(ROOM_BYTES + room.len());
        tracing::debug!("room {room:?} created");
        Ok(Joined {
            name,
            members: 1,
            new: true,
        })
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
    pub(crate) fn leave(&self, room: &str, id: u64, counters: &Counters) -> usize {
        let left = self.remove_member(&mut self.shard(room).write(), room, id, counters);
        if left == Some(0) {
            tracing::debug!("room {room:?} deleted");
        }
        left.unwrap_or(0)
    }

    /// Removes connection `id` from every room in `rooms`, taking each
    /// shard's write lock once; returns the rooms that still have members,
    /// to be told. A departing connection in many rooms takes each lock
    /// once rather than once a room: when a crowd leaves at once, one
    /// acquisition per room kept thousands of threads queueing (4,000
    /// clients in 100 rooms each took 24 s to leave).
    pub(crate) fn leave_all(
        &self,
        rooms: Vec<Arc<str>>,
        id: u64,
        counters: &Counters,
    ) -> Vec<Arc<str>> {
        let mut remaining = Vec::with_capacity(rooms.len());
        let mut deleted = Vec::new();
        let mut by_shard: Vec<(usize, Arc<str>)> = rooms
            .into_iter()
            .map(|room| (self.shard_of(&room), room))
            .collect();
        by_shard.sort_unstable_by_key(|&(shard, _)| shard);
        for group in by_shard.chunk_by(|a, b| a.0 == b.0) {
            let mut map = self.shards[group[0].0].0.write();
            for (_, room) in group {
                match self.remove_member(&mut map, room, id, counters) {
                    Some(0) => deleted.push(Arc::clone(room)),
                    Some(_) => remaining.push(Arc::clone(room)),
                    None => {}
                }
            }
        }
        for room in deleted {
            tracing::debug!("room {room:?} deleted");
        }
        remaining
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

    /// Queues `batch` for every member of `room` but `skip`.
    ///
    /// Members with room in their queue get it at once, under the read lock;
    /// the others are settled after the lock is dropped (see
    /// [`Stalled::settle`]).
    /// The members that took the batch are left in `touched` (which the
    /// caller keeps between calls, so this allocates nothing once it has
    /// grown), for the caller to flush.
    pub(crate) fn broadcast(
        &self,
        room: &str,
        batch: &Arc<Batch>,
        skip: Option<u64>,
        stall: Duration,
        counters: &Counters,
        touched: &mut Vec<Arc<Outbound>>,
    ) {
        let mut stalled = Stalled::default();
        let before = touched.len();
        {
            let map = self.shard(room).read();
            let Some(entry) = map.get(room) else {
                return;
            };
            entry
                .messages
                .fetch_add(u64::from(batch.frames), Ordering::Relaxed);
            for member in &entry.members {
                if Some(member.id()) != skip {
                    member.offer(batch, touched, &mut stalled, counters);
                }
            }
        }
        let fan_out = touched.len() - before + stalled.settle(batch, stall, counters);
        // Per MESSAGE: every frame in the batch went to the same members.
        counters.histograms.fan_out.observe_times(
            skip.unwrap_or(0),
            fan_out as u64,
            u64::from(batch.frames),
        );
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
    ) -> Option<usize> {
        let entry = map.get_mut(room)?;
        let before = entry.members.len();
        entry.members.retain(|m| m.id() != id);
        let left = entry.members.len();
        if left < before {
            counters.memberships.fetch_sub(1, Ordering::Relaxed);
            self.memory.credit(MEMBERSHIP_BYTES);
        }
        if left == 0 {
            map.remove(room);
            counters.rooms.fetch_sub(1, Ordering::Relaxed);
            self.memory.credit(ROOM_BYTES + room.len());
        }
        Some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::outbound::QueueLimits;
    use crate::sys::alloc_count::allocations_in;

    #[test]
    fn broadcasting_to_a_hundred_members_allocates_nothing() {
        let counters = Counters::default();
        let rooms = Rooms::default();
        let limits = QueueLimits {
            items: 64,
            bytes: 1 << 20,
        };
        let members: Vec<_> = (0..100).map(|id| Outbound::new(id, limits)).collect();
        for (member, _) in &members {
            rooms.join("room", member, &counters).unwrap();
        }
        let batch = Arc::new(Batch::raw(vec![0u8; 4096], 30));
        let mut touched = Vec::with_capacity(100);
        let allocations = allocations_in(|| {
            for _ in 0..10 {
                let stall = Duration::from_millis(10);
                rooms.broadcast("room", &batch, Some(0), stall, &counters, &mut touched);
                touched.clear();
            }
        });
        assert_eq!(
            allocations, 0,
            "10 broadcasts to 100 members allocated {allocations} times"
        );
        // Every member but the skipped one has ten references to the same bytes.
        assert_eq!(Arc::strong_count(&batch), 1 + 99 * 10);
        assert_eq!(members[0].1.len(), 0);
        assert!(members[1..].iter().all(|(_, rx)| rx.len() == 10));
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
        assert!(rooms.join("r", &a, &counters).unwrap().new);
        assert_eq!(rooms.join("r", &b, &counters).unwrap().members, 2);
        assert!(
            !rooms.join("r", &b, &counters).unwrap().new,
            "joining twice is one membership"
        );
        assert_eq!(counters.rooms(), 1);
        assert_eq!(rooms.leave("r", 1, &counters), 1);
        assert_eq!(rooms.leave("r", 2, &counters), 0);
        assert_eq!(counters.rooms(), 0);
        assert_eq!(rooms.members("r"), 0);
    }

    fn capped(max_rooms: usize, max_memberships: usize) -> Rooms {
        let budget = Budget {
            max_rooms,
            max_memberships,
            memory: None,
        };
        Rooms::new(budget, Arc::new(MemoryBudget::new(1 << 20)))
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
        rooms.join("one", &a, &counters).unwrap();
        rooms.join("two", &a, &counters).unwrap();
        let refused = rooms.join("three", &a, &counters).unwrap_err();
        assert_eq!(refused, JoinRefused::Rooms(2));
        assert!(refused.to_string().contains("limit of 2 rooms"));
        // Joining a room that exists is not creating one.
        assert!(rooms.join("two", &b, &counters).unwrap().new);
        assert_eq!((counters.rooms(), counters.memberships()), (2, 3));
        rooms.leave("one", 1, &counters);
        rooms.join("three", &b, &counters).unwrap();
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
        rooms.join("x", &a, &counters).unwrap();
        rooms.join("y", &a, &counters).unwrap();
        rooms.join("x", &b, &counters).unwrap();
        assert_eq!(
            rooms.join("y", &b, &counters).unwrap_err(),
            JoinRefused::Memberships(3)
        );
        assert_eq!(
            rooms.join("z", &b, &counters).unwrap_err(),
            JoinRefused::Memberships(3),
            "a refused new room is not left counted"
        );
        assert_eq!(counters.rooms(), 2);
        assert!(
            !rooms.join("x", &b, &counters).unwrap().new,
            "rejoining is free"
        );
        rooms.leave_all(vec![Arc::from("x"), Arc::from("y")], 1, &counters);
        assert_eq!((counters.rooms(), counters.memberships()), (1, 1));
        rooms.join("y", &b, &counters).unwrap();
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
                rooms
                    .join(&format!("room-{room}"), member, &counters)
                    .unwrap();
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
                rooms.leave("room-0", member.id(), &counters);
            }
            let all = (0..7)
                .map(|room| Arc::from(format!("room-{room}")))
                .collect();
            rooms.leave_all(all, member.id(), &counters);
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
        rooms.join("r", &a, &counters).unwrap();
        rooms.memory.charge(1 << 20);
        let (b, _) = Outbound::new(
            2,
            QueueLimits {
                items: 4,
                bytes: 1000,
            },
        );
        assert_eq!(
            rooms.join("r", &b, &counters).unwrap_err(),
            JoinRefused::Memory
        );
        assert_eq!(
            rooms.join("s", &b, &counters).unwrap_err(),
            JoinRefused::Memory
        );
        rooms.memory.credit(1 << 20);
        rooms.join("s", &b, &counters).unwrap();
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
        let (b, _) = Outbound::new(2, limits);
        for room in ["shared", "alone", "also"] {
            rooms.join(room, &a, &counters).unwrap();
        }
        rooms.join("shared", &b, &counters).unwrap();
        let names: Vec<Arc<str>> = ["shared", "alone", "also", "never"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let remaining = rooms.leave_all(names, 1, &counters);
        assert_eq!(remaining, [Arc::<str>::from("shared")]);
        assert_eq!(rooms.members("shared"), 1);
        assert_eq!(counters.rooms(), 1);
    }
}
