//! What a swarm is asked to do: how many clients, in which rooms, on how
//! many threads, publishing or only reading.

use std::net::SocketAddr;
use std::time::Duration;

use crate::peer::System;

/// What a swarm does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Which server's protocol the clients speak.
    pub system: System,
    pub addr: SocketAddr,
    /// A cluster's nodes (SPEC.md 14): the clients of each room are spread
    /// over them by their position in it. Empty: everyone on `addr`.
    pub nodes: Vec<SocketAddr>,
    pub clients: usize,
    pub threads: usize,
    /// Clients `r*size .. (r+1)*size` share room `r`.
    pub room_size: usize,
    /// Room `r` is named `{room_prefix}{r}`.
    pub room_prefix: String,
    /// Rooms each client joins: its own room `r`, then `{room_prefix}{r}.1`,
    /// `.2`, ... (shared with the same clients); only the first gets
    /// messages.
    pub rooms_per_client: usize,
    /// Publishing, when the clients publish (load); `None` for subscribers.
    pub publish: Option<PublishPlan>,
    /// Slots per subscriber for publishers' sequence numbers (positions in
    /// the content); defaults to `room_size`.
    pub positions: usize,
    /// Record delivery latency from the content's timestamp.
    pub record_latency: bool,
    /// Bytes of the read buffer of each thread.
    pub read_buffer: usize,
    /// Connections each thread has in progress at once.
    pub max_connecting: usize,
    /// A ready client that sent nothing for this long sends a HEARTBEAT.
    pub heartbeat_every: Duration,
    /// A subscriber that got this many deliveries counts as done.
    pub expect_per_client: Option<u64>,
    /// Connect with TLS (Relay's TLS port at `addr`).
    pub tls: Option<crate::tls::TlsClient>,
    /// Connect with WebSocket (Relay's WebSocket port at `addr`).
    pub ws: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct PublishPlan {
    /// Messages per second, per client.
    pub rate: f64,
    /// Bytes of content (a JSON string, quotes included).
    pub content_len: usize,
}

impl Plan {
    pub fn new(addr: SocketAddr, clients: usize, room_size: usize, prefix: &str) -> Plan {
        Plan {
            system: System::Relay,
            addr,
            nodes: Vec::new(),
            clients,
            threads: 2,
            room_size: room_size.max(1),
            room_prefix: prefix.to_owned(),
            rooms_per_client: 1,
            publish: None,
            positions: room_size.max(1),
            record_latency: false,
            read_buffer: 256 * 1024,
            max_connecting: 64,
            heartbeat_every: Duration::from_secs(20),
            expect_per_client: None,
            tls: None,
            ws: false,
        }
    }

    pub fn rooms(&self) -> usize {
        self.clients.div_ceil(self.room_size)
    }

    /// The name of the `j`th room the clients of room `room` join.
    pub fn room_name(&self, room: usize, j: usize) -> String {
        if j == 0 {
            format!("{}{room}", self.room_prefix)
        } else {
            format!("{}{room}.{j}", self.room_prefix)
        }
    }
}
