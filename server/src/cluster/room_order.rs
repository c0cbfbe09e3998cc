//! The `room` order mode (`--cluster-order room`, SPEC.md 14.2): one
//! order per room across every node, numbered by Redis.
//!
//! ```text
//! session ─ Outlink (bounded) ─ publisher thread ─ EVALSHA number ─┐  one script, atomic:
//!                                                                  │  HINCRBY relay:order:{room} seq n (new epoch with the counter)
//!                                                                  │  XADD relay:log:{room} MAXLEN ~ H  {first}-1 (when history is on)
//!                                                                  └─ PUBLISH relay:room:{room} "epoch first body"
//! subscriber thread (every node, the publisher's too) ─ Rooms::deliver_numbered ─ local members, ack to the publisher
//! ```
//!
//! Redis runs scripts one at a time, so the `seq`s it gives and the order
//! it publishes in are one order, and a node delivers a message only when
//! it comes back from Redis with its `seq`. A publisher's batches go to
//! the script in the order they were queued, on one connection, so its
//! messages keep their order too. A node that finds a jump in a room's
//! `seq`s (its subscription was lost, or the room was created here just
//! as a message went by) reads the missing batches from the room's stream
//! and delivers them first; what the stream no longer holds becomes a gap
//! notice for exactly those `seq`s.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use protocol::{Ack, RequestId};

use super::numbered::{self, Numbered};
use super::{Cluster, ClusterConfig, ClusterOrder, Dropped};
use crate::conn::outbound::{Batch, Outbound, Stalled};
use crate::logging::{CLUSTER, throttled};
use crate::rooms::{NumberedBatch, Seed, SeedBatch};
use crate::shared::Shared;

/// How long a room's counter, epoch and stream outlive its last message
/// in Redis. Past it the room starts a new epoch, like a room a single
/// server deleted when its last member left.
pub(crate) const ROOM_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long reading a room's position or stream may take before a JOIN
/// goes on without it (the room then starts an epoch of its own, replaced
/// by the cluster's with a gap notice), or a jump is reported as a gap.
/// Longer than presence's read: a JOIN that gives up here gives its
/// member a notice for nothing lost, so waiting is the better failure on
/// a busy machine.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The key that says which order mode the cluster's nodes run.
const MODE_KEY: &str = "relay:order-mode";

/// Numbers a batch: KEYS = order hash, stream, channel; ARGV = messages,
/// a fresh epoch (used when the room has none), the stream's length
/// (0: keep none), the keys' TTL in ms, the body, now in ms.
pub(super) static NUMBER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local n = tonumber(ARGV[1])
local last = redis.call('HINCRBY', KEYS[1], 'seq', n)
local first = string.format('%d', last - n + 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], first .. '-1', 't', ARGV[6], 'd', ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', KEYS[3], epoch .. ' ' .. first .. ' ' .. ARGV[5])
return first
",
    )
});

