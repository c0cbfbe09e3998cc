//! Who each node has told the others is in its rooms, kept in Redis so
//! that when a node goes (dies, or stops) every other node can tell its
//! own members that those members left (SPEC.md 14.3).
//!
//! ```text
//! relay:nodes            set: the nodes registered now (joined the roster, not yet declared gone)
//! relay:roster:{node}    hash: "{connectionId} {room}" → "=user", or "" for none: the node's
//!                        members the other nodes were told of; expires 10 minutes after its last
//!                        beat (long past any node's scan, which may have a longer TTL than its own)
//! relay:mourn:{node}     the roster of a node declared gone, while its leaves are being told
//! relay:mourning         list: the nodes whose leaves are being told, oldest first
//! relay:gone:{node}      "1" for an hour after the node was declared gone
//! relay:departed         pub/sub channel: {"node":..,"room":..,"left":[[connectionId, "=user" or ""],...]}
//! ```
//!
//! The one rule that makes it exact: a membership event is published by
//! the same Redis script that writes it into the roster, and only if the
//! roster changed (a `userJoined` adds a field, a `userLeft` takes one
//! out); declaring a node gone moves its roster away in one step. So every
//! member the other nodes heard join is heard leave exactly once, either
//! by its own `userLeft` (published before the node was declared gone) or
//! by the node's departure (after): whatever a node that was declared gone
//! while still alive publishes later finds its old roster gone.
//!
//! A node is declared gone by any node's scan (every heartbeat) once its
//! `relay:node:{node}` key has expired, or by itself when it stops or
//! starts again under the same `--node-id`. The leaves are told in calls
//! of at most [`TELL_CHUNK`] memberships, by every node on its heartbeat
//! (and by the stopping node itself), so Redis is never held for long.
//!
//! A node that was declared gone while it was alive (it could not reach
//! Redis for a TTL) finds out at its next heartbeat: it registers again
//! once its old roster has been told, and announces its members as joins
//! (each published only if the roster lacks it, so nobody hears a join
//! twice). A node that finds itself unregistered with no sign of having
//! been declared gone (Redis lost its data) writes its roster again
//! without publishing anything: the other nodes' members were told
//! nothing either way.

use std::sync::LazyLock;

/// Memberships told per call of the telling script.
pub(super) const TELL_CHUNK: usize = 512;

/// Calls of the telling script per heartbeat at most: 32,768 memberships
/// a beat, the rest at the next.
pub(super) const TELL_CALLS: usize = 64;

/// The channel every node hears departures on.
pub(crate) const DEPARTED: &str = "relay:departed";

/// How long a node remembers that it was declared gone, for when it comes
/// back: an hour.
const GONE_MS: u64 = 3_600_000;

/// How long a node's roster and directory outlive its last heartbeat:
/// until another node, whatever its own TTL, has declared it gone and
/// told its leaves, and then only until no node is left to (ten minutes
/// more).
fn keep_ms(ttl_ms: u64) -> u64 {
    ttl_ms.saturating_mul(3).saturating_add(600_000)
}

/// Declares node `n` gone: out of the registry, its directory deleted,
/// its roster moved to where its leaves are told from (added to what is
/// still being told of an earlier departure, if any).
const MOURN: &str = r"
local function mourn(n)
  redis.call('SREM', 'relay:nodes', n)
  redis.call('DEL', 'relay:conns:' .. n, 'relay:users:' .. n)
  redis.call('SET', 'relay:gone:' .. n, 1, 'PX', ARGV_GONE_MS)
  local roster = 'relay:roster:' .. n
  local mourning = 'relay:mourn:' .. n
  if redis.call('EXISTS', roster) == 0 then return end
  if redis.call('EXISTS', mourning) == 0 then
    redis.call('RENAME', roster, mourning)
    redis.call('RPUSH', 'relay:mourning', n)
  else
    local all = redis.call('HGETALL', roster)
    for i = 1, #all, 2 do redis.call('HSET', mourning, all[i], all[i + 1]) end
    redis.call('DEL', roster)
  end
  redis.call('PEXPIRE', mourning, ARGV_GONE_MS)
