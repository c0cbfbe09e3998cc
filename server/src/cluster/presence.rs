//! Cluster-wide presence: each node's share of each room's members, kept
//! in Redis so that JOIN answers and WHO on any node count every node.
//!
//! ```text
//! relay:presence:{room}   hash: node id → {"members":N,"list":[first 100 members]}
//! relay:node:{node}       "1", expiring --cluster-presence-ttl after the node's last heartbeat
//! relay:block:{block}     the node that claimed that block of connection numbers, expiring the same way
//! ```
//!
//! A node rewrites its field of a room within ~50 ms of a local join or
//! leave, and all of them, with its own key, every third of the TTL. A
//! reader (one Lua script, so one round trip) takes the fields of nodes
//! whose key still exists and deletes the others: a node that died
//! without a word is out of every list once its key expires, within the
//! TTL. A room's hash expires too, a TTL after the last node wrote it.

use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use protocol::{MAX_MEMBER_LIST, Member};
use serde::{Deserialize, Serialize};

use super::{Cluster, Remote};
use crate::logging::{CLUSTER, throttled};

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

/// The most idle connections a pool of [`Readers`] keeps; more are
/// opened when more connection threads read at once, and closed after.
const IDLE_READERS: usize = 4;

/// How long a JOIN or WHO waits for Redis at most before it answers with
/// this node's members alone.
pub(super) const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// Idle connections for short reads on a connection thread (presence, a
/// room's position), each bounded by the pool's timeout.
pub(crate) struct Readers {
    idle: Mutex<Vec<redis::Connection>>,
    timeout: Duration,
    what: &'static str,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} idle {} readers", self.idle.lock().len(), self.what)
    }
}

impl Readers {
    pub(super) fn new(what: &'static str, timeout: Duration) -> Readers {
        Readers {
            idle: Mutex::new(Vec::new()),
            timeout,
            what,
        }
    }

    /// An idle connection, or a new one whose connect, reads and writes
    /// each take the pool's timeout at most.
    pub(super) fn take(&self, client: &redis::Client) -> redis::RedisResult<redis::Connection> {
        if let Some(con) = self.idle.lock().pop() {
            return Ok(con);
        }
        let con = client.get_connection_with_timeout(self.timeout)?;
        con.set_read_timeout(Some(self.timeout))?;
        con.set_write_timeout(Some(self.timeout))?;
        Ok(con)
    }

    /// Keeps `con` for the next read. Only a connection whose last
    /// question was answered comes back: a failed one may be mid-answer.
    pub(super) fn give_back(&self, con: redis::Connection) {
        let mut idle = self.idle.lock();
        if idle.len() < IDLE_READERS {
            idle.push(con);
        }
    }
}

/// Asks Redis `question` on one of the idle reading connections (or a
/// new one), waiting [`READ_TIMEOUT`] at most; an error when Redis is down
/// (known from the publishing link), slow or wrong.
pub(super) fn ask<T>(
    cluster: &Cluster,
    question: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
) -> Result<T, String> {
    if !cluster.counters.outlink_up.load(Ordering::Acquire) {
        return Err("Redis is unreachable".to_owned());
    }
    let mut con = cluster
        .readers
        .take(&cluster.client)
        .map_err(|error| error.to_string())?;
    let answer = question(&mut con).map_err(|error| error.to_string())?;
    cluster.readers.give_back(con);
    Ok(answer)
}

/// One node's share of a room.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Share {
    pub(super) members: u64,
    pub(super) list: Vec<Member>,
}

pub(super) fn key(room: &str) -> String {
    format!("relay:presence:{room}")
}

pub(super) fn node_key(node: &str) -> String {
    format!("relay:node:{node}")
}

/// The other nodes' members of `room`; nothing when Redis is down (known
/// from the publishing link) or does not answer within [`READ_TIMEOUT`].
pub(super) fn read(cluster: &Cluster, room: &str) -> Remote {
    let shares = ask(cluster, |con| {
        READ.key(key(room))
            .arg(&*cluster.node)
            .invoke::<Vec<Vec<u8>>>(con)
    });
    let shares = match shares {
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
