//! What every connection thread shares: the settings, the rooms, the
//! counters, and the registry of live connections that shutdown walks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::conn::peer::Peer;
use crate::counters::Counters;
use crate::rooms::Rooms;

#[derive(Debug)]
pub(crate) struct Shared {
    /// Validated settings.
    pub(crate) config: Config,
    pub(crate) rooms: Rooms,
    pub(crate) counters: Arc<Counters>,
    /// Live connections by id, for shutdown; the condvar signals removals.
    registry: Mutex<HashMap<u64, Arc<Peer>>>,
    registry_changed: Condvar,
    pub(crate) shutting_down: AtomicBool,
    /// Connections allowed: `--max-connections` capped by system limits.
    pub(crate) max_connections: usize,
    pub(crate) local_addr: SocketAddr,
}

impl Shared {
    pub(crate) fn new(config: Config, max_connections: usize, local_addr: SocketAddr) -> Shared {
        Shared {
            config,
            rooms: Rooms::default(),
            counters: Arc::default(),
            registry: Mutex::default(),
            registry_changed: Condvar::new(),
            shutting_down: AtomicBool::new(false),
            max_connections,
            local_addr,
        }
    }

    pub(crate) fn register(&self, peer: &Arc<Peer>) {
        self.registry.lock().insert(peer.id(), Arc::clone(peer));
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.registry.lock().remove(&id);
        self.registry_changed.notify_all();
    }

    /// Every live connection now.
    pub(crate) fn peers(&self) -> Vec<Arc<Peer>> {
        self.registry.lock().values().cloned().collect()
    }

    /// Waits up to `limit` for every connection to close; true if they did.
    pub(crate) fn wait_for_no_peers(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut registry = self.registry.lock();
        while !registry.is_empty() {
            if self
                .registry_changed
                .wait_until(&mut registry, deadline)
                .timed_out()
            {
                return registry.is_empty();
            }
        }
        true
    }
}
