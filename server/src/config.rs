//! Server settings, and the one place they are checked and corrected.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::AuthConfig;

/// The longest timeout accepted: a day. Longer ones overflow clock
/// arithmetic on some platforms and are never what anyone means.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The smallest `max_frame`: every frame the server writes on its own (a
/// HELLO, JOIN or LEAVE answer, an ERROR, a membership event) fits in it,
/// whatever the client sent, so a client may take `maxFrameSize` as the
/// largest frame it will ever receive (SPEC.md 2 has the arithmetic).
pub const MIN_MAX_FRAME: u32 = 1024;

/// Server settings; `Config::default()` is what `relay-server` uses with no
/// flags. [`Server::bind`](crate::Server::bind) validates them.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen. Port 0 picks a free port (see `Server::local_addr`).
    pub addr: SocketAddr,
    /// Connections beyond this get SERVER_FULL (capped further by system limits).
    pub max_connections: usize,
    /// Largest `length` field accepted, and sent.
    pub max_frame: u32,
    /// A connection with no complete frame for this long gets IDLE_TIMEOUT.
    pub idle_timeout: Duration,
    /// A write making no progress for this long abandons the connection.
    pub write_timeout: Duration,
    /// How long a publisher waits for a member whose queue is full before
    /// that member is cut off as a slow consumer.
    pub stall_timeout: Duration,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// Entries in a connection's outbound queue (each entry is one batch of
    /// frames); every entry costs 16 bytes up front. At least 2.
    pub queue_items: usize,
    /// Bytes a connection's outbound queue may hold; raised to two maximum
    /// frames if set lower, so a frame of the maximum size always fits.
    pub queue_bytes: usize,
    /// A second listener that speaks TLS (SPEC.md 11.3); `None` for plain
    /// TCP only. Boxed: it is rarely there, and `Config` is passed by value.
    pub tls: Option<Box<TlsConfig>>,
    /// Who may connect, and what they may do (SPEC.md 11.1, 11.2); off by
    /// default: anyone, under any name, anywhere.
    pub auth: AuthConfig,
}

/// The TLS listener: where, with which certificate, and whether clients
/// must show one.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Where to listen for TLS, beside [`Config::addr`]. Port 0 picks a
    /// free port (see `Server::tls_addr`).
    pub addr: SocketAddr,
    /// PEM certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// PEM private key of the leaf certificate (`--tls-key`).
    pub key: PathBuf,
    /// PEM CA certificates: when set, every client must show a certificate
    /// they signed (mutual TLS; `--tls-client-ca`).
    pub client_ca: Option<PathBuf>,
    /// A connection whose handshake has not finished after this long is
    /// cut, so a client that connects and says nothing (or trickles its
    /// ClientHello) holds its threads for this long at most.
    pub handshake_timeout: Duration,
}

impl TlsConfig {
    /// The default `--tls-handshake-timeout`: ample for a handshake across
    /// the world, short enough that silent sockets do not pile up.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
            max_connections: 10_000,
            max_frame: protocol::DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_millis(500),
            max_rooms_per_connection: 1000,
            queue_items: 64,
            queue_bytes: 4 << 20,
            tls: None,
            auth: AuthConfig::default(),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The command-line flag that sets it.
    pub flag: &'static str,
    /// What is wrong and what would do.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{} {}", self.flag, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks every setting and applies the corrections the server relies
    /// on; returns the settings the server will run with. Warnings (legal
    /// but risky values) are logged.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        if self.max_frame < MIN_MAX_FRAME {
            return Err(ConfigError {
                flag: "max-frame",
                problem: format!(
                    "must be at least {MIN_MAX_FRAME}, so that every answer and ERROR fits in a frame; not {}",
                    self.max_frame
                ),
            });
        }
        for (flag, value) in [
            ("idle-timeout", self.idle_timeout),
            ("write-timeout", self.write_timeout),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                return Err(ConfigError {
                    flag,
                    problem: format!(
                        "must be above 0 and at most {} seconds, not {}",
                        MAX_TIMEOUT.as_secs(),
                        value.as_secs_f64()
                    ),
                });
            }
        }
        if let Some(tls) = &self.tls
            && (tls.handshake_timeout.is_zero() || tls.handshake_timeout > MAX_TIMEOUT)
        {
            return Err(ConfigError {
                flag: "tls-handshake-timeout",
                problem: format!(
                    "must be above 0 and at most {} seconds, not {}",
                    MAX_TIMEOUT.as_secs(),
                    tls.handshake_timeout.as_secs_f64()
                ),
            });
        }
        if self.stall_timeout > MAX_TIMEOUT {
            return Err(ConfigError {
                flag: "stall-timeout-ms",
                problem: format!("must be at most {} ms", MAX_TIMEOUT.as_millis()),
            });
        }
        // With fewer than 2 entries, every push would wait for the writer
        // to take the previous batch, and batching would be lost.
        self.queue_items = self.queue_items.max(2);
        self.queue_bytes = self.queue_bytes.max(2 * self.max_frame as usize);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_unchanged() {
        let config = Config::default().validate().unwrap();
        assert_eq!(config.queue_items, 64);
        assert_eq!(config.queue_bytes, 4 << 20);
    }

    #[test]
    fn a_queue_too_small_for_two_frames_is_raised() {
        let config = Config {
            queue_items: 0,
            queue_bytes: 10,
            max_frame: 5000,
            ..Config::default()
        }
        .validate()
        .unwrap();
        assert_eq!(config.queue_items, 2);
        assert_eq!(config.queue_bytes, 10_000);
    }

    #[test]
    fn impossible_values_name_their_flag() {
        let zero = Config {
            idle_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(zero.validate().unwrap_err().flag, "idle-timeout");
        let tiny = Config {
            max_frame: 2,
            ..Config::default()
        };
        let error = tiny.validate().unwrap_err();
        assert_eq!(error.flag, "max-frame");
        assert!(
            error
                .to_string()
                .starts_with("--max-frame must be at least 1024")
        );
        let small = Config {
            max_frame: MIN_MAX_FRAME - 1,
            ..Config::default()
        };
        assert_eq!(small.validate().unwrap_err().flag, "max-frame");
        let long = Config {
            stall_timeout: MAX_TIMEOUT * 2,
            ..Config::default()
        };
        assert_eq!(long.validate().unwrap_err().flag, "stall-timeout-ms");
    }
}
