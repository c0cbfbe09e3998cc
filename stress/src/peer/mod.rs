//! The systems the bench measures side by side: Relay, and two peers that
//! relay messages by room too, Redis pub/sub and NATS core.
//!
//! | Relay | Redis | NATS |
//! |---|---|---|
//! | room | channel | subject |
//! | HELLO + JOIN_ROOM, JOIN answer | SUBSCRIBE, `subscribe` confirmation | CONNECT + SUB + PING, PONG |
//! | MESSAGE to the room | PUBLISH | PUB |
//! | MESSAGE delivered (not to the sender) | `message` push (also to the sender) | MSG (`echo: false`: not to the sender) |
//!
//! - `resp.rs`, `nats.rs`: the two peers' wire framing, sans-IO;
//! - `dialect.rs`: what a client of each system says and hears, for the
//!   swarm and the bench's blocking clients alike;
//! - `publisher.rs`: one blocking publishing connection of any system;
//! - `servers.rs`: starting `redis-server` and `nats-server` as children.

pub mod dialect;
pub mod nats;
pub mod publisher;
pub mod resp;
pub mod servers;

use std::net::{SocketAddr, ToSocketAddrs};

use crate::error::{Error, Result};

/// Which server a client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum System {
    #[default]
    Relay,
    Redis,
    Nats,
}

impl System {
    pub const ALL: [System; 3] = [System::Relay, System::Redis, System::Nats];

    /// The name in the report: `Relay`, `Redis`, `NATS`.
    pub fn name(self) -> &'static str {
        match self {
            System::Relay => "Relay",
            System::Redis => "Redis",
            System::Nats => "NATS",
        }
    }

    /// The JSON key: `relay`, `redis`, `nats`.
    pub fn key(self) -> &'static str {
        match self {
            System::Relay => "relay",
            System::Redis => "redis",
            System::Nats => "nats",
        }
    }
}

/// Reads `relay://HOST:PORT`, `redis://HOST:PORT`, `nats://HOST:PORT`, or a
/// bare `HOST:PORT` (Relay).
pub fn parse_target(text: &str) -> Result<(System, SocketAddr)> {
    let (system, rest) = match text.split_once("://") {
        Some(("relay", rest)) => (System::Relay, rest),
        Some(("redis", rest)) => (System::Redis, rest),
        Some(("nats", rest)) => (System::Nats, rest),
        Some((scheme, _)) => {
            return Err(Error::new(format!(
                "--target {text}: unknown scheme {scheme:?}; use relay://, redis:// or nats://"
            )));
        }
        None => (System::Relay, text),
    };
    let rest = rest.trim_end_matches('/');
    let addr = rest
        .to_socket_addrs()
        .map_err(|e| Error::new(format!("--target {text}: {e}; use SCHEME://HOST:PORT")))?
        .next()
        .ok_or_else(|| Error::new(format!("--target {text} resolves to no address")))?;
    Ok((system, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_system() {
        let (s, a) = parse_target("redis://127.0.0.1:6379").unwrap();
        assert_eq!((s, a.port()), (System::Redis, 6379));
        let (s, _) = parse_target("nats://127.0.0.1:4222/").unwrap();
        assert_eq!(s, System::Nats);
        let (s, _) = parse_target("127.0.0.1:4000").unwrap();
        assert_eq!(s, System::Relay);
        assert!(parse_target("http://127.0.0.1:1").is_err());
        assert!(parse_target("redis://nowhere").is_err());
    }
}
