//! A node's outbound link to Redis: a queue bounded in bytes, and the one
//! thread that publishes what is in it, in order.
//!
//! The queue is bounded like a member's queue, and for the same reason: a
//! publisher must never wait for Redis, and a node must never buffer
//! without bound for it. Unlike a slow member, though, nobody is cut when
//! it is full: the batch is dropped, counted and logged (throttled), and
//! the other nodes' members get an exact gap notice in its place, because
//! the batch's messages were counted by the origin all the same (see
//! `envelope`). While Redis is unreachable, nothing is queued at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::roster::{Change, Entry};
use super::{ClusterCounters, Dropped, envelope};
use crate::logging::{CLUSTER, throttled};
use crate::rooms::{RelayOut, Relayed};

/// A batch waiting for Redis.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) channel: String,
    pub(super) payload: Vec<u8>,
    pub(super) messages: u32,
    /// For a membership event: its roster entry, written by the script
    /// that publishes it (see `roster`).
    pub(super) entry: Option<Entry>,
}

impl Item {
    /// Adds what publishes this item to `pipe`.
    pub(super) fn add_to(&self, pipe: &mut redis::Pipeline, node: &str, ttl_ms: u64) {
        match &self.entry {
            Some(entry) => entry.add_to(pipe, node, ttl_ms, &self.channel, &self.payload),
            None => {
                pipe.cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(&self.payload)
                    .ignore();
            }
        }
    }
}

/// The sending side, held by the rooms.
#[derive(Debug)]
pub(crate) struct Outlink {
    node: Arc<str>,
    tx: Sender<Item>,
    pub(super) rx: Receiver<Item>,
    /// Bytes queued now; at most `max_bytes`.
    queued: AtomicUsize,
    max_bytes: usize,
    counters: Arc<ClusterCounters>,
}

impl Outlink {
    pub(crate) fn new(node: Arc<str>, max_bytes: usize, counters: Arc<ClusterCounters>) -> Outlink {
        // Entries are bounded by bytes; this only caps the channel's own
        // bookkeeping (a batch is at least a frame's header).
        let (tx, rx) = crossbeam_channel::bounded(max_bytes / 16);
        Outlink {
            node,
            tx,
            rx,
            queued: AtomicUsize::new(0),
            max_bytes,
            counters,
        }
    }

    /// Bytes queued now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues `payload` (an envelope) for `room`'s channel, as
    /// [`Outlink::offer_item`] does.
    #[cfg(test)]
    pub(crate) fn offer(&self, room: &str, payload: Vec<u8>, messages: u32) -> bool {
        self.offer_item(
            room,
            Item {
                channel: super::channel(room),
                payload,
                messages,
                entry: None,
            },
        )
    }

    /// Queues `item` without waiting; false if it was dropped (the link
    /// is down or the queue full). A room's batches are offered under its
    /// order lock, so they are queued in its order. `about` names the room
    /// (or, for a direct message, the node) in the log line of a full
    /// queue.
    pub(super) fn offer_item(&self, about: &str, item: Item) -> bool {
        if !self.counters.outlink_up.load(Ordering::Acquire) {
            self.counters.dropped(Dropped::LinkDown);
            return false;
        }
        let size = item.payload.len();
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued
                    .checked_add(size)
                    .filter(|&total| total <= self.max_bytes)
            })
            .is_ok();
        if !reserved {
            self.full(about);
            return false;
        }
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(size, Ordering::AcqRel);
                self.full(about);
                false
            }
        }
    }

    fn full(&self, about: &str) {
        self.counters.dropped(Dropped::QueueFull);
        throttled!(
            CLUSTER,
            WARN,
            "cluster: the queue to Redis holds {} bytes, its limit; a batch for {about:?} is dropped (a room's members elsewhere get a gap notice; a direct message is lost) (raise --cluster-queue-bytes, or Redis is too slow)",
            self.max_bytes
        );
    }

    /// Takes `bytes` off the count, once they left the queue.
    pub(super) fn sent(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Drops everything queued (the link went down), counting it.
    pub(super) fn discard(&self) {
        while let Ok(item) = self.rx.try_recv() {
            self.queued.fetch_sub(item.payload.len(), Ordering::AcqRel);
            self.counters.dropped(Dropped::LinkDown);
        }
    }
}

