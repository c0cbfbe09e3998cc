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

use super::room_order::Refused;
use super::{ClusterCounters, Dropped, envelope};
use crate::conn::outbound::Outbound;
use crate::logging::{CLUSTER, throttled};
use crate::rooms::{RelayOut, Relayed};

/// A batch waiting for Redis.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) channel: String,
    pub(super) payload: Vec<u8>,
    pub(super) messages: u32,
    /// In the `room` order mode, a publisher's batch for Redis to number
    /// (`room_order`): its room, and the publisher, told if it is lost.
    pub(super) numbered: Option<(Arc<str>, Arc<Outbound>)>,
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

    /// Queues `payload` (an envelope) for `room`'s channel, without
    /// waiting; false if it was dropped (the link is down or the queue
    /// full). Called under the room's order lock, so a room's batches are
    /// queued in its order.
    pub(crate) fn offer(&self, room: &str, payload: Vec<u8>, messages: u32) -> bool {
        self.push(room, payload, messages, None).is_ok()
    }

    /// Queues a publisher's batch for Redis to number (`room_order`), or
    /// says why not: the publisher then gets an ERROR, and nothing of the
    /// batch is delivered anywhere.
    pub(crate) fn offer_numbered(
        &self,
        room: &Arc<str>,
        payload: Vec<u8>,
        messages: u32,
        publisher: Arc<Outbound>,
    ) -> Result<(), Refused> {
        self.push(room, payload, messages, Some((Arc::clone(room), publisher)))
    }

    fn push(
        &self,
        room: &str,
        payload: Vec<u8>,
        messages: u32,
        numbered: Option<(Arc<str>, Arc<Outbound>)>,
    ) -> Result<(), Refused> {
        if !self.counters.outlink_up.load(Ordering::Acquire) {
            self.counters.dropped(Dropped::LinkDown);
            return Err(Refused::LinkDown);
        }
        let size = payload.len();
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued
                    .checked_add(size)
                    .filter(|&total| total <= self.max_bytes)
            })
            .is_ok();
        if !reserved {
            self.full(room);
            return Err(Refused::QueueFull);
        }
        let item = Item {
            channel: super::channel(room),
            payload,
            messages,
            numbered,
        };
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(size, Ordering::AcqRel);
                self.full(room);
                Err(Refused::QueueFull)
            }
        }
    }

    fn full(&self, room: &str) {
        self.counters.dropped(Dropped::QueueFull);
        throttled!(
            CLUSTER,
            WARN,
            "cluster: the queue to Redis holds {} bytes, its limit; a batch for room {room:?} is dropped and the other nodes' members get a gap notice (raise --cluster-queue-bytes, or Redis is too slow)",
            self.max_bytes
        );
    }

    /// Takes `bytes` off the count, once they left the queue.
    pub(super) fn sent(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Drops everything queued (the link went down), counting it; the
    /// numbered batches are handed to `lost`, for their publishers.
    pub(super) fn discard(&self, lost: &mut dyn FnMut(Item)) {
        while let Ok(item) = self.rx.try_recv() {
            self.queued.fetch_sub(item.payload.len(), Ordering::AcqRel);
            self.counters.dropped(Dropped::LinkDown);
            if item.numbered.is_some() {
                lost(item);
            }
        }
    }
}

impl RelayOut for Outlink {
    fn relay(&self, room: &str, batch: &Relayed<'_>) {
        let envelope = envelope::encode(&self.node, batch);
        self.offer(room, envelope, batch.splices.len() as u32);
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
