//! A node's inbound link from Redis: one subscriber connection, subscribed
//! to the channel of every room that has members on this node, and the
//! thread that relays what comes in to them.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Dropped, LinkState, envelope};
use crate::logging::{CLUSTER, throttled};
use crate::shared::Shared;

/// The subscriber's read timeout, and so also how late a SUBSCRIBE may
/// follow a room's first local member.
const POLL: Duration = Duration::from_millis(20);

/// The subscriber thread: connects (with backoff), subscribes to every
/// room with local members, follows joins and leaves, and relays what
/// other nodes publish, until the server stops.
pub(crate) fn run(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let url = cluster.config.url.as_str();
    let mut link = LinkState::new(
        "subscribing",
        &cluster.counters.inlink_up,
        &cluster.counters,
    );
    let mut attempt = 0;
    let mut touched = Vec::new();
    let stopping = || shared.shutting_down.load(Ordering::Acquire);
    while !stopping() {
        let connected = cluster
            .client
            .get_connection_with_timeout(Duration::from_secs(1))
            .and_then(|con| {
                con.set_write_timeout(Some(Duration::from_secs(2)))?;
                Ok(con)
            });
        let mut con = match connected {
            Ok(con) => con,
            Err(error) => {
                cluster.counters.inlink_down.store(true, Ordering::Release);
                cluster.subscriptions.lost();
                link.down(url, &error);
                std::thread::sleep(super::backoff(attempt));
                attempt += 1;
                continue;
            }
        };
        let mut pubsub = con.as_pubsub();
        let mut subscribed: HashSet<Arc<str>> = HashSet::new();
        // What changed before this connection is covered by the full look.
        cluster.changes.take();
        let error = 'connected: {
            if let Err(error) = pubsub.set_read_timeout(Some(POLL)) {
                break 'connected error;
            }
            if let Err(error) = follow(&shared, &mut pubsub, &mut subscribed, None) {
                break 'connected error;
            }
            // Departures and this node's direct messages, whatever its rooms.
            let own = [
                super::roster::DEPARTED.to_owned(),
                super::direct::channel(&cluster.node),
            ];
            if let Err(error) = pubsub.subscribe(&own) {
                break 'connected error;
            }
            attempt = 0;
            cluster.counters.inlink_down.store(false, Ordering::Release);
            link.up(url);
            loop {
                if stopping() {
                    return;
                }
                if let Err(error) = follow(
                    &shared,
                    &mut pubsub,
                    &mut subscribed,
                    cluster.changes.take(),
                ) {
                    break 'connected error;
                }
                match pubsub.get_message() {
                    Ok(message) => relay(&shared, &message, &mut touched),
                    Err(error) if error.is_timeout() => {}
                    Err(error) => break 'connected error,
                }
            }
        };
        cluster.counters.inlink_down.store(true, Ordering::Release);
        cluster.subscriptions.lost();
        link.down(url, &error);
        std::thread::sleep(super::backoff(attempt));
        attempt += 1;
    }
}

/// Subscribes to the rooms in `changed` that have local members now and
/// unsubscribes from those that have none; `None` looks at every room.
fn follow(
    shared: &Shared,
    pubsub: &mut redis::PubSub<'_>,
    subscribed: &mut HashSet<Arc<str>>,
    changed: Option<Vec<Arc<str>>>,
) -> redis::RedisResult<()> {
    let changed = match changed {
        Some(changed) => changed,
        None => {
            let mut all: Vec<Arc<str>> = shared.rooms.list().into_iter().map(|r| r.0).collect();
            all.extend(subscribed.iter().cloned());
            if let Some(cluster) = &shared.cluster {
                all.extend(cluster.subscriptions.joining_rooms());
            }
            all.sort_unstable();
            all.dedup();
            all
        }
    };
    let Some(cluster) = shared.cluster.as_ref() else {
        return Ok(());
    };
    let mut join = Vec::new();
    let mut leave = Vec::new();
    for room in changed {
        let wanted = cluster
            .subscriptions
            .wanted(&room, shared.rooms.members(&room) > 0);
        if wanted && !subscribed.contains(&room) {
            join.push(room);
        } else if !wanted && subscribed.remove(&room) {
            leave.push(super::channel(&room));
        }
    }
    for chunk in join.chunks(1024) {
        let channels: Vec<String> = chunk.iter().map(|room| super::channel(room)).collect();
        pubsub.subscribe(channels)?;
        subscribed.extend(chunk.iter().cloned());
        cluster.subscriptions.confirm(chunk.iter().cloned());
    }
    for chunk in leave.chunks(1024) {
        pubsub.unsubscribe(chunk)?;
    }
    Ok(())
}

/// Relays one batch from another node to this node's members of its room.
fn relay(
    shared: &Shared,
    message: &redis::Msg,
    touched: &mut Vec<Arc<crate::conn::outbound::Outbound>>,
) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let Some(room) = message.get_channel_name().strip_prefix("relay:room:") else {
        if message.get_channel_name() == super::roster::DEPARTED {
            super::departed::receive(shared, message.get_payload_bytes());
        } else {
            super::direct::receive(shared, message.get_payload_bytes());
        }
        return;
    };
    let envelope = match envelope::decode(message.get_payload_bytes(), shared.config.max_frame) {
        Ok(envelope) => envelope,
        Err(error) => {
            cluster.counters.dropped(Dropped::Malformed);
            throttled!(CLUSTER, WARN, "cluster: room {room:?}: {error}; dropped");
            return;
        }
    };
    // Our own, back from Redis: local members had it already.
    if envelope.node == &*cluster.node {
        return;
    }
    let counters = &cluster.counters;
    counters.batches_in.fetch_add(1, Ordering::Relaxed);
    counters
        .messages_in
        .fetch_add(envelope.splices.len() as u64, Ordering::Relaxed);
    let missed = shared.rooms.relay_remote(
        room,
        envelope.node,
        &envelope.relayed(),
        shared.config.stall_timeout,
        &shared.counters,
        touched,
    );
    if let Some(missed) = missed.filter(|&missed| missed > 0) {
        counters.gaps.fetch_add(1, Ordering::Relaxed);
        counters.gap_messages.fetch_add(missed, Ordering::Relaxed);
        tracing::debug!(
            "cluster: room {room:?}: {missed} messages from node {:?} missed; members told with a gap notice",
            envelope.node
        );
    }
    for member in touched.drain(..) {
        member.flush_now(&shared.counters);
    }
}
