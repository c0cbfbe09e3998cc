//! What every connection thread shares: the settings, the rooms, the
//! counters (with the memory budget), and the registry of live connections
//! that shutdown and shedding walk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::budget::MemoryBudget;
use crate::config::{Config, default_memory_budget};
use crate::conn::peer::Peer;
use crate::counters::Counters;
use crate::per_address::PerAddress;
use crate::rooms::Rooms;
use crate::tls::Certificates;

#[derive(Debug)]
pub(crate) struct Shared {
    /// Validated settings.
    pub(crate) config: Config,
    pub(crate) rooms: Rooms,
    pub(crate) counters: Arc<Counters>,
    /// Live connections by id, for shutdown; the condvar signals removals.
    registry: Mutex<HashMap<u64, Arc<Peer>>>,
    registry_changed: Condvar,
    /// The open connections of each user, for direct messages to a user
    /// (SPEC.md 3.16): a look-up, not a walk over every connection.
    users: Mutex<HashMap<Box<str>, Vec<u64>>>,
    pub(crate) shutting_down: AtomicBool,
    /// Whether the listeners take new connections: false from the first
    /// moment of a stop or drain, before anything else happens, so that a
    /// load balancer's readiness check fails at once.
    accepting: AtomicBool,
    /// The stop in progress, and how its closes are spread.
    pub(crate) drain: crate::drain::Drain,
    /// Connections allowed: `--max-connections` capped by system limits.
    pub(crate) max_connections: usize,
    pub(crate) local_addr: SocketAddr,
    /// Live connections per IP address, for `--max-connections-per-ip`.
    pub(crate) per_address: Arc<PerAddress>,
    /// The most connections open at once since the heap was last trimmed.
    crowd: AtomicU64,
    /// The next connection's number, for both listeners.
    next_id: AtomicU64,
    /// The TLS listener's address and certificates, when there is one.
    pub(crate) tls: Option<TlsListening>,
    /// This node's part in a cluster (`--cluster`), when it has one.
    pub(crate) cluster: Option<crate::cluster::Cluster>,
    /// The WebSocket listener's address and rules, when there is one.
    pub(crate) ws: Option<WsListening>,
}

/// What the WebSocket listener needs beyond the plain one.
#[derive(Debug)]
pub(crate) struct WsListening {
    pub(crate) addr: SocketAddr,
    pub(crate) settings: Arc<crate::conn::ws::WsSettings>,
}

/// What the TLS listener needs beyond the plain one.
#[derive(Debug)]
pub(crate) struct TlsListening {
    pub(crate) addr: SocketAddr,
    pub(crate) certificates: Arc<Certificates>,
}

impl Shared {
    /// Settings `config` (validated); a memory budget left unset is
    /// derived from the machine's memory here.
    pub(crate) fn new(config: Config, max_connections: usize, local_addr: SocketAddr) -> Shared {
        let limit = config
            .budget
            .memory
            .unwrap_or_else(|| default_memory_budget(crate::sys::memory::physical_memory()));
        let memory = Arc::new(MemoryBudget::new(limit));
        let mut rooms = Rooms::new(config.budget, config.history, Arc::clone(&memory))
            .with_batching(config.member_batching);
        // Validated already, so only an unusable URL fails here, and that
        // too was checked: without it the node runs alone, and says so.
        let mut cluster = config.cluster.clone().and_then(|cluster| {
            crate::cluster::Cluster::new(cluster)
                .map_err(|error| tracing::error!("cluster: {error}; this node runs alone"))
                .ok()
        });
        let mut first_id = 1;
        if let Some(cluster) = &mut cluster {
            let outlink: Arc<dyn crate::rooms::RelayOut> = cluster.outlink.clone();
            rooms = rooms.with_outlink(outlink);
            first_id = cluster.first_connection_id();
        }
        Shared {
            cluster,
            rooms,
            counters: Arc::new(Counters::with_memory(memory)),
            per_address: Arc::new(PerAddress::new(config.max_connections_per_ip)),
            config,
            registry: Mutex::default(),
            users: Mutex::default(),
            registry_changed: Condvar::new(),
            shutting_down: AtomicBool::new(false),
            accepting: AtomicBool::new(true),
            drain: crate::drain::Drain::default(),
            max_connections,
            local_addr,
            crowd: AtomicU64::new(0),
            next_id: AtomicU64::new(first_id),
            tls: None,
            ws: None,
        }
    }

    /// The same, with a TLS listener.
    pub(crate) fn with_tls(self, tls: Option<TlsListening>) -> Shared {
        Shared { tls, ..self }
    }

    /// The same, with a WebSocket listener.
    pub(crate) fn with_ws(self, ws: Option<WsListening>) -> Shared {
        Shared { ws, ..self }
    }

