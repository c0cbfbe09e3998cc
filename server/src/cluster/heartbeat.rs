//! The heartbeat thread: keeps this node's share of each room's members
//! in Redis (see `presence`), its claims, roster and directory alive,
//! tells the other nodes how much it relayed in each room, and declares
//! gone the nodes whose heartbeat expired (see `roster`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::outlink::Announce;
use super::presence::{Share, key, node_key};
use super::roster::{self, Standing};
use super::{Cluster, directory};
use crate::shared::Shared;

/// The presence thread: keeps this node's shares and its heartbeat, and
/// announces each room's relayed count (so a node that missed the last
/// batches of a quiet room learns of it), until the server stops; then
/// takes this node's shares out.
pub(super) fn run(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let ttl = cluster.config.presence_ttl;
    let beat = ttl / 3;
    let mut written: HashSet<Arc<str>> = HashSet::new();
    // Until a heartbeat got through: the first says an earlier process
    // under this id is gone.
    let mut first = true;
    let mut attempt = 0;
    let stopping = || shared.shutting_down.load(Ordering::Acquire);
    while !stopping() {
        let connected = cluster
            .client
            .get_connection_with_timeout(beat.min(Duration::from_secs(1)))
            .and_then(|con| {
                con.set_read_timeout(Some(beat))?;
                con.set_write_timeout(Some(beat))?;
                Ok(con)
            });
        let mut con = match connected {
            Ok(con) => con,
            Err(_) => {
                // The publishing link logs the loss; this one retries.
                std::thread::sleep(super::backoff(attempt).min(beat));
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        // Whatever was lost with the last connection is written again.
        cluster.directory.everything();
        let mut next_beat = Instant::now();
        let result: redis::RedisResult<()> = loop {
            if stopping() {
                // Gone by its own word: the other nodes' members hear its
                // members leave now, not a TTL later.
                if let Err(error) = roster::leave(&mut con, &cluster.node) {
                    tracing::warn!(
                        "cluster: cannot tell the other nodes this node is stopping ({error}); its members leave there once its heartbeat expires"
                    );
                }
                let mut pipe = redis::pipe();
                pipe.cmd("DEL").arg(node_key(&cluster.node)).ignore();
                pipe.cmd("DEL")
                    .arg(super::block_key(cluster.block))
                    .ignore();
                for room in &written {
                    pipe.cmd("HDEL").arg(key(room)).arg(&*cluster.node).ignore();
                }
                let _: redis::RedisResult<()> = pipe.query(&mut con);
                return;
            }
            let now = Instant::now();
            let result = if now >= next_beat {
                next_beat = now + beat;
                cluster.presence_changes.take();
                shared.rooms.announce_relayed(&*cluster.outlink);
                standing(&shared, cluster, &mut con, &mut first)
                    .and_then(|()| heartbeat(&shared, cluster, &mut con, &mut written))
            } else {
                match cluster.presence_changes.take() {
                    Some(rooms) if rooms.is_empty() => Ok(()),
                    Some(rooms) => write(&shared, cluster, &mut con, &rooms, &mut written),
                    None => heartbeat(&shared, cluster, &mut con, &mut written),
                }
            };
            let result = result.and_then(|()| directory::write(&shared, &cluster.node, &mut con));
            if let Err(error) = result {
                break Err(error);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Err(error) = result {
            tracing::debug!("cluster: presence link lost: {error}");
        }
    }
}

/// The node's heartbeat proper (see `roster`): where it stands, and what
/// that asks of it; then the scan for nodes whose heartbeat expired, and
/// the telling of their members' leaves.
fn standing(
    shared: &Shared,
    cluster: &Cluster,
    con: &mut redis::Connection,
    first: &mut bool,
) -> redis::RedisResult<()> {
    let ttl_ms = cluster.config.presence_ttl.as_millis() as u64;
    let standing = roster::beat(con, &cluster.node, ttl_ms, *first)?;
    // The first beat declares an earlier process under this id gone, and
    // so always finds this one back: nothing to warn about.
    let started = std::mem::take(first);
    match standing {
        Standing::Registered | Standing::Waiting => {}
        Standing::Back | Standing::Lost => {
            let publish = standing == Standing::Back;
            if publish && !started {
                tracing::warn!(
                    "cluster: the other nodes declared this node gone (its heartbeat did not reach Redis for --cluster-presence-ttl); its members are announced to them again"
                );
            }
            announce(shared, cluster, publish);
            cluster.directory.everything();
        }
    }
    let gone = roster::scan(con)?;
    if gone > 0 {
        cluster
            .counters
            .nodes_gone
            .fetch_add(gone, Ordering::Relaxed);
        tracing::warn!(
            "cluster: {gone} node(s) stopped their heartbeat for --cluster-presence-ttl and are declared gone; their members leave every room"
        );
    }
    roster::tell(con)
}

/// Every local member's `userJoined` into the roster, published to the
/// other nodes when `publish` (see `roster`).
fn announce(shared: &Shared, cluster: &Cluster, publish: bool) {
    let outlink = Announce {
        outlink: &cluster.outlink,
        publish,
    };
    let now_ms = super::departed::now_ms();
    shared
        .rooms
        .announce_members(&outlink, &mut |room, member| {
            let event = protocol::MemberEvent {
                change: protocol::MemberChange::Joined,
                room: room.to_owned(),
                connection_id: format!("c{}", member.id()),
                user: member.user().map(str::to_owned),
                timestamp: now_ms,
            };
            let mut bytes = Vec::new();
            protocol::encode_json(&mut bytes, protocol::MessageType::Message, &event).ok()?;
            Some(bytes)
        });
}

/// Every local room's share, the rooms this node no longer has taken
/// out, and the node's key renewed.
fn heartbeat(
    shared: &Shared,
    cluster: &Cluster,
    con: &mut redis::Connection,
    written: &mut HashSet<Arc<str>>,
) -> redis::RedisResult<()> {
    let mut rooms: Vec<Arc<str>> = shared.rooms.list().into_iter().map(|r| r.0).collect();
    rooms.extend(written.iter().cloned());
    rooms.sort_unstable();
    rooms.dedup();
    // The node's key first (renewed by `standing` too, but this runs on
    // its own when changes were too many to list): a share is only read
    // while it exists.
    redis::cmd("SET")
        .arg(node_key(&cluster.node))
        .arg(1)
        .arg("PX")
        .arg(cluster.config.presence_ttl.as_millis() as u64)
        .query::<()>(con)?;
    redis::cmd("SET")
        .arg(super::block_key(cluster.block))
        .arg(&*cluster.node)
        .arg("PX")
        .arg(cluster.config.presence_ttl.as_millis() as u64)
        .query::<()>(con)?;
    write(shared, cluster, con, &rooms, written)
}

/// This node's shares of `rooms` as they are now.
fn write(
    shared: &Shared,
    cluster: &Cluster,
    con: &mut redis::Connection,
    rooms: &[Arc<str>],
    written: &mut HashSet<Arc<str>>,
) -> redis::RedisResult<()> {
    let ttl_ms = cluster.config.presence_ttl.as_millis() as u64;
    for chunk in rooms.chunks(512) {
        let mut pipe = redis::pipe();
        for room in chunk {
            // The first page: what the other nodes list of this node's.
            let (members, page, _) = shared.rooms.who(room, 0, protocol::MAX_MEMBER_LIST);
            let list: Vec<_> = page.into_iter().map(|(_, member)| member).collect();
            if members == 0 {
                pipe.cmd("HDEL").arg(key(room)).arg(&*cluster.node).ignore();
                written.remove(room);
                continue;
            }
            let share = Share {
                members: members as u64,
                list,
            };
            let Ok(json) = serde_json::to_vec(&share) else {
                continue;
            };
            pipe.cmd("HSET")
                .arg(key(room))
                .arg(&*cluster.node)
                .arg(json)
                .ignore();
            pipe.cmd("PEXPIRE").arg(key(room)).arg(ttl_ms).ignore();
            written.insert(Arc::clone(room));
        }
        pipe.query::<()>(con)?;
    }
    Ok(())
}
