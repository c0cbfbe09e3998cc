//! Which rooms the subscriber is subscribed to, so that a JOIN can wait
//! for its room's subscription before it is answered.
//!
//! Why wait: a member's JOIN answer says "from here on, you get the room's
//! messages". On a node with no member in the room yet, the room's channel
//! is not subscribed, and a message published on another node just after
//! the answer would pass this node by. So the first JOIN of a room on a
//! node waits (at most [`JOIN_WAIT`], and not at all while the subscribing
//! link is down) until the SUBSCRIBE is confirmed. Later JOINs find it
//! done and do not wait.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::changes::Changes;

/// The longest a JOIN waits for its room's subscription.
pub(crate) const JOIN_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    state: Mutex<State>,
    confirmed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Rooms whose SUBSCRIBE Redis confirmed, on the current connection.
    active: HashSet<Arc<str>>,
    /// Rooms with JOINs waiting or in progress, and how many.
    joining: HashMap<Arc<str>, usize>,
}

/// A JOIN in progress; its room stays wanted until it is dropped.
#[derive(Debug)]
pub(crate) struct Joining<'a> {
    subscriptions: &'a Subscriptions,
    changes: &'a Changes,
    room: Arc<str>,
}

impl Subscriptions {
    /// Registers a JOIN of `room` and waits until the room is subscribed
    /// (or the link is down, or [`JOIN_WAIT`] passed).
    pub(crate) fn join<'a>(
        &'a self,
        room: &str,
        changes: &'a Changes,
        link_down: &AtomicBool,
    ) -> Joining<'a> {
        let room: Arc<str> = Arc::from(room);
        let mut state = self.state.lock();
        *state.joining.entry(Arc::clone(&room)).or_default() += 1;
        if !state.active.contains(&room) && !link_down.load(Ordering::Acquire) {
            changes.add(&room);
            let deadline = Instant::now() + JOIN_WAIT;
            while !state.active.contains(&room) && !link_down.load(Ordering::Acquire) {
                if self.confirmed.wait_until(&mut state, deadline).timed_out() {
                    tracing::warn!(
                        "cluster: room {room:?} not subscribed within {} ms; the JOIN is answered anyway (messages from other nodes may come a little later)",
                        JOIN_WAIT.as_millis()
                    );
                    break;
                }
            }
        }
        Joining {
            subscriptions: self,
            changes,
            room,
        }
    }

    /// Whether `room` should be subscribed: it has local members, or a
    /// JOIN is on its way. A room that is not is taken out of the active
    /// set here, under the lock a JOIN checks it under, before its
    /// UNSUBSCRIBE is sent: a JOIN never trusts a subscription that is
    /// going away.
    pub(crate) fn wanted(&self, room: &Arc<str>, has_members: bool) -> bool {
        let mut state = self.state.lock();
        let wanted = has_members || state.joining.contains_key(room);
        if !wanted {
            state.active.remove(room);
        }
        wanted
    }

    /// Rooms with a JOIN waiting or in progress.
    pub(crate) fn joining_rooms(&self) -> Vec<Arc<str>> {
        self.state.lock().joining.keys().cloned().collect()
    }

    /// Redis confirmed these subscriptions.
    pub(crate) fn confirm(&self, rooms: impl IntoIterator<Item = Arc<str>>) {
        self.state.lock().active.extend(rooms);
        self.confirmed.notify_all();
    }

    /// The connection was lost: nothing is subscribed any more.
    pub(crate) fn lost(&self) {
        self.state.lock().active.clear();
        self.confirmed.notify_all();
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        let mut state = self.subscriptions.state.lock();
        if let Some(count) = state.joining.get_mut(&self.room) {
            *count -= 1;
            if *count == 0 {
                state.joining.remove(&self.room);
            }
        }
        drop(state);
        // Whether the room keeps its subscription now depends on whether
        // the JOIN made a member.
        self.changes.add(&self.room);
    }
}
