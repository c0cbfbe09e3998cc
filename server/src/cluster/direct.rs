//! Direct messages across nodes (SPEC.md 3.16, 14.1): the sender's node
//! finds which other nodes have the recipient, in the directory each node
//! keeps in Redis (`directory`), and sends the message, encoded as the
//! recipient will get it, to each of those nodes' channels through the
//! bounded outlink; each node delivers what comes on its channel to its
//! own connections.
//!
//! ```text
//! relay:direct:{node}   pub/sub channel: direct messages for that node's connections
//!
//! version u8 (1)
//! kind u8                0: to a user, 1: to a connection
//! name_len u8 | name     the user, or the connectionId
//! bytes                  one MESSAGE frame, JSON, `"type":"direct"`
//! ```
//!
//! The look-up is one round trip (a script), bounded like the presence
//! reads: [`super::presence`]'s 500 ms. A connection id names its node by
//! its block of numbers (`relay:block:{n}`), and the node's directory says
//! whether it is open and whose it is (for the sender's permissions); a
//! user is looked for in every registered node's directory (one `HEXISTS`
//! a node). What comes in is checked like socket input: one whole MESSAGE
//! frame, JSON, within `maxFrameSize`, a name within its bounds; anything
//! else is dropped and counted as malformed.

use std::fmt;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use protocol::{MAX_USER_ID_LEN, MessageType, Recipient};

use super::outlink::Item;
use super::{BLOCK, Cluster, Dropped, presence};
use crate::conn::outbound::{Batch, Stalled};
use crate::logging::{CLUSTER, throttled};
use crate::shared::Shared;

const VERSION: u8 = 1;

/// The channel a node's direct messages come on.
pub(crate) fn channel(node: &str) -> String {
    format!("relay:direct:{node}")
}

/// The node that owns a connection's block, and the connection's user
/// (`"=user"`, or `""`), if that node is alive and has it open. ARGV:
/// block key, connection id.
static CONNECTION: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local node = redis.call('GET', ARGV[1])
if not node or redis.call('EXISTS', 'relay:node:' .. node) == 0 then return false end
local user = redis.call('HGET', 'relay:conns:' .. node, ARGV[2])
if not user then return false end
return {node, user}
",
    )
});

/// The other live registered nodes with a connection of the user. ARGV:
/// this node, the user.
static USER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local found = {}
for _, node in ipairs(redis.call('SMEMBERS', 'relay:nodes')) do
  if node ~= ARGV[1] and redis.call('EXISTS', 'relay:node:' .. node) == 1
     and redis.call('HEXISTS', 'relay:users:' .. node, ARGV[2]) == 1 then
    found[#found + 1] = node
  end
end
return found
",
    )
});

/// The other nodes a direct message goes to.
#[derive(Debug, Default)]
pub(crate) struct Elsewhere {
    /// Each with the recipient's user as far as it is known there: for a
    /// connection, its user (`None`: it has none); for a user, that user.
    pub(crate) nodes: Vec<(String, Option<String>)>,
}

/// Redis could not be asked within the bound: the message reaches this
/// node's connections only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unasked(pub(crate) String);

impl fmt::Display for Unasked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the other nodes could not be asked ({})", self.0)
    }
}

impl Cluster {
    /// The other nodes `to` is open on, by the directory (at most 500 ms).
    /// A connection of this node's own block is this node's alone: no
    /// look-up.
    pub(crate) fn elsewhere(&self, to: &Recipient<'_>) -> Result<Elsewhere, Unasked> {
        match to {
            Recipient::Connection(id) => {
                let Some(number) = id.strip_prefix('c').and_then(|n| n.parse::<u64>().ok()) else {
                    return Ok(Elsewhere::default());
                };
                if number / BLOCK == self.block {
                    return Ok(Elsewhere::default());
                }
                let found: Option<(String, String)> = presence::ask(self, |con| {
                    CONNECTION
                        .arg(super::block_key(number / BLOCK))
                        .arg(format!("c{number}"))
                        .invoke(con)
                })
                .map_err(Unasked)?;
                let nodes = found
                    .filter(|(node, _)| *node != *self.node)
                    .map(|(node, user)| (node, user.strip_prefix('=').map(str::to_owned)))
                    .into_iter()
                    .collect();
                Ok(Elsewhere { nodes })
            }
            Recipient::User(user) => {
                let nodes: Vec<String> =
                    presence::ask(self, |con| USER.arg(&*self.node).arg(&**user).invoke(con))
                        .map_err(Unasked)?;
                let nodes = nodes
                    .into_iter()
                    .map(|node| (node, Some(user.to_string())))
                    .collect();
                Ok(Elsewhere { nodes })
            }
        }
    }

    /// Queues `frame` (the direct MESSAGE as recipients get it) for node
    /// `node`'s connections that `to` names; false if it was dropped (the
    /// link is down or the queue full), counted.
    pub(crate) fn send_direct(&self, node: &str, to: &Recipient<'_>, frame: &[u8]) -> bool {
        let (kind, name) = match to {
            Recipient::User(user) => (0u8, &**user),
            Recipient::Connection(id) => (1u8, &**id),
        };
        // Names are bounded (128-byte users, 21-byte ids) by the request.
        let name = &name.as_bytes()[..name.len().min(255)];
        let mut payload = Vec::with_capacity(3 + name.len() + frame.len());
        payload.extend_from_slice(&[VERSION, kind, name.len() as u8]);
        payload.extend_from_slice(name);
        payload.extend_from_slice(frame);
        let item = Item {
            channel: channel(node),
            payload,
            messages: 0,
            entry: None,
        };
        let sent = self.outlink.offer_item(node, item);
        let counter = if sent {
            &self.counters.directs_out
        } else {
            &self.counters.directs_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }
}

/// Why a direct message from another node was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Malformed {
    Truncated,
    Version(u8),
    Name,
    Frame,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Truncated => f.write_str("relayed direct message cut short"),
            Malformed::Version(v) => write!(
                f,
                "relayed direct message of layout version {v}, this node reads {VERSION}; run one release on every node"
            ),
            Malformed::Name => f.write_str("relayed direct message to a name no client could have"),
            Malformed::Frame => f.write_str("relayed direct message that is not one whole JSON MESSAGE frame within maxFrameSize"),
        }
    }
}

