//! A blocking client for Relay v1, built on the `protocol` crate.
//!
//! - [`client`]: [`Client`], one TCP connection: connect, HELLO, join, leave,
//!   publish text / JSON / bytes, heartbeat with round-trip time, read the
//!   server's counters, and read [`Event`]s from another thread while sending.
//!   Blocking helpers (`hello`, `join_and_wait`, `heartbeat_and_wait`,
//!   `stats`, `wait_for`) wait for one reply with a timeout.
//! - [`event`]: what the server sends, as owned, typed [`Event`]s.
//! - [`error`]: [`ClientError`], [`ServerError`] and [`DisconnectReason`],
//!   with messages that say what to do.
//! - [`tls`]: [`TlsOptions`] for a server's TLS port (`Options::tls`),
//!   with rustls.
//! - `reader` (private): the reader thread that decodes the socket with
//!   [`protocol::Decoder`] and feeds a bounded channel of events.
//!
//! It also works against the original Node.js server, which sends less: its
//! HELLO answer has no `maxFrameSize` (its 10 MiB is assumed), no
//! `idleTimeoutMs` (read as 0) and no `stats`; its room answers have no
//! `members` and its membership events no `timestamp` (both `None` here); its
//! ERRORs are `{"error": "..."}` (code [`ErrorCode::Unknown`], not shown in
//! messages); and it never echoes a HEARTBEAT, so
//! [`Client::heartbeat_and_wait`] and [`Client::stats`] fail at once with
//! [`ClientError::NotAvailable`].
//!
//! The `relay` binary (the rustyline CLI, behind the default `cli` feature, `src/main.rs` and `src/cli/`) is
//! built on this library alone.
//!
//! ```no_run
//! use std::time::Duration;
//! use client::{Client, Event};
//!
//! let t = Duration::from_secs(5);
//! let client = Client::connect(("localhost", 4000))?;
//! let hello = client.hello_as(Some("alice"), false, t)?;
//! println!("connected as {}", hello.connection_id);
//! client.join_and_wait("physics", t)?;
//! client.send_text("physics", "hello")?;
//! println!("rtt {:?}", client.heartbeat_and_wait(t)?);
//! std::thread::scope(|s| {
//!     s.spawn(|| {
//!         while let Some(event) = client.recv() {
//!             if let Event::Message(m) = event {
//!                 println!("[{}] {}: {:?}", m.room, m.sender(), m.body.as_text());
//!             }
//!         }
//!     });
//!     let _ = client.send_json("physics", &serde_json::json!({"x": 1}));
//!     client.shutdown();
//! });
//! # Ok::<(), client::ClientError>(())
//! ```

pub mod client;
pub mod error;
pub mod event;
mod reader;
pub mod tls;

pub use crate::client::{CLIENT_VERSION, Client, Options};
pub use crate::error::{ClientError, DisconnectReason, ServerError};
pub use crate::event::{Body, DirectMessage, Event, HeartbeatReply, MemberEvent, Message, RoomAck};
pub use crate::tls::{TlsError, TlsOptions};
pub use protocol::{
    Ack, ErrorCode, Gap, Hello, HelloReply, Member, MemberChange, Recipient, Recovery, RequestId,
    Since, Stats, WhoReply,
};