/// Reads a room's position and stream: KEYS = order hash, stream; ARGV =
/// the first `seq` wanted (0: the newest batches), the most bytes, a
/// fresh epoch and the TTL in ms, for a room that has no counter yet (so
/// that every node starts it in the same epoch, at 0). Returns `{epoch,
/// last seq, first, at_ms, body, first, at_ms, body, …}`, oldest first.
static READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local out = {epoch, redis.call('HGET', KEYS[1], 'seq')}
local from = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local entries = {}
if max == 0 then
elseif from > 0 then
  local start = string.format('%d', from) .. '-1'
  local holding = redis.call('XREVRANGE', KEYS[2], start, '-', 'COUNT', 1)
  if #holding > 0 then start = holding[1][1] end
  entries = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', 1000)
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1000)
end
local taken = {}
local bytes = 0
for i = 1, #entries do
  local fields = entries[i][2]
  local at, body = '0', ''
  for j = 1, #fields, 2 do
    if fields[j] == 't' then at = fields[j + 1] end
    if fields[j] == 'd' then body = fields[j + 1] end
  end
  bytes = bytes + #body
  if bytes > max then break end
  local id = entries[i][1]
  taken[#taken + 1] = {string.sub(id, 1, string.find(id, '-') - 1), at, body}
end
local n = #taken
for i = 1, n do
  local e = taken[i]
  if from == 0 then e = taken[n + 1 - i] end
  out[#out + 1] = e[1]
  out[#out + 1] = e[2]
  out[#out + 1] = e[3]
end
return out
",
    )
});

/// The hash holding a room's epoch and last `seq`.
pub(crate) fn order_key(room: &str) -> String {
    format!("relay:order:{room}")
}

/// The stream of a room's numbered batches.
pub(crate) fn log_key(room: &str) -> String {
    format!("relay:log:{room}")
}

/// Checks, before a node starts, that the cluster's other nodes run the
/// same order mode: two modes in one cluster would number one room two
/// ways. Without Redis now, the node starts and its publisher thread
/// checks once connected (and logs a mismatch).
pub(crate) fn check_mode(config: &ClusterConfig) -> Result<(), String> {
    let Ok(client) = redis::Client::open(config.url.as_str()) else {
        return Ok(());
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
        return Ok(());
    };
    let running: Option<String> = redis::cmd("GET")
        .arg(MODE_KEY)
        .query(&mut con)
        .unwrap_or_default();
    match running {
        Some(running) if running != config.order.as_str() => Err(format!(
            "--cluster-order {}: the cluster at {} runs --cluster-order {running}; give every node the same mode (or wait {} s after stopping them all to change it)",
            config.order,
            config.url,
            config.presence_ttl.as_secs_f64().ceil()
        )),
        _ => Ok(()),
    }
}

/// Says which mode this node runs, for nodes that start later, expiring
/// with its presence; logs a node of the other mode.
/// Also the publishing link's check that Redis is there while no batch
/// goes out: an error here takes the link down.
pub(super) fn renew_mode(con: &mut redis::Connection, cluster: &Cluster) -> redis::RedisResult<()> {
    let previous: Option<String> = redis::cmd("SET")
        .arg(MODE_KEY)
        .arg(cluster.config.order.as_str())
        .arg("PX")
        .arg(cluster.config.presence_ttl.as_millis() as u64)
        .arg("GET")
        .query(con)?;
    if let Some(previous) = previous
        && previous != cluster.config.order.as_str()
    {
        throttled!(
            CLUSTER,
            ERROR,
            "cluster: another node runs --cluster-order {previous}, this one {}; rooms are numbered two ways until every node runs the same mode",
            cluster.config.order
        );
    }
    Ok(())
}

/// Why a batch was not handed to Redis for its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The node cannot reach Redis now.
    LinkDown,
    /// The queue to Redis is full.
    QueueFull,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::LinkDown => f.write_str(
                "this node cannot reach the cluster's Redis, which numbers the room's messages; try again",
            ),
            Refused::QueueFull => f.write_str(
                "this node's queue to the cluster's Redis is full; try again",
            ),
        }
    }
}

/// What a publisher's batch is, for numbering.
#[derive(Debug)]
pub(crate) struct ToNumber<'a> {
    pub(crate) room: &'a Arc<str>,
    pub(crate) bytes: &'a [u8],
    pub(crate) frames: u32,
    pub(crate) splices: &'a [crate::rooms::Splice],
    pub(crate) publisher: &'a Arc<Outbound>,
    pub(crate) echo: bool,
    pub(crate) ack: Option<&'a RequestId>,
    pub(crate) now_ms: u64,
}

impl Cluster {
    /// Whether rooms are numbered by Redis (`--cluster-order room`).
    pub(crate) fn orders_rooms(&self) -> bool {
        self.config.order == ClusterOrder::Room
    }

