//! This node's open connections and users, kept in Redis for the other
//! nodes' direct messages to find (see `direct`):
//!
//! ```text
//! relay:conns:{node}   hash: connectionId → "=user", or "" for a connection without one
//! relay:users:{node}   hash: user → how many of its connections are open on the node
//! ```
//!
//! The heartbeat thread writes what changed within ~50 ms of a HELLO or a
//! close (as it does presence), all of it again whenever its connection
//! to Redis is new or Redis lost its data, and keeps both from expiring
//! (as long as the roster); a node declared gone has both deleted (`roster`). The news of
//! what changed is bounded: past [`Pending::MAX`] connections it is
//! forgotten, and everything is written again.

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::shared::Shared;

/// Connections and users whose entry changed, for the heartbeat thread.
#[derive(Debug, Default)]
pub(crate) struct Pending(Mutex<Changed>);

#[derive(Debug, Default)]
struct Changed {
    connections: HashSet<u64>,
    users: HashSet<Box<str>>,
    everything: bool,
}

impl Pending {
    const MAX: usize = 65_536;

    /// Connection `id` (of `user`) was opened or closed.
    pub(crate) fn changed(&self, id: u64, user: Option<&str>) {
        let mut changed = self.0.lock();
        if changed.everything {
            return;
        }
        if changed.connections.len() >= Self::MAX {
            *changed = Changed {
                everything: true,
                ..Changed::default()
            };
            return;
        }
        changed.connections.insert(id);
        if let Some(user) = user {
            changed.users.insert(user.into());
        }
    }

    /// Asks for everything to be written again.
    pub(crate) fn everything(&self) {
        *self.0.lock() = Changed {
            everything: true,
            ..Changed::default()
        };
    }

    fn take(&self) -> Changed {
        std::mem::take(&mut *self.0.lock())
    }
}

fn conns_key(node: &str) -> String {
    format!("relay:conns:{node}")
}

fn users_key(node: &str) -> String {
    format!("relay:users:{node}")
}

fn value(user: Option<&str>) -> String {
    user.map_or_else(String::new, |user| format!("={user}"))
}

/// Writes what changed since the last call (everything, when asked).
pub(super) fn write(
    shared: &Shared,
    node: &str,
    con: &mut redis::Connection,
) -> redis::RedisResult<()> {
    let Some(cluster) = shared.cluster.as_ref() else {
        return Ok(());
    };
    let changed = cluster.directory.take();
    if changed.everything {
        return write_all(shared, node, con).inspect_err(|_| cluster.directory.everything());
    }
    if changed.connections.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for id in &changed.connections {
        let field = format!("c{id}");
        match shared.open_connection(*id) {
            Some(user) => pipe
                .cmd("HSET")
                .arg(conns_key(node))
                .arg(field)
                .arg(value(user.as_deref())),
            None => pipe.cmd("HDEL").arg(conns_key(node)).arg(field),
        };
        pipe.ignore();
    }
    for user in &changed.users {
        match shared.user_connections(user) {
            0 => pipe.cmd("HDEL").arg(users_key(node)).arg(&**user),
            n => pipe.cmd("HSET").arg(users_key(node)).arg(&**user).arg(n),
        };
        pipe.ignore();
    }
    pipe.query::<()>(con)
        .inspect_err(|_| cluster.directory.everything())
}

/// Writes the whole directory again, in place of what Redis had.
fn write_all(shared: &Shared, node: &str, con: &mut redis::Connection) -> redis::RedisResult<()> {
    let (connections, users) = shared.directory();
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("DEL")
        .arg(conns_key(node))
        .arg(users_key(node))
        .ignore();
    for chunk in connections.chunks(1024) {
        let mut hset = redis::cmd("HSET");
        hset.arg(conns_key(node));
        for (id, user) in chunk {
            hset.arg(format!("c{id}")).arg(value(user.as_deref()));
        }
        pipe.add_command(hset).ignore();
    }
    for chunk in users.chunks(1024) {
        let mut hset = redis::cmd("HSET");
        hset.arg(users_key(node));
        for (user, count) in chunk {
            hset.arg(&**user).arg(*count);
        }
        pipe.add_command(hset).ignore();
    }
    pipe.query(con)
}
