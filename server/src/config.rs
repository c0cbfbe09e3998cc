//! Server settings.

use std::net::SocketAddr;
use std::time::Duration;

/// Server settings; `Config::default()` is what `cargo run -p server` uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen. Port 0 picks a free port (see `Server::local_addr`).
    pub addr: SocketAddr,
    /// Connections beyond this get SERVER_FULL (capped further by system limits).
    pub max_connections: usize,
    /// Largest `length` field accepted, and sent.
    pub max_frame: u32,
    /// A connection with no complete frame for this long gets IDLE_TIMEOUT.
    pub idle_timeout: Duration,
    /// A write making no progress for this long abandons the connection.
    pub write_timeout: Duration,
    /// How long a publisher waits for a member whose queue is full before
    /// that member is cut off as a slow consumer.
    pub stall_timeout: Duration,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// Entries in a connection's outbound queue (each entry is one batch of
    /// frames); every entry costs 16 bytes up front.
    pub queue_items: usize,
    /// Bytes a connection's outbound queue may hold (at least two maximum
    /// frames).
    pub queue_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
            max_connections: 10_000,
            max_frame: protocol::DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_millis(500),
            max_rooms_per_connection: 1000,
            queue_items: 64,
            queue_bytes: 4 << 20,
        }
    }
}
