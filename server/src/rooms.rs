//! The room registry: which connections are in which room.
//!
//! One `RwLock<HashMap<room, members>>`. Broadcasts take the read lock and only
//! `try_push` under it (no I/O, no waiting); joins and leaves take the write
//! lock briefly. A publisher that finds a member's queue full waits for it
//! after the lock is released, with one deadline for the whole broadcast.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::counters::Counters;
use crate::peer::{Batch, Peer, PushError};

struct Room {
    /// The same `Arc` as the map key, handed to members for their own lists.
    name: Arc<str>,
    members: Vec<Arc<Peer>>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({} members)", self.name, self.members.len())
    }
}

#[derive(Debug, Default)]
pub struct Rooms {
    map: RwLock<HashMap<Arc<str>, Room>>,
}

/// The outcome of a join.
#[derive(Debug)]
pub struct Joined {
    /// The registry's shared name for the room.
    pub name: Arc<str>,
    /// Members after the join.
    pub members: usize,
    /// False if the connection was already a member.
    pub new: bool,
}

impl Rooms {
    /// Adds `peer` to `room`, creating the room if needed.
    pub fn join(&self, room: &str, peer: &Arc<Peer>, counters: &Counters) -> Joined {
        let mut map = self.map.write();
        if let Some(entry) = map.get_mut(room) {
            let new = !entry.members.iter().any(|m| m.id == peer.id);
            if new {
                entry.members.push(Arc::clone(peer));
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
            members: vec![Arc::clone(peer)],
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
    pub fn leave(&self, room: &str, id: u64, counters: &Counters) -> usize {
        let mut map = self.map.write();
        let Some(entry) = map.get_mut(room) else {
            return 0;
        };
        entry.members.retain(|m| m.id != id);
        let left = entry.members.len();
        if left == 0 {
            map.remove(room);
            counters.rooms.fetch_sub(1, Ordering::Relaxed);
            drop(map);
            log::info!("room {room:?} deleted");
        }
        left
    }

    /// Members of `room` now.
    pub fn members(&self, room: &str) -> usize {
        self.map
            .read()
            .get(room)
            .map_or(0, |entry| entry.members.len())
    }

    /// Queues `batch` for every member of `room` but `skip`.
    ///
    /// Members with room in their queue get it at once, under the read lock.
    /// The others are waited for after the lock is dropped, all against one
    /// deadline `stall` from now; a member still full then is cut off as a
    /// slow consumer. So a publisher is held up at most `stall` per broadcast,
    /// and only when someone is not keeping up.
    pub fn broadcast(
        &self,
        room: &str,
        batch: &Arc<Batch>,
        skip: Option<u64>,
        stall: Duration,
        counters: &Counters,
    ) {
        let mut stalled: Vec<Arc<Peer>> = Vec::new();
        {
            let map = self.map.read();
            let Some(entry) = map.get(room) else {
                return;
            };
            for member in &entry.members {
                if Some(member.id) == skip {
                    continue;
                }
                if member.try_push(batch) == Err(PushError::Full) {
                    stalled.push(Arc::clone(member));
                }
            }
        }
        if stalled.is_empty() {
            return;
        }
        let deadline = Instant::now() + stall;
        for member in stalled {
            if member.push_until(batch, deadline) == Err(PushError::Full) {
                member.cut_slow(counters);
            }
        }
    }
}
