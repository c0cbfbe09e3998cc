//! The Relay server: a thread-per-connection TCP relay of messages between
//! clients in named rooms, speaking the protocol of SPEC.md.
//!
//! The modules follow a message through the server:
//!
//! ```text
//! socket → conn::transport → conn::reader → conn::session → rooms → conn::outbound → conn::output → socket
//! ```
//!
//! - [`server`](Server): the accept loop, admission, shutdown, and the
//!   housekeeping thread (giving memory back after a crowd leaves).
//! - `drain`: the lame-duck drain: SHUTTING_DOWN spread over
//!   `--drain-timeout`, each with its own `retryAfterMs` hint.
//! - `conn/`: one connection: the transport seam (plain TCP, and TLS in
//!   `conn::tls`), its reader thread, the
//!   request handling (`session`, no socket), the bounded outbound queue
//!   with the deliver-or-cut rule, the shared output that publishers flush
//!   and the writer thread finishes (sleeping on a futex `doorbell`), the
//!   state machine, the typed close reason and the one teardown.
//! - `conn::ws`: WebSocket, for browsers: the upgrade, the `Origin` rule,
//!   one Relay frame per binary message.
//! - `tls`: the TLS listener's certificates, loaded from PEM, reloaded on
//!   request ([`TlsReloader`]), and who a client certificate names.
//! - `rooms`: which connections are in which room (sharded maps, within
//!   the server-wide caps); broadcast; each room's order (`seq`, epoch,
//!   history) in `rooms::order`.
//! - `budget`: the server-wide memory budget, charged where bytes are
//!   queued, buffered or put in rooms; `shed`: what the server does past
//!   it (cut the heaviest connections with OVERLOADED).
//! - `cluster/`: rooms shared with other nodes through Redis (`--cluster`):
//!   the bounded link out, the subscriber in, cluster-wide presence, the
//!   members of a node that goes leaving everywhere, and direct messages
//!   across nodes.
//! - `per_address`: connections per IP address (`--max-connections-per-ip`).
//! - `shared`: what all connection threads share (settings, rooms,
//!   counters, the registry of live connections).
//! - [`auth`]: who a client is and what it may do: static tokens, JWTs,
//!   room permissions.
//! - [`config`](Config): settings, validated in one place.
//! - [`logging`]: `tracing` output on a thread of its own, bounded and
//!   lossy so a client can neither flood the log nor stall the server
//!   through it; throttles for the lines clients can trigger.
//! - [`counters`](Counters): the counters HELLO answers carry, and closes by
//!   reason; `histogram`: the lock-free histograms `/metrics` shows (queue
//!   depth, fan-out, delivery latency).
//! - `sys/`: every `unsafe` block and OS specific (threads and the thread
//!   pool, futex, the reader wake-up, limits, socket calls, signals,
//!   `malloc_trim`); the rest of the crate denies `unsafe`.
//! - `fuzzing` (feature `fuzzing`): the in-memory harness the fuzz target in
//!   `server/fuzz` drives.
//!
//! ```no_run
//! let config = server::Config { addr: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
//! let running = server::Server::bind(config)?.spawn()?;
//! println!("listening on {}", running.local_addr());
//! running.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```

#![deny(unsafe_code)]
// Unit tests may unwrap: a panic there is a test failure with a backtrace.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod auth;
mod budget;
mod cluster;
mod config;
pub(crate) mod conn;
mod counters;
mod drain;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod histogram;
mod http;
pub mod logging;
mod per_address;
mod rooms;
mod server;
mod shared;
mod shed;
mod sys;
mod tls;

pub use budget::parse_bytes;
pub use cluster::{ClusterConfig, default_node_id};
pub use config::{
    Budget, Config, ConfigError, MAX_MAX_FRAME, MAX_TIMEOUT, MIN_MAX_FRAME, MIN_MEMORY_BUDGET,
    RateLimits, TlsConfig, WsConfig, default_memory_budget,
};
pub use conn::ws::origin::{BadOrigin, Origins};
pub use conn::{CloseReason, ConnState};
pub use counters::Counters;
pub use rooms::{HistoryLimits, MemberBatching};
pub use server::{RunningServer, Server, ShutdownHandle};
pub use sys::signals::{Signal, Signals};
pub use tls::{TlsError, TlsReloader};
