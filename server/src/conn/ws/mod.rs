//! WebSocket (RFC 6455) over plain TCP or TLS: the third implementation of
//! the transport seam, so browsers share rooms with TCP clients.
//!
//! Each binary WebSocket message carries exactly one Relay frame (SPEC.md
//! 13). The halves translate, and the session never knows:
//!
//! - [`upgrade`]: the HTTP upgrade, done by the reader thread before the
//!   first frame, bounded in time and size; the `Origin` rule is in
//!   [`origin`].
//! - [`inbound`]: the reader's side: WebSocket frames in, the payloads of
//!   binary messages out to the Relay decoder, unmasked in place in the
//!   decoder's own buffer; pings, closes and every framing rule.
//! - [`framed`]: a batch's Relay frames as binary messages, framed once
//!   per batch by the first WebSocket member that writes it, and shared
//!   by all of them (server frames are unmasked, so the bytes are the
//!   same for every member).
//! - [`outbound`]: the writer's side: those shared bytes written as TCP
//!   writes a batch, control frames (pongs, the close) between messages.
//! - [`link`]: what the reader hands the writer (the upgrade's answer, a
//!   pong, the client's close), since only the write half writes.

pub(crate) mod framed;
mod inbound;
mod link;
pub mod origin;
mod outbound;
mod upgrade;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use self::inbound::WsRead;
use self::link::Link;
use self::origin::Origins;
use self::outbound::WsWrite;
use super::transport::{Cut, Transport};

/// Whether a handshake error is the WebSocket upgrade's (not TLS's).
pub(crate) fn is_upgrade_failure(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<upgrade::UpgradeFailed>())
}

/// Whether a handshake error is a refused upgrade, whose HTTP answer the
/// writer sends.
pub(crate) fn is_refusal(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<upgrade::UpgradeFailed>())
        .is_some_and(|failed| failed.status.is_some())
}

/// What every WebSocket connection of a server shares.
#[derive(Debug)]
pub(crate) struct WsSettings {
    /// Which `Origin`s may open a connection (`--ws-allowed-origins`).
    pub(crate) origins: Origins,
    /// The upgrade must be complete within this long of the TCP (or TLS)
    /// connection being ready (`--ws-handshake-timeout`).
    pub(crate) handshake_timeout: Duration,
    /// `--max-frame`: a message longer than the largest Relay frame is
    /// refused from its header, before its payload is read.
    pub(crate) max_frame: u32,
}

/// WebSocket over `T` (plain TCP or TLS), not yet split.
#[derive(Debug)]
pub(crate) struct Ws<T> {
    inner: T,
    settings: Arc<WsSettings>,
}

impl<T: Transport> Ws<T> {
    pub(crate) fn new(inner: T, settings: Arc<WsSettings>) -> Ws<T> {
        Ws { inner, settings }
    }
}

impl<T: Transport> Transport for Ws<T> {
    type Read = WsRead<T::Read>;
    type Write = WsWrite<T::Write>;
    const TLS: bool = T::TLS;
    const NAME: &'static str = if T::TLS { "wss" } else { "ws" };

    fn split(self) -> (Self::Read, Self::Write, Arc<dyn Cut>) {
        let (read, write, cut) = self.inner.split();
        let link = Arc::new(Link::default());
        (
            WsRead::new(read, Arc::clone(&link), self.settings),
            WsWrite::new(write, link),
            cut,
        )
    }
}
