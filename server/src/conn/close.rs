//! Why a connection ended: one typed reason, decided once, counted and
//! logged once (by `teardown`).
//!
//! Modelled on nats-server's `ClosedState`: every way a connection can end
//! has its own variant, so an operator (and the stress audit) can tell a
//! client that left from one that was reset, one cut off for falling behind
//! from one whose socket stopped taking bytes.

use std::fmt;

use protocol::ErrorCode;

/// Why a connection ended. The first reason recorded wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its side (end of stream).
    ClientClosed,
    /// The client reset the connection, or reading from it failed.
    ClientReset,
    /// No complete frame arrived for the idle timeout (IDLE_TIMEOUT).
    IdleTimeout,
    /// The client broke the protocol; carries the fatal code it was sent.
    Protocol(ErrorCode),
    /// The outbound queue stayed full past the stall bound (SLOW_CONSUMER).
    SlowConsumer {
        /// Bytes queued for the client when it was cut off.
        queued_bytes: usize,
    },
    /// A write made no progress for the write timeout.
    WriteTimeout,
    /// A write failed.
    WriteError,
    /// No thread could be started for the connection (SERVER_FULL).
    ServerFull,
    /// The server is stopping (SHUTTING_DOWN).
    Shutdown,
    /// A connection thread panicked: a bug, not the client's doing.
    ThreadPanic,
    /// The TLS handshake failed or did not finish within the handshake
    /// timeout (no ERROR: no frame can be sent without one).
    TlsHandshake,
    /// The WebSocket upgrade was refused (its HTTP status says why) or did
    /// not finish within the handshake timeout.
    WsHandshake,
    /// The server was over its memory budget and this was the heaviest
    /// connection (OVERLOADED); it is cut at once, not flushed, since what
    /// it holds is what the server must give back.
    Overloaded {
        /// Bytes it held (queued for it, and of a frame it was sending).
        held_bytes: usize,
    },
}

impl CloseReason {
    /// How many kinds there are, for per-kind counters.
    pub const KINDS: usize = 13;

    /// The kinds' names, in [`CloseReason::index`] order.
    pub const NAMES: [&'static str; Self::KINDS] = [
        "client_closed",
        "client_reset",
        "idle_timeout",
        "protocol_error",
        "slow_consumer",
        "write_timeout",
        "write_error",
        "server_full",
        "shutdown",
        "thread_panic",
        "tls_handshake",
        "overloaded",
        "ws_handshake",
    ];

    /// The reason for a fatal ERROR with `code`.
    pub fn for_fatal(code: ErrorCode) -> CloseReason {
        match code {
            ErrorCode::IdleTimeout => CloseReason::IdleTimeout,
            ErrorCode::ServerFull => CloseReason::ServerFull,
            ErrorCode::ShuttingDown => CloseReason::Shutdown,
            ErrorCode::SlowConsumer => CloseReason::SlowConsumer { queued_bytes: 0 },
            ErrorCode::Overloaded => CloseReason::Overloaded { held_bytes: 0 },
            code => CloseReason::Protocol(code),
        }
    }

    /// Position of this kind in [`CloseReason::NAMES`].
    pub const fn index(self) -> usize {
        match self {
            CloseReason::ClientClosed => 0,
            CloseReason::ClientReset => 1,
            CloseReason::IdleTimeout => 2,
            CloseReason::Protocol(_) => 3,
            CloseReason::SlowConsumer { .. } => 4,
            CloseReason::WriteTimeout => 5,
            CloseReason::WriteError => 6,
            CloseReason::ServerFull => 7,
            CloseReason::Shutdown => 8,
            CloseReason::ThreadPanic => 9,
            CloseReason::TlsHandshake => 10,
            CloseReason::Overloaded { .. } => 11,
            CloseReason::WsHandshake => 12,
        }
    }

