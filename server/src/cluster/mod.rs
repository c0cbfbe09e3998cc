//! Rooms shared across Relay nodes through Redis (SPEC.md 14).
//!
//! Each node serves its own members from its own rooms, exactly as a
//! single server does, and relays what is published in a room to the
//! other nodes through one Redis pub/sub channel per room:
//!
//! ```text
//! publisher ─ rooms::broadcast ─┬─ local members (no round trip)
//!                               └─ outlink queue (bounded) ─ publisher thread ─ PUBLISH relay:room:{name}
//! subscriber thread (SUBSCRIBE while the room has local members) ─ rooms::relay_remote ─ local members
//! presence thread ─ this node's members per room (HSET, heartbeat with a TTL) ─ JOIN answers and WHO elsewhere
//! ```
//!
//! - `envelope`: what a relayed batch looks like on the wire.
//! - `outlink`: the bounded queue and the publisher thread.
//! - `inlink`: the subscriber thread.
//! - `presence`: this node's share of each room's members, and reading
//!   the other nodes' shares.
//! - `room_order`, `numbered`: the `room` order mode (`--cluster-order
//!   room`), where Redis numbers each room's batches and every node
//!   delivers them from what Redis publishes.
//! - `roster`: the members each node told the others of, so that a node
//!   that goes has its members leave everywhere; `departed` tells them.
//! - `directory` and `direct`: which connections and users each node has,
//!   and direct messages to them across nodes.
//!
//! Order (the default `publisher` mode; `room_order` has the other): a
//! node numbers every room's deliveries itself (its own epoch per
//! room), remote messages included, so each node keeps SPEC.md 5.11 for
//! its members on its own. Per-publisher order holds because a node
//! queues a room's batches for Redis under that room's order lock and one
//! connection publishes them in that order. What a remote member misses (a
//! full queue, Redis down) shows as a jump in the origin's count of what it
//! relayed in the room, and becomes an exact gap notice (`rooms::Order`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

mod changes;
mod departed;
mod direct;
mod directory;
mod envelope;
mod heartbeat;
mod numbered;
mod outlink;
mod presence;
mod publisher;
pub(crate) mod room_order;
mod roster;
mod subscriber;
mod subscriptions;
pub(crate) mod threads;

pub(crate) use outlink::Outlink;

/// `--cluster` and the flags that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT` (or `redis://:PASSWORD@HOST:PORT/DB`).
    pub url: String,
    /// This node's name among the nodes (`--node-id`): 1 to 64 bytes of
    /// `A-Z a-z 0-9 . _ - :`. Two live nodes must not share one.
    pub node_id: String,
    /// How long a node's share of presence outlives its last heartbeat
    /// (`--cluster-presence-ttl`): a node that dies without a word leaves
    /// every room's member list within this long.
    pub presence_ttl: Duration,
    /// Bytes of relayed batches a node may have waiting for Redis
    /// (`--cluster-queue-bytes`); past it, batches are dropped and
    /// reported to remote members as gaps.
    pub queue_bytes: usize,
    /// Whose order a room's messages follow (`--cluster-order`, SPEC.md
    /// 14.2). Every node of a cluster must use the same.
    pub order: ClusterOrder,
}

/// `--cluster-order`: what a room's `seq` and `epoch` mean across nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClusterOrder {
    /// Each node numbers its rooms itself; a publisher's messages keep
    /// their order everywhere, and no publish waits for Redis.
    #[default]
    Publisher,
    /// One order per room across every node: Redis gives each batch its
    /// `seq`s (a script per publish, one round trip), and every node
    /// delivers in that order.
    Room,
}

impl ClusterOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterOrder::Publisher => "publisher",
            ClusterOrder::Room => "room",
        }
    }
}

impl fmt::Display for ClusterOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ClusterOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "publisher" => Ok(ClusterOrder::Publisher),
            "room" => Ok(ClusterOrder::Room),
            other => Err(format!(
                "{other:?} is not an order mode; use publisher or room"
            )),
        }
    }
}

