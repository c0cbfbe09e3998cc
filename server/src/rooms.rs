//! The room registry: which connections are in which room.
//!
//! One `RwLock<HashMap<room, members>>`. Broadcasts take the read lock and only
//! offer under it (no I/O, no waiting); joins and leaves take the write lock
//! briefly. A publisher that finds a member's queue full waits for it after
//! the lock is released, by the outbound queue's one deliver-or-cut rule.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::RwLock;

use crate::conn::outbound::{Batch, Outbound, Stalled};
use crate::counters::Counters;

struct Room {
    /// The same `Arc` as the map key, handed to members for their own lists.
    name: Arc<str>,
    members: Vec<Arc<Outbound>>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({} members)", self.name, self.members.len())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Rooms {
    map: RwLock<HashMap<Arc<str>, Room>>,
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

impl Rooms {
    /// Adds `peer` to `room`, creating the room if needed.
    pub(crate) fn join(&self, room: &str, member: &Arc<Outbound>, counters: &Counters) -> Joined {
        let mut map = self.map.write();
        if let Some(entry) = map.get_mut(room) {
            let new = !entry.members.iter().any(|m| m.id() == member.id());
            if new {
                entry.members.push(Arc::clone(member));
            }
            return Joined {
                name: Arc::clone(&entry.name),
                members: entry.members.len(),
                new,
            };
        }
        let name: Arc<str> = Arc::from(room);
        let entry = Room {
            name: Arc::clone(&name),
            members: vec![Arc::clone(member)],
        };
        map.insert(Arc::clone(&name), entry);
        counters.rooms.fetch_add(1, Ordering::Relaxed);
        drop(map);
        log::info!("room {room:?} created");
        Joined {
            name,
            members: 1,
            new: true,
        }
    }

    /// Removes connection `id` from `room`; deletes the room when it empties.
    /// Returns the members left.
    pub(crate) fn leave(&self, room: &str, id: u64, counters: &Counters) -> usize {
        let left = remove_member(&mut self.map.write(), room, id, counters);
        if left == Some(0) {
            log::info!("room {room:?} deleted");
        }
        left.unwrap_or(0)
    }

    /// Removes connection `id` from every room in `rooms` under one write
    /// lock; returns the rooms that still have members, to be told. A
    /// departing connection in many rooms takes the lock once rather than
    /// once a room: when a crowd leaves at once, one acquisition per room
    /// kept thousands of threads queueing on this lock (4,000 clients in 100
    /// rooms each took 24 s to leave).
    pub(crate) fn leave_all(
        &self,
        rooms: Vec<Arc<str>>,
        id: u64,
        counters: &Counters,
    ) -> Vec<Arc<str>> {
        let mut remaining = Vec::with_capacity(rooms.len());
        let mut deleted = Vec::new();
        {
            let mut map = self.map.write();
            for room in rooms {
                match remove_member(&mut map, &room, id, counters) {
                    Some(0) => deleted.push(room),
                    Some(_) => remaining.push(room),
                    None => {}
                }
            }
        }
        for room in deleted {
            log::info!("room {room:?} deleted");
        }
        remaining
    }

    /// Members of `room` now.
    pub(crate) fn members(&self, room: &str) -> usize {
        self.map
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
        {
            let map = self.map.read();
            let Some(entry) = map.get(room) else {
                return;
            };
            for member in &entry.members {
                if Some(member.id()) != skip {
                    member.offer(batch, touched, &mut stalled);
                }
            }
        }
        stalled.settle(batch, stall, counters);
    }
}

/// Takes connection `id` out of `room` in the locked map, deleting the room
/// when it empties; the members left, or `None` if there is no such room.
/// Logging is the caller's, once the lock is released.
fn remove_member(
    map: &mut HashMap<Arc<str>, Room>,
    room: &str,
    id: u64,
    counters: &Counters,
) -> Option<usize> {
    let entry = map.get_mut(room)?;
    entry.members.retain(|m| m.id() != id);
    let left = entry.members.len();
    if left == 0 {
        map.remove(room);
        counters.rooms.fetch_sub(1, Ordering::Relaxed);
    }
    Some(left)
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
            rooms.join("room", member, &counters);
        }
        let batch = Arc::new(Batch {
            bytes: vec![0u8; 4096],
            frames: 30,
        });
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
        assert!(rooms.join("r", &a, &counters).new);
        assert_eq!(rooms.join("r", &b, &counters).members, 2);
        assert!(
            !rooms.join("r", &b, &counters).new,
            "joining twice is one membership"
        );
        assert_eq!(counters.rooms(), 1);
        assert_eq!(rooms.leave("r", 1, &counters), 1);
        assert_eq!(rooms.leave("r", 2, &counters), 0);
        assert_eq!(counters.rooms(), 0);
        assert_eq!(rooms.members("r"), 0);
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
            rooms.join(room, &a, &counters);
        }
        rooms.join("shared", &b, &counters);
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
