//! Relay server library. (API surface first; implementation in progress.)

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Server settings; `Config::default()` is what `cargo run -p server` uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub max_connections: usize,
    pub max_frame: u32,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub stall_timeout: Duration,
    pub max_rooms_per_connection: usize,
    pub queue_items: usize,
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
            stall_timeout: Duration::from_millis(250),
            max_rooms_per_connection: 1000,
            queue_items: 64,
            queue_bytes: 4 << 20,
        }
    }
}

/// A bound server, not yet running.
#[derive(Debug)]
pub struct Server {}

/// A server running on a background thread. Dropping it shuts it down.
#[derive(Debug)]
pub struct RunningServer {}

/// Stops a server from anywhere.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {}

/// Live counters.
#[derive(Debug, Default)]
pub struct Counters {}

impl Counters {
    pub fn snapshot(&self) -> protocol::Stats {
        todo!()
    }
}

impl Server {
    pub fn bind(_config: Config) -> io::Result<Server> {
        todo!()
    }
    pub fn local_addr(&self) -> SocketAddr {
        todo!()
    }
    pub fn counters(&self) -> Arc<Counters> {
        todo!()
    }
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        todo!()
    }
    /// Serves until shut down; returns once every connection is closed.
    pub fn run(self) -> io::Result<()> {
        todo!()
    }
    /// Runs the server on a background thread.
    pub fn spawn(self) -> io::Result<RunningServer> {
        todo!()
    }
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        todo!()
    }
    pub fn counters(&self) -> Arc<Counters> {
        todo!()
    }
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        todo!()
    }
    /// Stops the server and waits until it has finished.
    pub fn shutdown(self) {
        todo!()
    }
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        todo!()
    }
}