    /// Queues a publisher's batch for Redis to number and publish; it
    /// reaches this node's members, the publisher's copy and its ack too,
    /// when it comes back. Never waits.
    pub(crate) fn number(&self, batch: &ToNumber<'_>) -> Result<(), Refused> {
        let ack = batch.ack.and_then(|id| serde_json::to_vec(id).ok());
        let publisher = numbered::Publisher {
            from: batch.publisher.id(),
            echo: batch.echo,
            ack: ack.as_deref(),
            at_ms: batch.now_ms,
        };
        let relayed = crate::rooms::Relayed {
            epoch: "-",
            first: 0,
            frames: batch.frames,
            splices: batch.splices,
            bytes: batch.bytes,
        };
        let body = numbered::encode(&self.node, &publisher, &relayed);
        self.outlink.offer_numbered(
            batch.room,
            body,
            batch.splices.len() as u32,
            Arc::clone(batch.publisher),
        )
    }

    /// Where `room` stands in Redis, with its newest batches kept when
    /// history is on: for a room a JOIN creates on this node. `None` when
    /// Redis cannot say now (the room then starts an epoch of its own,
    /// which the first message from Redis replaces, with a gap notice).
    pub(crate) fn seed(
        &self,
        room: &str,
        history: &crate::rooms::HistoryLimits,
        max_frame: u32,
    ) -> Option<Seed> {
        let max_bytes = if history.is_on() { history.bytes } else { 0 };
        let read = self.read_order(room, 0, max_bytes)?;
        let Some((epoch, last_seq, entries)) = read else {
            // No counter yet: the room's first message starts its epoch.
            return None;
        };
        let mut kept = Vec::new();
        for (first, at_ms, body) in &entries {
            let Ok(numbered) = numbered::decode_body(&epoch, *first, body, max_frame) else {
                self.counters.dropped(Dropped::Malformed);
                continue;
            };
            kept.push(SeedBatch {
                first: *first,
                at_ms: *at_ms,
                bytes: numbered.envelope.bytes.to_vec(),
                splices: numbered.envelope.splices.clone(),
            });
        }
        // Beyond the history's message limit, the oldest are not replayed.
        Some(Seed {
            epoch: Arc::from(epoch.as_str()),
            last_seq,
            kept,
        })
    }

    /// Runs the READ script: `None` if Redis did not answer, `Some(None)`
    /// if the room has no counter.
    #[allow(clippy::type_complexity)]
    fn read_order(
        &self,
        room: &str,
        from: u64,
        max_bytes: usize,
    ) -> Option<Option<(String, u64, Vec<(u64, u64, Vec<u8>)>)>> {
        // Not while Redis is known to be unreachable; but while the node
        // is still making its first connections, try (a JOIN that gave up
        // then would start its room in an epoch of its own).
        if self.counters.inlink_down.load(Ordering::Acquire) {
            return None;
        }
        let mut con = self
            .order_readers
            .take(&self.client)
            .map_err(|error| {
                throttled!(
                    CLUSTER,
                    WARN,
                    "cluster: room {room:?}'s order not read: {error}"
                );
            })
            .ok()?;
        let reply: redis::RedisResult<Vec<Vec<u8>>> = READ
            .key(order_key(room))
            .key(log_key(room))
            .arg(from)
            .arg(max_bytes)
            .arg(&*crate::rooms::new_epoch())
            .arg(ROOM_TTL.as_millis() as u64)
            .invoke(&mut con);
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                throttled!(
                    CLUSTER,
                    WARN,
                    "cluster: room {room:?}'s order not read: {error}"
                );
                return None;
            }
        };
        self.order_readers.give_back(con);
        let number =
            |bytes: &[u8]| -> Option<u64> { std::str::from_utf8(bytes).ok()?.parse().ok() };
        let mut fields = reply.into_iter();
        let Some(epoch) = fields.next() else {
            return Some(None);
        };
        let epoch = String::from_utf8(epoch).ok()?;
        let last = number(&fields.next()?)?;
        let mut entries = Vec::new();
        while let (Some(first), Some(at_ms), Some(body)) =
            (fields.next(), fields.next(), fields.next())
        {
            entries.push((number(&first)?, number(&at_ms).unwrap_or(0), body));
        }
        Some(Some((epoch, last, entries)))
    }
}