/// A direct message from another node, borrowed from its bytes.
#[derive(Debug, PartialEq, Eq)]
struct Incoming<'a> {
    to: Recipient<'a>,
    frame: &'a [u8],
}

fn decode(input: &[u8], max_frame: u32) -> Result<Incoming<'_>, Malformed> {
    let [version, kind, len, rest @ ..] = input else {
        return Err(Malformed::Truncated);
    };
    if *version != VERSION {
        return Err(Malformed::Version(*version));
    }
    let len = usize::from(*len);
    if rest.len() < len {
        return Err(Malformed::Truncated);
    }
    let (name, frame) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| Malformed::Name)?;
    let to = match kind {
        0 if name.len() <= MAX_USER_ID_LEN && !name.chars().any(char::is_control) => {
            Recipient::User(name.into())
        }
        1 if name.len() > 1
            && name.len() <= 21
            && name
                .strip_prefix('c')
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Recipient::Connection(name.into())
        }
        _ => return Err(Malformed::Name),
    };
    match protocol::parse_frame(frame, max_frame) {
        Ok(Some((parsed, used)))
            if used == frame.len()
                && parsed.kind == MessageType::Message
                && parsed.flags.is_json()
                && serde_json::from_slice::<protocol::Direct<'_>>(parsed.payload)
                    .is_ok_and(|direct| direct.kind == "direct") =>
        {
            Ok(Incoming { to, frame })
        }
        _ => Err(Malformed::Frame),
    }
}

/// Delivers a direct message from another node to this node's
/// connections it names; one that is no longer open is counted, not
/// answered (its sender was told it was sent).
pub(super) fn receive(shared: &Shared, payload: &[u8]) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let incoming = match decode(payload, shared.config.max_frame) {
        Ok(incoming) => incoming,
        Err(error) => {
            cluster.counters.dropped(Dropped::Malformed);
            throttled!(CLUSTER, WARN, "cluster: {error}; dropped");
            return;
        }
    };
    // No connection of this node sent it: none is left out.
    let recipients = shared.recipients(&incoming.to, 0);
    if recipients.is_empty() {
        cluster
            .counters
            .directs_undelivered
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    cluster.counters.directs_in.fetch_add(1, Ordering::Relaxed);
    let batch = Arc::new(Batch::new(incoming.frame.to_vec(), None));
    let mut touched = Vec::new();
    let mut stalled = Stalled::default();
    for recipient in &recipients {
        recipient.offer(&batch, &mut touched, &mut stalled, &shared.counters);
    }
    stalled.settle(shared.config.stall_timeout, &shared.counters);
    for member in touched.drain(..) {
        member.flush_now(&shared.counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        let content = serde_json::value::RawValue::from_string("\"psst\"".into()).unwrap();
        let direct = protocol::Direct {
            kind: "direct".into(),
            from: "c4".into(),
            user: None,
            content: &content,
            timestamp: 1,
        };
        let mut bytes = Vec::new();
        protocol::encode_json(&mut bytes, MessageType::Message, &direct).unwrap();
        bytes
    }

    fn wire(kind: u8, name: &str, frame: &[u8]) -> Vec<u8> {
        let mut out = vec![VERSION, kind, name.len() as u8];
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(frame);
        out
    }

    #[test]
    fn a_direct_message_comes_back_as_it_was_sent() {
        let frame = frame();
        let input = wire(0, "bob", &frame);
        let incoming = decode(&input, 1 << 20).unwrap();
        assert_eq!(incoming.to, Recipient::User("bob".into()));
        assert_eq!(incoming.frame, &frame[..]);
        let input = wire(1, "c81274661730000000001", &frame);
        let incoming = decode(&input, 1 << 20).unwrap();
        assert_eq!(
            incoming.to,
            Recipient::Connection("c81274661730000000001".into())
        );
    }

    #[test]
    fn every_cut_and_every_bad_part_is_refused() {
        let frame = frame();
        let input = wire(0, "bob", &frame);
        for cut in 0..input.len() {
            assert!(decode(&input[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        assert_eq!(
            decode(&wire(0, "bob", &two), 1 << 20),
            Err(Malformed::Frame)
        );
        assert_eq!(
            decode(&wire(1, "bob", &frame), 1 << 20),
            Err(Malformed::Name)
        );
        assert_eq!(
            decode(&wire(0, "b\u{7}", &frame), 1 << 20),
            Err(Malformed::Name)
        );
        assert_eq!(
            decode(&wire(2, "bob", &frame), 1 << 20),
            Err(Malformed::Name)
        );
        assert_eq!(decode(&wire(0, "bob", &frame), 16), Err(Malformed::Frame));
        let mut other = input.clone();
        other[0] = 7;
        assert_eq!(decode(&other, 1 << 20), Err(Malformed::Version(7)));
        // A MESSAGE that is not a direct message.
        let mut delivery = Vec::new();
        protocol::encode_json(
            &mut delivery,
            MessageType::Message,
            &serde_json::json!({"room":"r"}),
        )
        .unwrap();
        assert_eq!(
            decode(&wire(0, "bob", &delivery), 1 << 20),
            Err(Malformed::Frame)
        );
    }
}