impl ClusterConfig {
    /// The default `--cluster-presence-ttl`.
    pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(15);
    /// The shortest TTL accepted: a heartbeat every third of it must be
    /// able to reach Redis in time.
    pub const MIN_PRESENCE_TTL: Duration = Duration::from_millis(300);
    /// The default `--cluster-queue-bytes`: 16 MiB.
    pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;

    /// A configuration for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            node_id: default_node_id(),
            presence_ttl: Self::DEFAULT_PRESENCE_TTL,
            queue_bytes: Self::DEFAULT_QUEUE_BYTES,
            order: ClusterOrder::Publisher,
        }
    }

    /// What is wrong with these settings, naming the flag.
    pub(crate) fn problem(&self) -> Option<(&'static str, String)> {
        if let Err(error) = redis::Client::open(self.url.as_str()) {
            return Some((
                "cluster",
                format!("{:?}: {error}; give redis://HOST:PORT", self.url),
            ));
        }
        if !valid_node_id(&self.node_id) {
            return Some((
                "node-id",
                format!(
                    "{:?}: use 1 to 64 bytes of letters, digits, '.', '_', '-' and ':'",
                    self.node_id
                ),
            ));
        }
        if self.presence_ttl < Self::MIN_PRESENCE_TTL {
            return Some((
                "cluster-presence-ttl",
                format!(
                    "must be at least {} ms, so a heartbeat every third of it can reach Redis",
                    Self::MIN_PRESENCE_TTL.as_millis()
                ),
            ));
        }
        if self.queue_bytes < 64 * 1024 {
            return Some((
                "cluster-queue-bytes",
                "must be at least 64K, one relayed batch".to_owned(),
            ));
        }
        None
    }
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// The host's name and the process id: unique among the live nodes on
/// one network, and the same for the life of the process, which is what
/// presence needs (a restarted node is a new node; the old one's share
/// expires).
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .take(40)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The cluster's counters (`relay_cluster_*` in /metrics).
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    /// The publisher's connection to Redis is up.
    pub(crate) outlink_up: AtomicBool,
    /// The subscriber's connection to Redis is up.
    pub(crate) inlink_up: AtomicBool,
    /// The subscriber failed to reach Redis and has not since: a JOIN does
    /// not wait for a subscription then. False while it is still trying
    /// the first time, so a JOIN right after the node starts waits.
    pub(crate) inlink_down: AtomicBool,
    /// Batches published to Redis.
    pub(crate) batches_out: AtomicU64,
    /// Messages in them (each gets a seq on the other nodes).
    pub(crate) messages_out: AtomicU64,
    /// Batches received from other nodes and relayed to local members.
    pub(crate) batches_in: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    /// Batches not relayed: the queue was full, indexed like
    /// [`Dropped::NAMES`].
    dropped: [AtomicU64; Dropped::NAMES.len()],
    /// Connections to Redis made again after a loss (both links).
    pub(crate) reconnects: AtomicU64,
    /// Gap notices sent to local members for remote messages missed, and
    /// the messages they covered.
    pub(crate) gaps: AtomicU64,
    pub(crate) gap_messages: AtomicU64,
    /// Other nodes this node's scan declared gone (their heartbeat
    /// expired), and `userLeft` events this node's members got for the
    /// members of nodes that went.
    pub(crate) nodes_gone: AtomicU64,
    pub(crate) departed_left: AtomicU64,
    /// Direct messages queued for other nodes, dropped on the way out
    /// (queue full, link down), delivered here from other nodes, and
    /// received for connections no longer open here.
    pub(crate) directs_out: AtomicU64,
    pub(crate) directs_dropped: AtomicU64,
    pub(crate) directs_in: AtomicU64,
    pub(crate) directs_undelivered: AtomicU64,
}