/// Delivers a batch Redis numbered (from the subscriber thread) to this
/// node's members of `room`: first what this node missed before it, read
/// from the room's stream, then the batch; acks its publisher if that is
/// a member here and asked.
pub(super) fn deliver(
    shared: &Shared,
    cluster: &Cluster,
    room: &str,
    payload: &[u8],
    touched: &mut Vec<Arc<Outbound>>,
) {
    let numbered = match numbered::decode_published(payload, shared.config.max_frame) {
        Ok(numbered) => numbered,
        Err(error) => {
            cluster.counters.dropped(Dropped::Malformed);
            throttled!(CLUSTER, WARN, "cluster: room {room:?}: {error}; dropped");
            return;
        }
    };
    let Some((epoch, last)) = shared.rooms.position(room) else {
        // Subscribed but not here: a JOIN is creating the room (or its
        // last member just left); kept for the JOIN to deliver.
        cluster.early.keep(room, payload);
        return;
    };
    if *epoch == *numbered.epoch && numbered.first > last + 1 {
        deliver_early(shared, cluster, room, touched);
        if let Some((_, last)) = shared.rooms.position(room)
            && numbered.first > last + 1
        {
            fill(
                shared,
                cluster,
                room,
                &epoch,
                last + 1,
                numbered.first,
                touched,
            );
        }
    }
    deliver_one(shared, cluster, room, &numbered, touched);
}

/// Delivers what came for `room` before it was here, in the order it
/// came; what the room has already is dropped by the delivery.
fn deliver_early(shared: &Shared, cluster: &Cluster, room: &str, touched: &mut Vec<Arc<Outbound>>) {
    for payload in cluster.early.take(room) {
        if let Ok(numbered) = numbered::decode_published(&payload, shared.config.max_frame) {
            deliver_one(shared, cluster, room, &numbered, touched);
        }
    }
}

/// Numbered batches that came for rooms that were not here yet: a JOIN
/// subscribes to its room before it reads the room's position and creates
/// it here, and what Redis publishes in between must reach the new member.
/// Bounded by [`EARLY_BYTES`]; kept [`EARLY_AGE`] at most.
#[derive(Default)]
pub(crate) struct Early(Mutex<EarlyBatches>);

#[derive(Default)]
struct EarlyBatches {
    batches: std::collections::VecDeque<(Arc<str>, std::time::Instant, Vec<u8>)>,
    bytes: usize,
}

/// The most bytes of early batches a node keeps, all rooms together; past
/// it the oldest go (and show as a gap notice, or are read from the
/// stream).
const EARLY_BYTES: usize = 4 << 20;

/// How long an early batch is kept: longer than a JOIN waits for its
/// subscription and its room's position together.
const EARLY_AGE: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Early {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} early batches", self.0.lock().batches.len())
    }
}

impl Early {
    fn keep(&self, room: &str, payload: &[u8]) {
        let now = std::time::Instant::now();
        let mut early = self.0.lock();
        early.bytes += payload.len();
        early
            .batches
            .push_back((Arc::from(room), now, payload.to_vec()));
        while let Some((_, at, oldest)) = early.batches.front() {
            if early.bytes <= EARLY_BYTES && now.duration_since(*at) <= EARLY_AGE {
                break;
            }
            early.bytes -= oldest.len();
            early.batches.pop_front();
        }
    }

