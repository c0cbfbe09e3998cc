//! Relay's test helpers, one copy of each, for the workspace's tests and for
//! the `stress` tool. Never shipped (`publish = false`); the crates use it as a
//! dev-dependency, except `stress`, which is itself a test tool.
//!
//! - [`frames`]: frames as bytes, written through the protocol crate's own
//!   encoders ([`protocol::encode_json`], [`protocol::Frame::to_vec`]), never
//!   by hand: [`json_frame`], [`push_json`], [`raw_frame`] (any flags and
//!   payload, valid or not), [`room_frame`]; frames as values: [`OwnedFrame`]
//!   (`.json()`, `.error()`, `.expect_error()`, `.text()`, `.as_frame()`); and
//!   [`round_trip_frame`] / [`round_trip_json`], which push a frame through
//!   the encoder and a byte-at-a-time [`protocol::Decoder`].
//! - [`conn`]: [`Conn`], a blocking frame connection with exact control of
//!   the bytes on the wire (raw writes, frames, receive with a timeout,
//!   expect a kind, expect skipping deliveries, read until EOF, shutdown and
//!   reset). Every failure is a value ([`RecvError`] when no frame came,
//!   [`WireError`] for a step), so library code (`stress`) can use it; a
//!   caller picks its own error type with `Conn<E>` for any
//!   `E: From<WireError>`. Also [`server_stats`] and [`wait_for_stats`],
//!   the server's counters asked over the wire.
//! - [`raw`]: [`Raw`], the same connection for tests: thin wrappers that
//!   panic with what was expected and what came (`expect_error(code)`,
//!   `expect_fatal(code)`, ...), each wait bounded by [`WAIT`]; and
//!   [`wait_until`], which polls a condition until [`WAIT`] runs out. Tests
//!   wait for events with timeouts, never for fixed sleeps.
//! - [`server`] (feature `server`, on by default): [`start_server`] and
//!   [`start_server_with`], a real server in-process on 127.0.0.1, port 0.
//! - [`tls`] (feature `tls`): certificates made on the spot (rcgen), a
//!   temporary folder for their files, and [`tls::TlsClient`], the frame
//!   connection over rustls.
//!
//! # The `server` feature
//!
//! Everything but starting a server needs only the `protocol` crate. The
//! protocol crate's own tests use frames and no server, so they depend on
//! `testkit` with `default-features = false` and `cargo test -p protocol`
//! does not compile the server. (In a workspace-wide build, features are
//! unified and the server is built anyway for the other crates' tests.)

pub mod conn;
pub mod frames;
pub mod raw;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;

pub use conn::{CLIENT_MAX_FRAME, Conn, RecvError, WireError, server_stats, wait_for_stats};
pub use frames::{
    OwnedFrame, json_frame, push_json, raw_frame, room_frame, round_trip_frame, round_trip_json,
};
pub use raw::{Raw, WAIT, wait_until};
#[cfg(feature = "server")]
pub use server::{start_server, start_server_with, with_history};
