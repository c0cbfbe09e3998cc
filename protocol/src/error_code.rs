//! The error codes an ERROR frame carries, with their stable wire names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why the server sent an ERROR. Fatal codes are followed by the close of the
/// connection (after the ERROR frame has been flushed); non-fatal ones leave
/// the connection as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// A frame's length is out of bounds, or its flags are invalid.
    InvalidFrame,
    /// A frame's version byte is not 1.
    UnsupportedVersion,
    /// A frame's type byte names no message type.
    UnknownMessageType,
    /// The JSON flag is set and the payload is not one valid JSON text.
    ParseError,
    /// A well-formed frame other than HELLO arrived before HELLO.
    HelloRequired,
    /// The connection fell too far behind its rooms and was cut off.
    SlowConsumer,
    /// The connection sent nothing for the idle timeout.
    IdleTimeout,
    /// The server is at its connection limit.
    ServerFull,
    /// The server is stopping.
    ShuttingDown,
    /// A room name is empty, too long or has control characters.
    InvalidRoom,
    /// A payload is missing a field, has one of the wrong type, or is not an object.
    InvalidPayload,
    /// A MESSAGE named a room the sender has not joined.
    NotInRoom,
    /// HELLO carried no token, a wrong one, or an expired one, while the
    /// server requires authentication. The message never says which.
    AuthFailed,
    /// The connection's token expired and was not refreshed in time.
    TokenExpired,
    /// The token's permissions do not cover this JOIN_ROOM or MESSAGE.
    Forbidden,
    /// The connection is sending faster than its rate limit; the ERROR's
    /// `retryAfterMs` says when to try again. Sustained abuse is the same
    /// code with `fatal` true.
    RateLimited,
    /// The server is over its memory budget and cut this connection, the
    /// heaviest one that was not reading.
    Overloaded,
    /// A direct MESSAGE named a user or connection that is not connected.
    NotFound,
    /// A code this crate does not know (from a newer server); never sent by it.
    Unknown,
}

impl ErrorCode {
    /// Every code a server of this version sends.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownMessageType,
        ErrorCode::ParseError,
        ErrorCode::HelloRequired,
        ErrorCode::SlowConsumer,
        ErrorCode::IdleTimeout,
        ErrorCode::ServerFull,
        ErrorCode::ShuttingDown,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidPayload,
        ErrorCode::NotInRoom,
        ErrorCode::AuthFailed,
        ErrorCode::TokenExpired,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::Overloaded,
        ErrorCode::NotFound,
    ];

    /// The wire name, e.g. `NOT_IN_ROOM`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidFrame => "INVALID_FRAME",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::UnknownMessageType => "UNKNOWN_MESSAGE_TYPE",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::HelloRequired => "HELLO_REQUIRED",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::IdleTimeout => "IDLE_TIMEOUT",
            ErrorCode::ServerFull => "SERVER_FULL",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::InvalidRoom => "INVALID_ROOM",
            ErrorCode::InvalidPayload => "INVALID_PAYLOAD",
            ErrorCode::NotInRoom => "NOT_IN_ROOM",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// Whether the server closes the connection after sending this code.
    /// RATE_LIMITED is the one code that can be either: non-fatal as a rule,
    /// fatal for sustained abuse, so a client reads the ERROR's `fatal`.
    pub const fn is_fatal(self) -> bool {
        !matches!(
            self,
            ErrorCode::InvalidRoom
                | ErrorCode::InvalidPayload
                | ErrorCode::NotInRoom
                | ErrorCode::Forbidden
                | ErrorCode::RateLimited
                | ErrorCode::NotFound
        )
    }

    /// The code for a wire name; unknown names give [`ErrorCode::Unknown`].
    pub fn from_wire(name: &str) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == name)
            .unwrap_or(ErrorCode::Unknown)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = std::convert::Infallible;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(ErrorCode::from_wire(name))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(ErrorCode::from_wire(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.as_str()), code);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(ErrorCode::from_wire("SOMETHING_NEW"), ErrorCode::Unknown);
    }

    #[test]
    fn only_request_refusals_are_non_fatal() {
        let non_fatal: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| !c.is_fatal())
            .collect();
        assert_eq!(
            non_fatal,
            [
                ErrorCode::InvalidRoom,
                ErrorCode::InvalidPayload,
                ErrorCode::NotInRoom,
                ErrorCode::Forbidden,
                ErrorCode::RateLimited,
                ErrorCode::NotFound
            ]
        );
    }
}