/// Why a relayed batch was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// The outlink queue was at `--cluster-queue-bytes`.
    QueueFull = 0,
    /// Redis could not be reached.
    LinkDown = 1,
    /// A batch from another node did not parse.
    Malformed = 2,
}

impl Dropped {
    pub(crate) const NAMES: [&'static str; 3] = ["queue_full", "link_down", "malformed"];
}

impl ClusterCounters {
    pub(crate) fn dropped(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped_by(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Dropped::NAMES
            .iter()
            .zip(&self.dropped)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
    }
}

/// A node's part in the cluster: its name, its links and their counters.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) config: ClusterConfig,
    pub(crate) node: Arc<str>,
    pub(crate) client: redis::Client,
    pub(crate) counters: Arc<ClusterCounters>,
    pub(crate) outlink: Arc<Outlink>,
    /// Rooms whose local membership changed: the subscriber and the
    /// presence thread each take their own copy of the news.
    pub(crate) changes: changes::Changes,
    /// Which rooms are subscribed, for a JOIN to wait on.
    pub(crate) subscriptions: subscriptions::Subscriptions,
    pub(crate) presence_changes: changes::Changes,
    /// Connections to Redis for JOIN and WHO to read presence with.
    readers: presence::Readers,
    /// Connections to Redis for reading rooms' positions and streams
    /// (`--cluster-order room`).
    order_readers: presence::Readers,
    /// Numbered batches for rooms a JOIN is creating here.
    early: room_order::Early,
    /// The block of connection numbers this node claimed.
    pub(crate) block: u64,
    /// This node's connections whose entry in the directory changed.
    pub(crate) directory: directory::Pending,
}

/// What a cluster-wide answer adds to this node's own members.
#[derive(Debug, Default)]
pub(crate) struct Remote {
    pub(crate) members: u64,
    pub(crate) list: Vec<protocol::Member>,
}

impl Cluster {
    pub(crate) fn new(config: ClusterConfig) -> Result<Cluster, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|error| format!("--cluster {:?}: {error}", config.url))?;
        let counters = Arc::new(ClusterCounters::default());
        let node: Arc<str> = Arc::from(config.node_id.as_str());
        Ok(Cluster {
            outlink: Arc::new(Outlink::new(
                Arc::clone(&node),
                config.queue_bytes,
                Arc::clone(&counters),
            )),
            node,
            client,
            counters,
            changes: changes::Changes::default(),
            subscriptions: subscriptions::Subscriptions::default(),
            presence_changes: changes::Changes::default(),
            readers: presence::Readers::new("presence", presence::READ_TIMEOUT),
            order_readers: presence::Readers::new("order", room_order::READ_TIMEOUT),
            early: room_order::Early::default(),
            block: 0,
            directory: directory::Pending::default(),
            config,
        })
    }

    /// Notes that `room`'s local membership changed: the subscriber
    /// (un)subscribes and the presence thread rewrites this node's share.
    pub(crate) fn room_changed(&self, room: &Arc<str>) {
        self.changes.add(room);
        self.presence_changes.add(room);
    }

    /// Registers a JOIN of `room`, waiting until the room's channel is
    /// subscribed (see `subscriptions`); hold it until the join is done.
    pub(crate) fn joining(&self, room: &str) -> subscriptions::Joining<'_> {
        self.subscriptions
            .join(room, &self.changes, &self.counters.inlink_down)
    }

    /// The other nodes' members of `room`, for a JOIN answer or WHO; none
    /// when Redis cannot be asked now (the answer is then this node's).
    pub(crate) fn remote_members(&self, room: &str) -> Remote {
        presence::read(self, room)
    }

    /// Where this node's connection numbers start: a block of its own, so
    /// that a `connectionId` names one connection across the cluster.
    /// Blocks are drawn at random and claimed in Redis (`SET NX`, renewed
    /// with the presence heartbeat, so a claim outlives its node by the
    /// TTL at most); without Redis, the random block is used unclaimed.
    pub(crate) fn first_connection_id(&mut self) -> u64 {
        /// Blocks to draw from: as many as fit in a u64 of numbers.
        const BLOCKS: u64 = u64::MAX / BLOCK - 1;
        let ttl_ms = self.config.presence_ttl.as_millis() as u64;
        let mut block = random() % BLOCKS + 1;
        match self
            .client
            .get_connection_with_timeout(Duration::from_secs(2))
        {
            Ok(mut con) => {
                // A restarted node is a new node: what an earlier process
                // under this id told the others of leaves now.
                if let Err(error) = roster::leave(&mut con, &self.node) {
                    tracing::warn!(
                        "cluster: cannot tell the other nodes that an earlier node {:?} is gone ({error}); its members leave once its heartbeat expires",
                        &*self.node
                    );
                }
                for _ in 0..16 {
                    let claimed: redis::RedisResult<Option<String>> = redis::cmd("SET")
                        .arg(block_key(block))
                        .arg(&*self.node)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms)
                        .query(&mut con);
                    match claimed {
                        Ok(Some(_)) => break,
                        Ok(None) => block = random() % BLOCKS + 1,
                        Err(error) => {
                            tracing::warn!(
                                "cluster: cannot claim connection numbers in Redis at {} ({error}); using block {block} unclaimed",
                                self.config.url
                            );
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(
                "cluster: cannot reach Redis at {} to claim connection numbers ({error}); using block {block} unclaimed",
                self.config.url
            ),
        }
        self.block = block;
        block * BLOCK + 1
    }
}

/// Each node's block of connection numbers: ten billion connections
/// before a number could be another block's.
pub(crate) const BLOCK: u64 = 10_000_000_000;

/// A random number (the process's random hash keys, the clock).
fn random() -> u64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::hash::RandomState::new().hash_one((nanos, std::process::id()))
}

/// The key that claims a block of connection numbers.
pub(crate) fn block_key(block: u64) -> String {
    format!("relay:block:{block}")
}

/// The Redis channel a room's batches go through.
pub(crate) fn channel(room: &str) -> String {
    format!("relay:room:{room}")
}

/// The backoff between attempts to reach Redis again: from 100 ms,
/// doubling, at most 5 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)).min(5000))
}