end
";

fn with_mourn(body: &str) -> String {
    format!(
        "{}\n{body}",
        MOURN.replace("ARGV_GONE_MS", &GONE_MS.to_string())
    )
}

/// A membership event: written into the roster and published on the
/// room's channel, or neither. A join of a node declared gone and not yet
/// registered again is neither: its announcement will carry it. ARGV: node, op (`join`, `leave`, `sync`:
/// a join written without publishing), field, value, channel, payload,
/// roster expiry in ms.
static EVENT: LazyLock<String> = LazyLock::new(|| {
    r"
local roster = 'relay:roster:' .. ARGV[1]
if ARGV[2] == 'leave' then
  if redis.call('HDEL', roster, ARGV[3]) == 0 then return 0 end
else
  if redis.call('SISMEMBER', 'relay:nodes', ARGV[1]) == 0
     and redis.call('EXISTS', 'relay:gone:' .. ARGV[1]) == 1 then return 0 end
  if redis.call('HSET', roster, ARGV[3], ARGV[4]) == 0 then return 0 end
  redis.call('PEXPIRE', roster, ARGV[7])
  if ARGV[2] == 'sync' then return 0 end
end
return redis.call('PUBLISH', ARGV[5], ARGV[6])
"
    .to_owned()
});

/// A node's heartbeat: its key renewed, its roster and directory kept
/// from expiring, and where it stands. ARGV: node, TTL in ms, "1" on the
/// process's first beat (an earlier process under the same id is gone),
/// how long the roster and directory outlive the last beat.
static BEAT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&with_mourn(
        r"
local n, ttl = ARGV[1], tonumber(ARGV[2])
redis.call('SET', 'relay:node:' .. n, 1, 'PX', ttl)
if ARGV[3] == '1' then mourn(n) end
for _, key in ipairs({'relay:roster:', 'relay:conns:', 'relay:users:'}) do
  redis.call('PEXPIRE', key .. n, ARGV[4])
end
if redis.call('EXISTS', 'relay:mourn:' .. n) == 1 then return 'waiting' end
if redis.call('SADD', 'relay:nodes', n) == 0 then return 'registered' end
if redis.call('EXISTS', 'relay:gone:' .. n) == 1 then
  redis.call('DEL', 'relay:gone:' .. n)
  return 'back'
end
return 'lost'
",
    ))
});

/// Declares gone every registered node whose key expired; the count.
static SCAN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&with_mourn(
        r"
local gone = 0
for _, n in ipairs(redis.call('SMEMBERS', 'relay:nodes')) do
  if redis.call('EXISTS', 'relay:node:' .. n) == 0 then
    mourn(n)
    gone = gone + 1
  end
end
return gone
",
    ))
});

/// A node stopping: gone at once, by its own word. ARGV: node.
static LEAVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&with_mourn(
        r"
redis.call('DEL', 'relay:node:' .. ARGV[1])
mourn(ARGV[1])
return 1
",
    ))
});

/// Publishes the leaves of at most ARGV[1] memberships of the oldest
/// departure, one message per room; how many (0: nothing left to tell).
static TELL: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.replicate_commands()
local n = redis.call('LINDEX', 'relay:mourning', 0)
if not n then return 0 end
local key = 'relay:mourn:' .. n
local flat = redis.call('HRANDFIELD', key, tonumber(ARGV[1]), 'WITHVALUES')
local rooms, order = {}, {}
for i = 1, #flat, 2 do
  redis.call('HDEL', key, flat[i])
  local space = string.find(flat[i], ' ', 1, true)
  if space then
    local room = string.sub(flat[i], space + 1)
    if not rooms[room] then
      rooms[room] = {}
      order[#order + 1] = room
    end
    table.insert(rooms[room], {string.sub(flat[i], 1, space - 1), flat[i + 1]})
  end
end
for _, room in ipairs(order) do
  redis.call('PUBLISH', 'relay:departed', cjson.encode({node = n, room = room, left = rooms[room]}))
end
if redis.call('EXISTS', key) == 0 then redis.call('LREM', 'relay:mourning', 1, n) end
return math.max(#flat / 2, 1)
",
    )
});