impl Outlink {
    /// Queues `batch` of `room`, and with a membership event the roster
    /// entry `sync` asks for (see `roster`): the event's own (a join or a
    /// leave), or a join written without being published.
    pub(super) fn relay_with(&self, room: &str, batch: &Relayed<'_>, sync: bool) {
        let entry = member_event(batch).map(|event| {
            let change = match event.change {
                _ if sync => Change::Sync,
                protocol::MemberChange::Joined => Change::Join,
                protocol::MemberChange::Left => Change::Leave,
            };
            Entry::new(change, &event.connection_id, room, event.user.as_deref())
        });
        let item = Item {
            channel: super::channel(room),
            payload: envelope::encode(&self.node, batch),
            messages: batch.splices.len() as u32,
            entry,
        };
        self.offer_item(room, item);
    }
}

/// The membership event a batch carries, if it is one: a batch of one
/// frame and no message is a `userJoined` or `userLeft` (`rooms`), which
/// this node encoded itself.
fn member_event(batch: &Relayed<'_>) -> Option<protocol::MemberEvent> {
    if !batch.splices.is_empty() || batch.frames != 1 {
        return None;
    }
    let (frame, _) = protocol::parse_frame(batch.bytes, u32::MAX).ok()??;
    serde_json::from_slice(frame.payload).ok()
}

impl RelayOut for Outlink {
    fn relay(&self, room: &str, batch: &Relayed<'_>) {
        self.relay_with(room, batch, false);
    }
}

/// The outlink as the rooms use it to announce this node's members again
/// (see `roster`): each join written into the roster, and published only
/// when `publish`.
#[derive(Debug)]
pub(super) struct Announce<'a> {
    pub(super) outlink: &'a Outlink,
    pub(super) publish: bool,
}

impl RelayOut for Announce<'_> {
    fn relay(&self, room: &str, batch: &Relayed<'_>) {
        self.outlink.relay_with(room, batch, !self.publish);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlink(max_bytes: usize) -> Outlink {
        let counters = Arc::new(ClusterCounters::default());
        counters.outlink_up.store(true, Ordering::Release);
        Outlink::new(Arc::from("n1"), max_bytes, counters)
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_growing_or_waiting() {
        let outlink = outlink(64 * 1024);
        let batch = vec![0u8; 20 * 1024];
        for _ in 0..3 {
            assert!(outlink.offer("r", batch.clone(), 1));
        }
        assert_eq!(outlink.queued(), 60 * 1024);
        // The fourth would pass the bound: dropped at once, counted.
        assert!(!outlink.offer("r", batch.clone(), 1));
        assert_eq!(outlink.queued(), 60 * 1024);
        let dropped: Vec<_> = outlink.counters.dropped_by().collect();
        assert!(dropped.contains(&("queue_full", 1)), "{dropped:?}");
        // What the publisher thread takes makes room again.
        let item = outlink.rx.try_recv().unwrap();
        outlink.sent(item.payload.len());
        assert!(outlink.offer("r", batch, 1));
    }

    #[test]
    fn nothing_is_queued_while_the_link_is_down() {
        let outlink = outlink(64 * 1024);
        outlink.counters.outlink_up.store(false, Ordering::Release);
        assert!(!outlink.offer("r", vec![1, 2, 3], 1));
        assert_eq!(outlink.queued(), 0);
        assert!(outlink.rx.try_recv().is_err());
        let dropped: Vec<_> = outlink.counters.dropped_by().collect();
        assert!(dropped.contains(&("link_down", 1)), "{dropped:?}");
    }
}