    /// The batches kept for `room`, oldest first.
    fn take(&self, room: &str) -> Vec<Vec<u8>> {
        let mut early = self.0.lock();
        if !early.batches.iter().any(|(r, _, _)| &**r == room) {
            return Vec::new();
        }
        let mut taken = Vec::new();
        let mut kept = std::collections::VecDeque::with_capacity(early.batches.len());
        for (r, at, payload) in early.batches.drain(..) {
            if &*r == room {
                taken.push(payload);
            } else {
                kept.push_back((r, at, payload));
            }
        }
        early.bytes -= taken.iter().map(Vec::len).sum::<usize>();
        early.batches = kept;
        taken
    }
}

/// Catches a room just created here up with what Redis numbered between
/// reading its position and creating it: what the subscriber kept for it
/// (`Early`), then the stream. Nothing is reported as
/// a gap here: anything numbered since the subscription may still come
/// through it; what never comes shows as a jump at the next message.
pub(crate) fn catch_up(
    shared: &Shared,
    cluster: &Cluster,
    room: &str,
    touched: &mut Vec<Arc<Outbound>>,
) {
    deliver_early(shared, cluster, room, touched);
    let Some((epoch, last)) = shared.rooms.position(room) else {
        return;
    };
    fill(shared, cluster, room, &epoch, last + 1, u64::MAX, touched);
}

/// Each local room's last `seq` in Redis, read before a new subscription
/// is made: what was numbered up to there cannot come through it.
pub(super) fn positions_before_subscribing(
    shared: &Shared,
    cluster: &Cluster,
) -> Vec<(Arc<str>, u64)> {
    let mut positions = Vec::new();
    for (room, members, _) in shared.rooms.list() {
        if members == 0 {
            continue;
        }
        if let Some(Some((_, last, _))) = cluster.read_order(&room, 0, 0) {
            positions.push((room, last));
        }
    }
    positions
}

/// After a subscription was lost and made again: delivers what each room
/// missed up to the position read before subscribing, from the stream,
/// and reports what the stream no longer holds as a gap notice (at once,
/// rather than at the room's next message, which may be long in coming).
pub(super) fn recover(
    shared: &Shared,
    cluster: &Cluster,
    positions: &[(Arc<str>, u64)],
    touched: &mut Vec<Arc<Outbound>>,
) {
    for (room, before) in positions {
        let Some((epoch, last)) = shared.rooms.position(room) else {
            continue;
        };
        if last >= *before {
            continue;
        }
        fill(shared, cluster, room, &epoch, last + 1, before + 1, touched);
        let gap = empty_batch(&epoch, before + 1);
        deliver_batch(shared, cluster, room, &gap, None, touched);
    }
}

/// Delivers the batches of the room's stream from `from` on, before
/// `until`; a jump that is left is reported by the delivery after.
fn fill(
    shared: &Shared,
    cluster: &Cluster,
    room: &str,
    epoch: &str,
    from: u64,
    until: u64,
    touched: &mut Vec<Arc<Outbound>>,
) {
    if !shared.config.history.is_on() {
        // No stream is kept.
        return;
    }
    let max_bytes = shared.config.history.bytes.max(1 << 20);
    let Some(Some((stored_epoch, _, entries))) = cluster.read_order(room, from, max_bytes) else {
        return;
    };
    if stored_epoch != epoch {
        return;
    }
    for (first, _, body) in &entries {
        if *first >= until {
            break;
        }
        match numbered::decode_body(&stored_epoch, *first, body, shared.config.max_frame) {
            Ok(numbered) => deliver_one(shared, cluster, room, &numbered, touched),
            Err(_) => cluster.counters.dropped(Dropped::Malformed),
        }
    }
}

/// A batch of no message at `first`: delivering it reports the jump
/// before it as a gap notice, and delivers nothing.
fn empty_batch(epoch: &str, first: u64) -> NumberedBatch<'_> {
    NumberedBatch {
        epoch,
        first,
        splices: &[],
        bytes: &[],
        from: 0,
        echo: false,
        at_ms: 0,
    }
}