/// What a membership event does to the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Join,
    Leave,
    /// A join written without being published: the roster rebuilt after
    /// Redis lost it.
    Sync,
}

/// A membership event's roster entry, carried with its envelope to the
/// publisher thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) change: Change,
    /// `"{connectionId} {room}"`: a connection id has no space.
    pub(crate) field: String,
    /// `"=user"`, or empty for a member without one.
    pub(crate) value: String,
}

impl Entry {
    pub(crate) fn new(change: Change, connection_id: &str, room: &str, user: Option<&str>) -> Self {
        Entry {
            change,
            field: format!("{connection_id} {room}"),
            value: user.map_or_else(String::new, |user| format!("={user}")),
        }
    }

    /// Adds the event script for this entry, publishing `payload` on
    /// `channel` when the roster changed, to `pipe`.
    pub(crate) fn add_to(
        &self,
        pipe: &mut redis::Pipeline,
        node: &str,
        ttl_ms: u64,
        channel: &str,
        payload: &[u8],
    ) {
        let op = match self.change {
            Change::Join => "join",
            Change::Leave => "leave",
            Change::Sync => "sync",
        };
        pipe.cmd("EVAL")
            .arg(EVENT.as_str())
            .arg(0)
            .arg(node)
            .arg(op)
            .arg(&self.field)
            .arg(&self.value)
            .arg(channel)
            .arg(payload)
            .arg(keep_ms(ttl_ms))
            .ignore();
    }
}

/// Where a node stands after its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// Registered, as before.
    Registered,
    /// Declared gone, and its old roster is still being told: not
    /// registered yet, so its joins are not published meanwhile.
    Waiting,
    /// Registered again after it was declared gone: it announces its
    /// members.
    Back,
    /// Registered with no sign of having been declared gone: Redis lost
    /// its data (or this is the first beat); it writes its roster again.
    Lost,
}

pub(super) fn beat(
    con: &mut redis::Connection,
    node: &str,
    ttl_ms: u64,
    first: bool,
) -> redis::RedisResult<Standing> {
    let standing: String = BEAT
        .arg(node)
        .arg(ttl_ms)
        .arg(if first { "1" } else { "0" })
        .arg(keep_ms(ttl_ms))
        .invoke(con)?;
    Ok(match standing.as_str() {
        "waiting" => Standing::Waiting,
        "back" => Standing::Back,
        "lost" => Standing::Lost,
        _ => Standing::Registered,
    })
}

/// Declares gone the nodes whose heartbeat expired; how many.
pub(super) fn scan(con: &mut redis::Connection) -> redis::RedisResult<u64> {
    SCAN.invoke(con)
}

/// Tells the departures waiting, at most [`TELL_CALLS`] calls of
/// [`TELL_CHUNK`] memberships.
pub(super) fn tell(con: &mut redis::Connection) -> redis::RedisResult<()> {
    for _ in 0..TELL_CALLS {
        let told: u64 = TELL.arg(TELL_CHUNK).invoke(con)?;
        if told == 0 {
            break;
        }
    }
    Ok(())
}

/// This node stops: declared gone by itself, and its members' leaves told
/// (as many as one heartbeat tells; the other nodes tell the rest).
pub(super) fn leave(con: &mut redis::Connection, node: &str) -> redis::RedisResult<()> {
    LEAVE.arg(node).invoke::<i64>(con)?;
    tell(con)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_splits_at_the_first_space_and_a_user_is_marked() {
        let entry = Entry::new(Change::Join, "c12", "a room", Some(""));
        assert_eq!(entry.field, "c12 a room");
        assert_eq!(entry.value, "=", "an empty userId is still a user");
        let entry = Entry::new(Change::Leave, "c12", "r", None);
        assert_eq!(entry.value, "");
    }
}