    pub(crate) fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().map(|ws| ws.addr)
    }

    pub(crate) fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|tls| tls.addr)
    }

    pub(crate) fn tls_reloader(&self) -> Option<crate::tls::TlsReloader> {
        self.tls.as_ref().map(|tls| crate::tls::TlsReloader {
            certificates: Arc::clone(&tls.certificates),
        })
    }

    /// Whether the server takes new connections (`/readyz`): false once a
    /// stop or a lame-duck drain has begun.
    pub(crate) fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// The first step of every stop: readiness fails from here on.
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// A number for a new connection, unique across both listeners.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Notes that `live` connections are open now, after one was admitted.
    pub(crate) fn admitted(&self, live: u64) {
        self.crowd.fetch_max(live, Ordering::Relaxed);
    }

    /// Once at least half the crowd has gone since the last look, gives
    /// the memory they freed back to the system, so a server that grew for
    /// a crowd does not keep the crowd's footprint. Called by the
    /// housekeeping thread, once a second: a crowd leaves faster than that,
    /// and its threads free their memory only as they exit, after their
    /// connection is counted closed.
    pub(crate) fn trim_after_crowd(&self) {
        /// Below this crowd, what could be returned is not worth a trim.
        const SMALL_CROWD: u64 = 64;
        let live = self.counters.connections.load(Ordering::Relaxed);
        let crowd = self.crowd.load(Ordering::Relaxed);
        let left = crowd.saturating_sub(live);
        // Half of a sizable crowd gone, or the last of any crowd.
        if live > crowd / 2 || (left < SMALL_CROWD && !(live == 0 && left > 0)) {
            return;
        }
        // The next trim waits for half of those still here to leave.
        self.crowd.store(live, Ordering::Relaxed);
        crate::sys::memory::release_free_heap();
    }

    pub(crate) fn register(&self, peer: &Arc<Peer>) {
        self.registry.lock().insert(peer.id(), Arc::clone(peer));
    }

    pub(crate) fn unregister(&self, id: u64) {
        let peer = self.registry.lock().remove(&id);
        if let Some(cluster) = &self.cluster {
            let user = peer.as_ref().and_then(|peer| peer.outbound.user());
            cluster.directory.changed(id, user);
        }
        if let Some(user) = peer.as_ref().and_then(|peer| peer.outbound.user()) {
            let mut users = self.users.lock();
            if let Some(ids) = users.get_mut(user) {
                ids.retain(|&other| other != id);
                if ids.is_empty() {
                    users.remove(user);
                }
            }
        }
        self.registry_changed.notify_all();
    }

    /// Notes that connection `id` is `user`'s, once its HELLO settled it.
    pub(crate) fn add_user(&self, user: &str, id: u64) {
        self.users.lock().entry(user.into()).or_default().push(id);
    }

    /// Whether connection `id` is open (past its HELLO, not closing), and
    /// if so its user: for the cluster's directory.
    pub(crate) fn open_connection(&self, id: u64) -> Option<Option<Box<str>>> {
        let registry = self.registry.lock();
        let peer = registry.get(&id)?;
        let open = !peer.outbound.is_closing()
            && peer.outbound.state().get() != crate::conn::ConnState::Init;
        open.then(|| peer.outbound.user().map(Into::into))
    }

    /// How many connections of `user` are open now.
    pub(crate) fn user_connections(&self, user: &str) -> usize {
        self.users.lock().get(user).map_or(0, Vec::len)
    }

    /// Every open connection with its user, and every user with how many
    /// connections it has: the cluster's directory, whole.
    #[allow(clippy::type_complexity)]
    pub(crate) fn directory(&self) -> (Vec<(u64, Option<Box<str>>)>, Vec<(Box<str>, usize)>) {
        let connections = self
            .registry
            .lock()
            .values()
            .filter(|peer| {
                !peer.outbound.is_closing()
                    && peer.outbound.state().get() != crate::conn::ConnState::Init
            })
            .map(|peer| (peer.id(), peer.outbound.user().map(Into::into)))
            .collect();
        let users = self
            .users
            .lock()
            .iter()
            .map(|(user, ids)| (user.clone(), ids.len()))
            .collect();
        (connections, users)
    }

    /// Every live connection now.
    pub(crate) fn peers(&self) -> Vec<Arc<Peer>> {
        self.registry.lock().values().cloned().collect()
    }

    /// The open connections a direct MESSAGE to `to` reaches, but `from`
    /// (SPEC.md 3.16): one by its `connectionId`, or every one of a user.
    pub(crate) fn recipients(
        &self,
        to: &protocol::Recipient<'_>,
        from: u64,
    ) -> Vec<Arc<crate::conn::outbound::Outbound>> {
        let open = |peer: &Arc<Peer>| {
            peer.id() != from
                && !peer.outbound.is_closing()
                && peer.outbound.state().get() != crate::conn::ConnState::Init
        };
        let registry = self.registry.lock();
        match to {
            protocol::Recipient::Connection(id) => id
                .strip_prefix('c')
                .and_then(|n| n.parse::<u64>().ok())
                .and_then(|n| registry.get(&n))
                .filter(|peer| open(peer))
                .map(|peer| Arc::clone(&peer.outbound))
                .into_iter()
                .collect(),
            protocol::Recipient::User(user) => {
                let ids = self.users.lock().get(&**user).cloned().unwrap_or_default();
                ids.iter()
                    .filter_map(|id| registry.get(id))
                    .filter(|peer| open(peer))
                    .map(|peer| Arc::clone(&peer.outbound))
                    .collect()
            }
        }
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
