//! Rooms whose local membership changed, for the subscriber and the
//! heartbeat threads to act on.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

/// Names of rooms whose local membership changed, for a thread to act on.
/// Bounded: past [`Changes::MAX`] names it forgets them and asks for a
/// look at every room instead.
#[derive(Debug, Default)]
pub(crate) struct Changes(Mutex<ChangeSet>);

#[derive(Debug, Default)]
struct ChangeSet {
    rooms: HashSet<Arc<str>>,
    everything: bool,
}

impl Changes {
    const MAX: usize = 65_536;

    pub(crate) fn add(&self, room: &Arc<str>) {
        let mut set = self.0.lock();
        if set.everything {
            return;
        }
        if set.rooms.len() >= Self::MAX {
            set.rooms = HashSet::new();
            set.everything = true;
            return;
        }
        set.rooms.insert(Arc::clone(room));
    }

    /// The rooms noted since the last call, or `None` for "look at every
    /// room".
    pub(crate) fn take(&self) -> Option<Vec<Arc<str>>> {
        let mut set = self.0.lock();
        if std::mem::take(&mut set.everything) {
            return None;
        }
        Some(set.rooms.drain().collect())
    }
}
