//! Cluster-wide presence: each node's share of each room's members, kept
//! in Redis so that JOIN answers and WHO on any node count every node.
//!
//! ```text
//! relay:presence:{room}   hash: node id → {"members":N,"list":[first 100 members]}
//! relay:node:{node}       "1", expiring --cluster-presence-ttl after the node's last heartbeat
//! ```
//!
//! A node rewrites its field of a room within ~50 ms of a local join or
//! leave, and all of them, with its own key, every third of the TTL. A
//! reader (one Lua script, so one round trip) takes the fields of nodes
//! whose key still exists and deletes the others: a node that died
//! without a word is out of every list once its key expires, within the
//! TTL. A room's hash expires too, a TTL after the last node wrote it.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use protocol::{MAX_MEMBER_LIST, Member};
use serde::{Deserialize, Serialize};

use super::{Cluster, Remote};
use crate::logging::{CLUSTER, throttled};
use crate::shared::Shared;

/// Reads a room's shares but the caller's own, dropping dead nodes'.
static READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then
    if redis.call('EXISTS', 'relay:node:' .. all[i]) == 1 then
      out[#out + 1] = all[i + 1]
    else
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
return out
",
    )
});

/// The most idle connections kept for reading presence; more are opened
/// when more connection threads read at once, and closed after.
const IDLE_READERS: usize = 4;

/// How long a JOIN or WHO waits for Redis at most before it answers with
/// this node's members alone.
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// Idle connections for reading presence.
#[derive(Default)]
pub(crate) struct Readers(Mutex<Vec<redis::Connection>>);

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} idle presence readers", self.0.lock().len())
    }
}

/// One node's share of a room.
#[derive(Debug, Serialize, Deserialize)]
struct Share {
    members: u64,
    list: Vec<Member>,
}

fn key(room: &str) -> String {
    format!("relay:presence:{room}")
}

fn node_key(node: &str) -> String {
    format!("relay:node:{node}")
}

/// The other nodes' members of `room`; nothing when Redis is down (known
/// from the publishing link) or does not answer within [`READ_TIMEOUT`].
pub(super) fn read(cluster: &Cluster, room: &str) -> Remote {
    if !cluster.counters.outlink_up.load(Ordering::Acquire) {
        return Remote::default();
    }
    let pooled = cluster.readers.0.lock().pop();
    let con = match pooled {
        Some(con) => Ok(con),
        None => cluster
            .client
            .get_connection_with_timeout(READ_TIMEOUT)
            .and_then(|con| {
                con.set_read_timeout(Some(READ_TIMEOUT))?;
                con.set_write_timeout(Some(READ_TIMEOUT))?;
                Ok(con)
            }),
    };
    let mut con = match con {
        Ok(con) => con,
        Err(error) => {
            throttled!(
                CLUSTER,
                WARN,
                "cluster: presence of {room:?} not read: {error}; answering with this node's members"
            );
            return Remote::default();
        }
    };
    let shares: Vec<Vec<u8>> = match READ.key(key(room)).arg(&*cluster.node).invoke(&mut con) {
        Ok(shares) => shares,
        Err(error) => {
            throttled!(
                CLUSTER,
                WARN,
                "cluster: presence of {room:?} not read: {error}; answering with this node's members"
            );
            return Remote::default();
        }
    };
    {
        let mut idle = cluster.readers.0.lock();
        if idle.len() < IDLE_READERS {
            idle.push(con);
        }
    }
    let mut remote = Remote::default();
    for share in shares {
        let Ok(share) = serde_json::from_slice::<Share>(&share) else {
            continue;
        };
        remote.members = remote.members.saturating_add(share.members);
        let room_left = MAX_MEMBER_LIST.saturating_sub(remote.list.len());
        remote.list.extend(share.list.into_iter().take(room_left));
    }
    remote
}

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
        let mut next_beat = Instant::now();
        let result: redis::RedisResult<()> = loop {
            if stopping() {
                let mut pipe = redis::pipe();
                pipe.cmd("DEL").arg(node_key(&cluster.node)).ignore();
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
                shared.rooms.announce_relayed(&cluster.outlink);
                heartbeat(&shared, cluster, &mut con, &mut written)
            } else {
                match cluster.presence_changes.take() {
                    Some(rooms) if rooms.is_empty() => Ok(()),
                    Some(rooms) => write(&shared, cluster, &mut con, &rooms, &mut written),
                    None => heartbeat(&shared, cluster, &mut con, &mut written),
                }
            };
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
    // The node's key first: a share is only read while it exists.
    redis::cmd("SET")
        .arg(node_key(&cluster.node))
        .arg(1)
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
            let (members, list) = shared.rooms.who(room);
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