/// One log line per loss and one per recovery, not one per message.
#[derive(Debug)]
pub(crate) struct LinkState<'a> {
    what: &'static str,
    flag: &'a AtomicBool,
    counters: &'a ClusterCounters,
    ever_up: bool,
    /// The first failure to connect was logged; the next ones are not.
    told_unreachable: bool,
}

impl<'a> LinkState<'a> {
    pub(crate) fn new(
        what: &'static str,
        flag: &'a AtomicBool,
        counters: &'a ClusterCounters,
    ) -> Self {
        LinkState {
            what,
            flag,
            counters,
            ever_up: false,
            told_unreachable: false,
        }
    }

    pub(crate) fn up(&mut self, url: &str) {
        if self.flag.swap(true, Ordering::AcqRel) {
            return;
        }
        self.told_unreachable = false;
        if self.ever_up {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cluster: {} link to Redis at {url} is back", self.what);
        } else {
            tracing::info!("cluster: {} link to Redis at {url} is up", self.what);
        }
        self.ever_up = true;
    }

    pub(crate) fn down(&mut self, url: &str, error: &dyn fmt::Display) {
        if self.flag.swap(false, Ordering::AcqRel) {
            tracing::error!(
                "cluster: {} link to Redis at {url} lost: {error}; local rooms go on, remote delivery stops until it is back (retrying)",
                self.what
            );
        } else if !self.told_unreachable {
            // Still trying: once, then quietly until it is back.
            tracing::error!(
                "cluster: cannot reach Redis at {url} for the {} link: {error}; local rooms go on, retrying",
                self.what
            );
        }
        self.told_unreachable = true;
    }
}