    /// The code of the ERROR the client is sent last, if it is sent one.
    pub const fn code(self) -> Option<ErrorCode> {
        match self {
            CloseReason::IdleTimeout => Some(ErrorCode::IdleTimeout),
            CloseReason::Protocol(code) => Some(code),
            CloseReason::SlowConsumer { .. } => Some(ErrorCode::SlowConsumer),
            CloseReason::ServerFull => Some(ErrorCode::ServerFull),
            CloseReason::Shutdown => Some(ErrorCode::ShuttingDown),
            CloseReason::Overloaded { .. } => Some(ErrorCode::Overloaded),
            CloseReason::ClientClosed
            | CloseReason::ClientReset
            | CloseReason::WriteTimeout
            | CloseReason::WriteError
            | CloseReason::ThreadPanic
            | CloseReason::TlsHandshake
            | CloseReason::WsHandshake => None,
        }
    }

    /// The ERROR message for reasons decided away from the request that
    /// caused them (the reader words its own fatal errors).
    pub const fn standard_message(self) -> Option<&'static str> {
        match self {
            CloseReason::SlowConsumer { .. } => Some(
                "you fell too far behind your rooms and were disconnected; read faster or join fewer busy rooms",
            ),
            CloseReason::Shutdown => Some("the server is shutting down; reconnect later"),
            CloseReason::ServerFull => {
                Some("server cannot start another connection now (thread limit); try again later")
            }
            CloseReason::Overloaded { .. } => Some(
                "the server is over its memory budget and your connection held the most of it; read what you are sent, and reconnect later",
            ),
            _ => None,
        }
    }

    /// Whether the writer should flush what is queued and end with the
    /// final ERROR, rather than drop the output. An OVERLOADED connection
    /// is not flushed: the server is shedding what it holds, and a client
    /// that does not read would keep it for the whole write timeout.
    pub const fn flushes(self) -> bool {
        self.code().is_some() && !matches!(self, CloseReason::Overloaded { .. })
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClientClosed => f.write_str("closed by client"),
            CloseReason::ClientReset => f.write_str("reset by client"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::Protocol(code) => write!(f, "protocol error {code}"),
            CloseReason::SlowConsumer { queued_bytes } => {
                write!(f, "slow consumer, {queued_bytes} bytes queued when cut off")
            }
            CloseReason::WriteTimeout => f.write_str("write timed out"),
            CloseReason::WriteError => f.write_str("write failed"),
            CloseReason::ServerFull => f.write_str("server full"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::ThreadPanic => f.write_str("connection thread panicked"),
            CloseReason::TlsHandshake => f.write_str("TLS handshake failed"),
            CloseReason::WsHandshake => f.write_str("WebSocket upgrade failed"),
            CloseReason::Overloaded { held_bytes } => write!(
                f,
                "overloaded: shed over the memory budget, holding {held_bytes} bytes"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: [CloseReason; CloseReason::KINDS] = [
        CloseReason::ClientClosed,
        CloseReason::ClientReset,
        CloseReason::IdleTimeout,
        CloseReason::Protocol(ErrorCode::ParseError),
        CloseReason::SlowConsumer { queued_bytes: 1 },
        CloseReason::WriteTimeout,
        CloseReason::WriteError,
        CloseReason::ServerFull,
        CloseReason::Shutdown,
        CloseReason::ThreadPanic,
        CloseReason::TlsHandshake,
        CloseReason::Overloaded { held_bytes: 1 },
        CloseReason::WsHandshake,
    ];

    #[test]
    fn every_kind_has_its_own_index_and_name() {
        for (i, reason) in EVERY.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason}");
        }
        let mut names = CloseReason::NAMES.to_vec();
        names.dedup();
        assert_eq!(names.len(), CloseReason::KINDS);
    }

    #[test]
    fn fatal_codes_map_back_to_themselves() {
        for code in ErrorCode::ALL.into_iter().filter(|c| c.is_fatal()) {
            assert_eq!(CloseReason::for_fatal(code).code(), Some(code));
        }
    }

    #[test]
    fn reasons_decided_elsewhere_carry_their_own_message() {
        for reason in EVERY {
            let decided_elsewhere = matches!(
                reason,
                CloseReason::SlowConsumer { .. }
                    | CloseReason::Shutdown
                    | CloseReason::ServerFull
                    | CloseReason::Overloaded { .. }
            );
            assert_eq!(
                reason.standard_message().is_some(),
                decided_elsewhere,
                "{reason}"
            );
        }
    }
}
