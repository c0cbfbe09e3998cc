//! Who a client is, and what it may do (SPEC.md 11.1 and 11.2).
//!
//! The session asks one question, [`AuthConfig::authenticate`]: given the
//! HELLO's token and the time, which [`Identity`], or why not. Behind it:
//!
//! - [`tokens`]: the static token table (`--auth-tokens FILE`), for
//!   services; looked up by SHA-256 digest, compared in constant time;
//! - [`jwt`]: signed tokens (`--jwt-secret`, `--jwt-public-key`), minted by
//!   an application's backend for its users;
//! - [`permissions`]: room patterns for join and publish.
//!
//! A third source is planned: the identity of a TLS client certificate
//! (mutual TLS), which the transport knows before HELLO. It fits here as
//! one more way to an [`Identity`]; the session would take it instead of a
//! token when the HELLO carries none (see `Session::authenticate`).

pub mod jwt;
pub mod permissions;
pub mod tokens;

use std::fmt;
use std::sync::Arc;

pub use jwt::{JwtError, JwtVerifier};
pub use permissions::{PatternError, Patterns, Permissions};
pub use tokens::{TokenTable, TokensError};

/// The one message of every AUTH_FAILED for a missing, wrong or expired
/// token: the client learns nothing about which it was. The server's log
/// has the reason.
pub const AUTH_FAILED_MESSAGE: &str = "authentication failed; send a valid token in HELLO";

/// An authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id: shown to others as `user`, whatever HELLO's `userId`.
    pub user: Arc<str>,
    pub permissions: Permissions,
    /// When the credential stops being valid, leeway included, in
    /// milliseconds since the Unix epoch; `None` for a static token.
    pub expires_at_ms: Option<u64>,
}

/// Why a token was refused. For the server's log only: the client is told
/// [`AUTH_FAILED_MESSAGE`] whatever the reason. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// The HELLO had no `token`.
    Missing,
    /// Neither a static token nor a JWT the server can verify.
    Unknown,
    /// A JWT with a good signature, past its `exp` (plus leeway).
    Expired,
    /// A JWT refused for another reason (signature, `nbf`, claims).
    Jwt(JwtError),
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFailure::Missing => f.write_str("HELLO carried no token"),
            AuthFailure::Unknown => {
                f.write_str("the token is neither a known static token nor a JWT")
            }
            AuthFailure::Expired => f.write_str("the JWT has expired"),
            AuthFailure::Jwt(error) => write!(f, "JWT refused: {error}"),
        }
    }
}

impl std::error::Error for AuthFailure {}

/// How clients authenticate: off (the default: anyone, under any name), or
/// a static token table, JWT keys, or both. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `--auth-tokens FILE`.
    pub tokens: Option<TokenTable>,
    /// `--jwt-secret` and/or `--jwt-public-key`.
    pub jwt: Option<JwtVerifier>,
}

impl AuthConfig {
    /// Whether a HELLO must carry a valid token.
    pub fn is_on(&self) -> bool {
        self.tokens.is_some() || self.jwt.is_some()
    }

    /// Who `token` belongs to at `now_ms` (milliseconds since the Unix
    /// epoch). The static table is tried first, then the JWT keys.
    pub fn authenticate(&self, token: Option<&str>, now_ms: u64) -> Result<Identity, AuthFailure> {
        let token = token.ok_or(AuthFailure::Missing)?;
        if let Some(identity) = self.tokens.as_ref().and_then(|table| table.get(token)) {
            return Ok(identity);
        }
        match &self.jwt {
            Some(jwt) if jwt::looks_like_jwt(token) => jwt.verify(token, now_ms),
            _ => Err(AuthFailure::Unknown),
        }
    }
}

/// Checks a user id from a credential by the rules of HELLO's `userId`
/// (SPEC.md 3.1), and not empty; returns what is wrong.
pub(crate) fn check_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        Err("is empty")
    } else if user.len() > protocol::MAX_USER_ID_LEN {
        Err("is longer than 128 bytes")
    } else if user.chars().any(char::is_control) {
        Err("has a control character")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default() {
        assert!(!AuthConfig::default().is_on());
    }

    #[test]
    fn the_static_table_comes_first_then_jwt() {
        let table = TokenTable::parse("s3cret-service-token svc\n", "tokens").unwrap();
        let config = AuthConfig {
            tokens: Some(table),
            jwt: Some(JwtVerifier::hs256(&[7; 32], 30)),
        };
        assert_eq!(
            &*config
                .authenticate(Some("s3cret-service-token"), 0)
                .unwrap()
                .user,
            "svc"
        );
        assert_eq!(config.authenticate(None, 0), Err(AuthFailure::Missing));
        assert_eq!(
            config.authenticate(Some("nope"), 0),
            Err(AuthFailure::Unknown)
        );
        assert!(matches!(
            config.authenticate(Some("a.b.c"), 0),
            Err(AuthFailure::Jwt(_))
        ));
    }

    #[test]
    fn user_ids_follow_the_hello_rules() {
        assert!(check_user("ann").is_ok());
        assert!(check_user("").is_err());
        assert!(check_user(&"x".repeat(129)).is_err());
        assert!(check_user(&"x".repeat(128)).is_ok());
        assert!(check_user("a\nb").is_err());
    }
}
