//! The publisher thread: one connection to Redis that publishes the
//! outlink's batches in the order they were queued, a pipeline at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use super::{Dropped, LinkState};
use crate::shared::Shared;

/// Batches published in one pipeline at most: one write, one read.
const PIPELINE: usize = 256;

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
            let ttl_ms = cluster.config.presence_ttl.as_millis() as u64;
            for item in &batch {
                item.add_to(&mut pipe, &cluster.node, ttl_ms);
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