fn deliver_one(
    shared: &Shared,
    cluster: &Cluster,
    room: &str,
    numbered: &Numbered<'_>,
    touched: &mut Vec<Arc<Outbound>>,
) {
    let batch = NumberedBatch {
        epoch: numbered.epoch,
        first: numbered.first,
        splices: &numbered.envelope.splices,
        bytes: numbered.envelope.bytes,
        from: numbered.from,
        echo: numbered.echo,
        at_ms: numbered.at_ms,
    };
    let mine = numbered.envelope.node == &*cluster.node;
    deliver_batch(
        shared,
        cluster,
        room,
        &batch,
        numbered.ack.filter(|_| mine),
        touched,
    );
}

fn deliver_batch(
    shared: &Shared,
    cluster: &Cluster,
    room: &str,
    batch: &NumberedBatch<'_>,
    ack: Option<&[u8]>,
    touched: &mut Vec<Arc<Outbound>>,
) {
    let Some(delivery) = shared.rooms.deliver_numbered(
        room,
        batch,
        shared.config.stall_timeout,
        &shared.counters,
        touched,
    ) else {
        return;
    };
    let counters = &cluster.counters;
    if delivery.missed > 0 {
        counters.gaps.fetch_add(1, Ordering::Relaxed);
        counters
            .gap_messages
            .fetch_add(delivery.missed, Ordering::Relaxed);
        tracing::debug!(
            "cluster: room {room:?}: {} messages missed; members told with a gap notice",
            delivery.missed
        );
    }
    if delivery.delivered > 0 {
        counters.batches_in.fetch_add(1, Ordering::Relaxed);
        counters
            .messages_in
            .fetch_add(delivery.delivered, Ordering::Relaxed);
    }
    if let (Some(ack), Some(publisher), Some(epoch)) = (ack, &delivery.publisher, &delivery.epoch)
        && delivery.delivered > 0
        && let Ok(id) = serde_json::from_slice::<RequestId>(ack)
    {
        let ack = Ack {
            kind: "ack".into(),
            room: room.to_owned(),
            id,
            seq: delivery.last_seq,
            epoch: epoch.to_string(),
            members: delivery.queued as u64,
        };
        let mut bytes = Vec::new();
        if protocol::encode_json(&mut bytes, protocol::MessageType::Message, &ack).is_ok() {
            let mut stalled = Stalled::default();
            publisher.offer(
                &Arc::new(Batch::new(bytes, None)),
                touched,
                &mut stalled,
                &shared.counters,
            );
            stalled.settle(shared.config.stall_timeout, &shared.counters);
        }
    }
    for member in touched.drain(..) {
        member.flush_now(&shared.counters);
    }
}

/// Tells a publisher its batch may not have been numbered: the link to
/// Redis failed with it on the way (a non-fatal ERROR; the batch may
/// still have been published, if Redis ran the script before the link
/// broke).
pub(super) fn tell_lost(shared: &Shared, room: &str, publisher: &Arc<Outbound>, messages: u32) {
    let error = protocol::ErrorPayload::new(
        protocol::ErrorCode::RateLimited,
        format!(
            "{messages} MESSAGE{} to {room:?} may not have been relayed: the link to the cluster's Redis failed while they were on the way; try again (check the room's seq)",
            if messages == 1 { "" } else { "s" }
        ),
    )
    .retry_after(1000)
    .about(Some(room.to_owned()), None);
    let mut bytes = Vec::new();
    if protocol::encode_json(&mut bytes, protocol::MessageType::Error, &error).is_ok() {
        shared.counters.error_sent(protocol::ErrorCode::RateLimited);
        let mut touched = Vec::new();
        let mut stalled = Stalled::default();
        publisher.offer(
            &Arc::new(Batch::new(bytes, None)),
            &mut touched,
            &mut stalled,
            &shared.counters,
        );
        stalled.settle(shared.config.stall_timeout, &shared.counters);
        for member in touched {
            member.flush_now(&shared.counters);
        }
    }
}
