//! What can go wrong when talking to a relay, phrased for the person who has
//! to act on it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use protocol::{ErrorCode, ErrorPayload, RequestId, RoomError};

/// An ERROR frame the server sent: its code, its explanation and whether the
/// server closes the connection after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: ErrorCode,
    pub message: String,
    /// The server closes the connection after a fatal error.
    pub fatal: bool,
    /// The room the refused request named, when the server says.
    pub room: Option<String>,
    /// The refused request's `id`, when it had one: how a client that sent
    /// several requests tells which one this is about.
    pub id: Option<RequestId>,
    /// For RATE_LIMITED and SHUTTING_DOWN: milliseconds to wait before
    /// trying again.
    pub retry_after_ms: Option<u64>,
}

impl From<ErrorPayload> for ServerError {
    fn from(payload: ErrorPayload) -> ServerError {
        ServerError {
            code: payload.code,
            message: payload.message,
            fatal: payload.fatal,
            room: payload.room,
            id: payload.id,
            retry_after_ms: payload.retry_after_ms,
        }
    }
}

impl ServerError {
    /// `CODE: message`; just the message when the code is
    /// [`ErrorCode::Unknown`], which the server did not send but this client
    /// put there (for the original server's `{"error": "..."}`, or a code too
    /// new for this client); just the code when there is no message.
    fn write_code_and_message(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.message.is_empty()) {
            (_, true) => write!(f, "{}", self.code),
            (ErrorCode::Unknown, false) => f.write_str(&self.message),
            (code, false) => write!(f, "{code}: {}", self.message),
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_code_and_message(f)?;
        if self.fatal {
            f.write_str(" (fatal; the server closes the connection)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The server sent a fatal ERROR (SHUTTING_DOWN, SLOW_CONSUMER,
    /// IDLE_TIMEOUT, ...) and closed the connection.
    ServerError(ServerError),
    /// The server closed the connection without saying why.
    ClosedByServer,
    /// This side closed it ([`crate::Client::close`] or drop).
    Closed,
    /// Reading from the socket failed (reset, timeout, ...).
    Io {
        kind: io::ErrorKind,
        message: String,
    },
    /// The server sent bytes that are not valid Relay v1; the client closed
    /// the connection because the rest of the stream cannot be trusted.
    ProtocolViolation(String),
}

impl DisconnectReason {
    pub(crate) fn io(error: &io::Error) -> DisconnectReason {
        DisconnectReason::Io {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ServerError(error) => {
                f.write_str("server closed the connection: ")?;
                error.write_code_and_message(f)
            }
            DisconnectReason::ClosedByServer => f.write_str("server closed the connection"),
            DisconnectReason::Closed => f.write_str("connection closed by this client"),
            DisconnectReason::Io { message, .. } => write!(f, "connection lost: {message}"),
            DisconnectReason::ProtocolViolation(what) => {
                write!(f, "server violated the Relay v1 protocol: {what}")
            }
        }
    }
}

/// Everything a [`crate::Client`] call can fail with.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens at the address.
    ConnectionRefused { addr: SocketAddr },
    /// Connecting took longer than the connect timeout.
    ConnectTimeout { addr: SocketAddr, after: Duration },
    /// The host name could not be resolved.
    Resolve { addr: String, source: io::Error },
    /// Connecting failed otherwise.
    Connect { addr: String, source: io::Error },
    /// The server answered with an ERROR frame.
    Server(ServerError),
    /// The server sent something that is not valid Relay v1.
    Protocol(String),
    /// An awaited reply did not arrive in time.
    Timeout {
        waiting_for: String,
        after: Duration,
    },
    /// The connection is gone; no more requests can be sent.
    Disconnected(DisconnectReason),
    /// A room name this client refuses to send (the protocol's room rules).
    InvalidRoom { room: String, reason: RoomError },
    /// A message too large for one frame.
    TooLarge { bytes: usize, max: u32 },
    /// The server does not offer this. The original Node.js server answers
    /// no HEARTBEAT (so there is no round-trip time) and reports no counters;
    /// the connection is otherwise fine.
    NotAvailable {
        /// What was asked for, e.g. "the heartbeat round-trip time".
        what: &'static str,
        /// How the server showed that it does not offer it.
        why: &'static str,
    },
    /// TLS could not be set up: a certificate file, or the handshake (the
    /// server's certificate not trusted, not TLS on that port, ...).
    Tls(crate::tls::TlsError),
    /// Writing to the socket failed.
    Io(io::Error),
}

impl ClientError {
    /// The server's error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(error) => Some(error.code),
            ClientError::Disconnected(DisconnectReason::ServerError(error)) => Some(error.code),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::ConnectionRefused { addr } => write!(
                f,
                "cannot connect to {addr}: connection refused; is the relay server running there?"
            ),
            ClientError::ConnectTimeout { addr, after } => write!(
                f,
                "cannot connect to {addr}: no answer within {}; check the host, port and firewall",
                human(*after)
            ),
            ClientError::Resolve { addr, source } => {
                write!(f, "cannot resolve {addr}: {source}; check the host name")
            }
            ClientError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
            ClientError::Server(error) => write!(f, "server error {error}"),
            ClientError::Protocol(what) => {
                write!(f, "server violated the Relay v1 protocol: {what}")
            }
            ClientError::Timeout { waiting_for, after } => write!(
                f,
                "no {waiting_for} within {}; the server may be overloaded or unreachable",
                human(*after)
            ),
            ClientError::Disconnected(reason) => write!(f, "not connected: {reason}"),
            ClientError::InvalidRoom { room, reason } => {
                write!(f, "invalid room name {room:?}: {reason}")
            }
            ClientError::TooLarge { bytes, max } => write!(
                f,
                "message of {bytes} bytes does not fit in a frame of at most {max} bytes; send a smaller one"
            ),
            ClientError::NotAvailable { what, why } => write!(
                f,
                "{what} is not available from this server: {why}; the connection is unaffected"
            ),
            ClientError::Tls(error) => write!(f, "{error}"),
            ClientError::Io(error) => write!(f, "connection failed: {error}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source, .. } | ClientError::Resolve { source, .. } => {
                Some(source)
            }
            ClientError::Tls(error) => Some(error),
            ClientError::Io(error) => Some(error),
            ClientError::Server(error) => Some(error),
            _ => None,
        }
    }
}

impl From<ServerError> for ClientError {
    fn from(error: ServerError) -> ClientError {
        ClientError::Server(error)
    }
}

/// A duration as a person reads it: `250 ms`, `5 s`, `1.5 s`.
fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}
