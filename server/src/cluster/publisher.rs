//! The publisher thread: one connection to Redis that publishes the
//! outlink's batches in the order they were queued, a pipeline at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::outlink::Item;
use super::room_order::{self, NUMBER};
use super::{Dropped, LinkState};
use crate::shared::Shared;

/// Batches published in one pipeline at most: one write, one read.
const PIPELINE: usize = 256;

/// A publishing connection, ready: the numbering script loaded on it in
/// room order mode (its SHA; Redis forgets scripts when it restarts, and
/// the connection with them), and this node's order mode written.
fn connect(cluster: &super::Cluster) -> redis::RedisResult<(redis::Connection, Option<String>)> {
    let mut con = cluster
        .client
        .get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_write_timeout(Some(Duration::from_secs(2)))?;
    con.set_read_timeout(Some(Duration::from_secs(2)))?;
    let sha = if cluster.orders_rooms() {
        Some(NUMBER.load(&mut con)?)
    } else {
        None
    };
    room_order::renew_mode(&mut con, cluster)?;
    Ok((con, sha))
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
        let (mut con, sha) = match connect(cluster) {
            Ok(connected) => connected,
            Err(error) => {
                link.down(url, &error);
                outlink.discard(&mut |item| lost(&shared, &item));
                std::thread::sleep(super::backoff(attempt));
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        let mut renewed = Instant::now();
        link.up(url);
        let mut batch = Vec::with_capacity(PIPELINE);
        let error = loop {
            if stopping() {
                return;
            }
            if renewed.elapsed() >= cluster.config.presence_ttl / 3 {
                if let Err(error) = room_order::renew_mode(&mut con, cluster) {
                    break error;
                }
                renewed = Instant::now();
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
            let ttl_ms = cluster.config.presence_ttl.as_millis() as u64;
            for item in &batch {
                match (&item.numbered, &sha) {
                    (Some((room, _)), Some(sha)) => {
                        pipe.cmd("EVALSHA")
                            .arg(sha)
                            .arg(3)
                            .arg(room_order::order_key(room))
                            .arg(room_order::log_key(room))
                            .arg(&item.channel)
                            .arg(item.messages)
                            .arg(&*crate::rooms::new_epoch())
                            .arg(shared.config.history.messages)
                            .arg(room_order::ROOM_TTL.as_millis() as u64)
                            .arg(&item.payload)
                            .arg(now_ms())
                            .ignore();
                    }
                    _ => item.add_to(&mut pipe, &cluster.node, ttl_ms),
                }
            }
            let result: redis::RedisResult<()> = pipe.query(&mut con);
            let bytes: usize = batch.iter().map(|item| item.payload.len()).sum();
            outlink.sent(bytes);
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
                    for item in batch.drain(..) {
                        cluster.counters.dropped(Dropped::LinkDown);
                        lost(&shared, &item);
                    }
                    break error;
                }
            }
        };
        link.down(url, &error);
        outlink.discard(&mut |item| lost(&shared, &item));
    }
}

/// Tells the publisher of a numbered batch that it may be lost.
fn lost(shared: &Shared, item: &Item) {
    if let Some((room, publisher)) = &item.numbered {
        room_order::tell_lost(shared, room, publisher, item.messages);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
