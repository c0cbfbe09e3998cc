//! Membership changes of big rooms, batched into `members` notices for the
//! connections that asked for them (SPEC.md 3.17).
//!
//! In a room of thousands, one `userJoined` per arrival is thousands of
//! frames a second to every member, most of it news nobody reads. A room
//! with more than [`MemberBatching::above`] members (or with a window
//! already open) records each change in its [`Window`] instead of sending
//! it to the members that asked for batching, and the flush thread sends
//! the window as one notice every [`MemberBatching::interval`]. Members
//! that did not ask still get one event per change, at once.
//!
//! A window is recorded and taken under the room's shard lock, the same
//! lock the JOIN answer's member list is read under, so a notice covers
//! exactly the changes after what its reader already knows: all of the
//! window for a member that was there when it opened, and what came after
//! its own join for one that joined while it was open.

use std::collections::HashMap;
use std::time::Duration;

use protocol::{MAX_NOTICE_CHANGES, MemberChange, MemberNoticeChange, MembersNotice};

/// When rooms batch membership changes, and how often they send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberBatching {
    /// Rooms with more members than this batch (`--member-events-batch-above`).
    pub above: usize,
    /// How often a room's batched changes are sent (`--member-events-interval-ms`).
    pub interval: Duration,
}

impl MemberBatching {
    /// The shortest interval: a notice a frame per change would be no batch.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
    /// The longest: a client waits this long to hear of a change.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
}

impl Default for MemberBatching {
    fn default() -> Self {
        MemberBatching {
            above: 100,
            interval: Duration::from_secs(1),
        }
    }
}

/// Where a member that joined while the window was open starts hearing of
/// it: after its own join.
#[derive(Debug, Clone, Copy)]
struct Start {
    listed: usize,
    joins: u64,
    leaves: u64,
}

/// The changes of one room since its last notice. Bounded: at most
/// [`MAX_NOTICE_CHANGES`] changes listed (the rest only counted), and one
/// [`Start`] per member that joined while it was open.
#[derive(Debug, Default)]
pub(crate) struct Window {
    changes: Vec<MemberNoticeChange>,
    joins: u64,
    leaves: u64,
    newcomers: HashMap<u64, Start>,
}

impl Window {
    /// Whether a change is waiting for the next flush.
    pub(crate) fn is_open(&self) -> bool {
        self.joins + self.leaves > 0
    }

    /// Records a change by connection `id`.
    pub(crate) fn record(&mut self, change: MemberChange, id: u64, user: Option<&str>) {
        match change {
            MemberChange::Joined => self.joins += 1,
            MemberChange::Left => {
                self.leaves += 1;
                self.newcomers.remove(&id);
            }
        }
        if self.changes.len() < MAX_NOTICE_CHANGES {
            self.changes.push(MemberNoticeChange {
                change,
                connection_id: format!("c{id}"),
                user: user.map(str::to_owned),
            });
        }
    }

    /// Notes that batched member `id` joined now: its JOIN answer reflects
    /// everything recorded so far.
    pub(crate) fn arrived(&mut self, id: u64) {
        let start = Start {
            listed: self.changes.len(),
            joins: self.joins,
            leaves: self.leaves,
        };
        self.newcomers.insert(id, start);
    }

    /// Empties the window, returning what it held.
    pub(crate) fn take(&mut self) -> Window {
        std::mem::take(self)
    }

    /// The notice for a member that was in the room before the window
    /// opened (`id` not a newcomer), or for a newcomer: what came after its
    /// join; `None` when that is nothing.
    pub(crate) fn notice(
        &self,
        room: &str,
        count: usize,
        now_ms: u64,
        id: Option<u64>,
    ) -> Option<MembersNotice> {
        let start = id
            .and_then(|id| self.newcomers.get(&id))
            .copied()
            .unwrap_or(Start {
                listed: 0,
                joins: 0,
                leaves: 0,
            });
        let joins = self.joins - start.joins;
        let leaves = self.leaves - start.leaves;
        if joins + leaves == 0 {
            return None;
        }
        Some(MembersNotice {
            kind: "members".to_owned(),
            room: room.to_owned(),
            count: count as u64,
            joins,
            leaves,
            changes: self.changes.get(start.listed..).unwrap_or(&[]).to_vec(),
            timestamp: now_ms,
        })
    }

    /// Whether `id` joined while this window was open.
    pub(crate) fn is_newcomer(&self, id: u64) -> bool {
        self.newcomers.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_hears_only_what_came_after_its_join() {
        let mut window = Window::default();
        window.record(MemberChange::Joined, 1, Some("a"));
        window.record(MemberChange::Joined, 2, None);
        window.arrived(2);
        window.record(MemberChange::Left, 1, Some("a"));
        let all = window.notice("r", 5, 0, None).unwrap();
        assert_eq!((all.joins, all.leaves, all.changes.len()), (2, 1, 3));
        assert!(all.complete());
        let late = window.notice("r", 5, 0, Some(2)).unwrap();
        assert_eq!((late.joins, late.leaves), (0, 1));
        assert_eq!(late.changes[0].connection_id, "c1");
        window.arrived(3);
        assert!(window.notice("r", 5, 0, Some(3)).is_none());
    }

    #[test]
    fn past_the_list_bound_changes_are_only_counted() {
        let mut window = Window::default();
        for id in 0..(MAX_NOTICE_CHANGES as u64 + 50) {
            window.record(MemberChange::Joined, id, None);
        }
        window.arrived(7);
        window.record(MemberChange::Left, 3, None);
        let all = window.notice("r", 1, 0, None).unwrap();
        assert_eq!(all.changes.len(), MAX_NOTICE_CHANGES);
        assert_eq!((all.joins, all.leaves), (150, 1));
        assert!(!all.complete());
        let late = window.notice("r", 1, 0, Some(7)).unwrap();
        assert_eq!((late.joins, late.leaves, late.changes.len()), (0, 1, 0));
        assert!(!late.complete());
    }
}
