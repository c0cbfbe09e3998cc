//! One connection, from its socket to its socket:
//!
//! ```text
//! transport ─read half─▶ reader ─frames─▶ session ─▶ rooms ─▶ outbound ─▶ writer ─write half─▶ transport
//! ```
//!
//! - [`transport`]: the seam to the bytes (plain TCP; [`tls`], TLS with the
//!   reader and writer sharing one rustls session): a read half, a write
//!   half, and a cut; [`ws`], WebSocket over either, one Relay frame per
//!   binary message.
//! - [`reader`]: the reader thread's I/O loop: read, decode, idle clock,
//!   stack trimming, lingering after a close; [`rate`]: the rate limits it
//!   applies to each frame.
//! - [`session`]: request handling, with no socket: HELLO, JOIN, LEAVE,
//!   MESSAGE, HEARTBEAT.
//! - [`gather`]: a read's answers and deliveries gathered into shared
//!   [`batch`]es.
//! - [`outbound`]: the bounded queue, its accounting, the one
//!   deliver-or-cut rule, and the verdict that ends the output;
//!   [`output`]: the write half and what is being written, shared by the
//!   writer and the publishers that flush for it; [`progress`]: whether
//!   the client still takes it (reaping one that stopped reading).
//! - [`writer`]: the writer thread: coalesced, vectored writes;
//!   [`doorbell`]: how it sleeps and is woken.
//! - [`peer`]: the connection as the registry sees it; [`start`]: its
//!   threads started.
//! - [`close`]: the typed close reason; [`state`]: the state machine;
//!   [`teardown`]: the one place a connection ends.

mod batch;
pub(crate) mod close;
mod doorbell;
mod gather;
pub(crate) mod outbound;
mod output;
pub(crate) mod peer;
mod progress;
pub(crate) mod rate;
pub(crate) mod reader;
pub(crate) mod session;
pub(crate) mod start;
pub(crate) mod state;
mod teardown;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod writer;
pub mod ws;

pub use close::CloseReason;
pub use state::ConnState;
