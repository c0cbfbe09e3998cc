//! The Relay server: a thread-per-connection TCP relay of messages between
//! clients in named rooms, speaking the protocol of SPEC.md.
//!
//! - [`server`]: the accept loop, the registry of connections, shutdown, and
//!   the public [`Server`] / [`RunningServer`] API.
//! - [`connection`]: a connection's reader thread (decode, handle, queue).
//! - [`writer`]: a connection's writer thread (coalesced, vectored writes).
//! - [`peer`]: the shared half of a connection: its bounded outbound queue,
//!   backpressure and slow-consumer verdicts, close reasons.
//! - [`outbox`]: gathering a read's frames into shared batches.
//! - [`rooms`]: the room registry and broadcast.
//! - [`state`]: the connection state machine.
//! - [`counters`], [`limits`], [`thread`], [`wake`], [`config`]: counters,
//!   system limits, small-stack threads, waking a blocked reader, settings.
//!
//! ```no_run
//! let config = server::Config { addr: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
//! let running = server::Server::bind(config)?.spawn()?;
//! println!("listening on {}", running.local_addr());
//! running.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod config;
pub mod connection;
pub mod counters;
pub mod limits;
pub mod logger;
pub mod outbox;
pub mod peer;
pub mod rooms;
pub mod server;
pub mod state;
pub mod thread;
pub mod wake;
pub mod writer;

pub use config::Config;
pub use counters::Counters;
pub use server::{RunningServer, Server, ShutdownHandle};
pub use state::ConnState;
