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
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::{ClusterCounters, Dropped, LinkState};
use crate::logging::{CLUSTER, throttled};
use crate::shared::Shared;

/// Batches published in one pipeline at most: one write, one read.
const PIPELINE: usize = 256;

/// A batch waiting for Redis.
#[derive(Debug)]
struct Item {
    channel: String,
    payload: Vec<u8>,
    messages: u32,
}

/// The sending side, held by the rooms.
#[derive(Debug)]
pub(crate) struct Outlink {
    node: Arc<str>,
    tx: Sender<Item>,
    rx: Receiver<Item>,
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

    /// This node's id, which every batch it sends carries.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Queues `payload` (an envelope) for `room`'s channel, without
    /// waiting; false if it was dropped (the link is down or the queue
    /// full). Called under the room's order lock, so a room's batches are
    /// queued in its order.
    pub(crate) fn offer(&self, room: &str, payload: Vec<u8>, messages: u32) -> bool {
        if !self.counters.outlink_up.load(Ordering::Acquire) {
            self.counters.dropped(Dropped::LinkDown);
            return false;
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
            return false;
        }
        let item = Item {
            channel: super::channel(room),
            payload,
            messages,
        };
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(size, Ordering::AcqRel);
                self.full(room);
                false
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

    /// Drops everything queued (the link went down), counting it.
    fn discard(&self) {
        while let Ok(item) = self.rx.try_recv() {
            self.queued.fetch_sub(item.payload.len(), Ordering::AcqRel);
            self.counters.dropped(Dropped::LinkDown);
        }
    }
}

/// The publisher thread: connects (with backoff), then publishes what is
/// queued, a pipeline at a time, until the server stops.
pub(crate) fn run(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let outlink = &cluster.outlink;
    let url = cluster.config.url.as_str();
    let mut link = LinkState::new(
        "publishing",
        &cluster.counters.outlink_up,
        &cluster.counters,
    );
    let mut attempt = 0;
    let stopping = || shared.shutting_down.load(Ordering::Acquire);
    while !stopping() {
        let connected = cluster
            .client
            .get_connection_with_timeout(Duration::from_secs(1))
            .and_then(|con| {
                con.set_write_timeout(Some(Duration::from_secs(2)))?;
                con.set_read_timeout(Some(Duration::from_secs(2)))?;
                Ok(con)
            });
        let mut con = match connected {
            Ok(con) => con,
            Err(error) => {
                link.down(url, &error);
                outlink.discard();
                std::thread::sleep(super::backoff(attempt));
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        link.up(url);
        let mut batch = Vec::with_capacity(PIPELINE);
        let error = loop {
            if stopping() {
                return;
            }
            match outlink.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(item) => batch.push(item),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < PIPELINE {
                match outlink.rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let mut pipe = redis::pipe();
            for item in &batch {
                pipe.cmd("PUBLISH")
                    .arg(&item.channel)
                    .arg(&item.payload)
                    .ignore();
            }
            let result: redis::RedisResult<()> = pipe.query(&mut con);
            let bytes: usize = batch.iter().map(|item| item.payload.len()).sum();
            outlink.queued.fetch_sub(bytes, Ordering::AcqRel);
            match result {
                Ok(()) => {
                    let messages: u64 = batch.iter().map(|item| u64::from(item.messages)).sum();
                    let counters = &cluster.counters;
                    counters
                        .batches_out
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    counters.messages_out.fetch_add(messages, Ordering::Relaxed);
                    batch.clear();
                }
                Err(error) => {
                    // Sent or not, they are not sent again: a receiver
                    // that missed them sees the jump in the counts.
                    for _ in batch.drain(..) {
                        cluster.counters.dropped(Dropped::LinkDown);
                    }
                    break error;
                }
            }
        };
        link.down(url, &error);
        outlink.discard();
    }
}
