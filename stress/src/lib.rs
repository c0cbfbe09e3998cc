//! Relay's own proof that it holds: four scenarios, each with a verdict and
//! figures, run against a server started in-process or at an address.
//!
//! - [`fragmentation`]: frames split every which way must be reassembled,
//!   checked by the server's byte-exact answers.
//! - [`chaos`]: many clients joining, leaving, publishing, disconnecting
//!   abruptly, stalling and misbehaving; then an audit of every delivery.
//! - [`load`]: N clients in rooms publishing at a set rate; throughput,
//!   latency, memory.
//! - [`bench`]: the headline figures (fan-out, latency, rooms, connection
//!   setup, memory per idle connection, memory given back), for Relay alone
//!   or side by side with Redis pub/sub and NATS core.
//!
//! Building blocks: [`target`] (which server), [`wire`] (a blocking frame
//! connection with full control of the bytes), [`swarm`] (many non-blocking
//! clients on a few threads), [`peer`] (Redis's and NATS's framing, and what
//! a client of each system says and hears), [`histogram`], [`report`]
//! (verdict, bars, human lines and the JSON line), [`sys`] (sockets options,
//! limits, /proc memory and CPU), [`server_message`] (telling deliveries
//! from member events).
//!
//! Every scenario returns a [`report::Report`]; `main.rs` prints it and exits
//! non-zero when the verdict fails.

pub mod bench;
pub mod chaos;
pub mod child;
pub mod cluster;
pub mod error;
pub mod fragmentation;
pub mod histogram;
pub mod load;
pub mod peer;
pub mod report;
pub mod rng;
pub mod server_message;
pub mod swarm;
pub mod sys;
pub mod target;
pub mod tls;
pub mod wire;
pub mod ws;

pub use error::{Error, Result};
pub use report::Report;
pub use target::{Target, TargetOptions};
