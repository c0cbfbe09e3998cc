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
/// The largest `max_frame`: 64 MiB. A frame is held whole while it is
/// relayed, and one frame of 256 MiB took the server to a 515 MiB peak, so a
/// larger limit lets one client take that much memory with one frame. Large
/// files belong in object storage, with their address in a message.
pub const MAX_MAX_FRAME: u32 = 64 * 1024 * 1024;

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
    /// Per-connection limits on what a client sends (RATE_LIMITED).
    pub rates: RateLimits,
    /// Connections one IP address may hold at once; 0 is no limit. Off by
    /// default: the benches open thousands of connections from 127.0.0.1,
    /// and behind a NAT or a proxy many honest clients share one address,
    /// so only the operator knows a fitting number.
    pub max_connections_per_ip: usize,
    /// What all clients together may make the server hold.
    pub budget: Budget,
    /// A second listener that speaks TLS (SPEC.md 11.3); `None` for plain
    /// TCP only. Boxed: it is rarely there, and `Config` is passed by value.
    pub tls: Option<Box<TlsConfig>>,
    /// A WebSocket listener (SPEC.md 14), for browsers; `None`, the
    /// default, serves none. Over TLS (WSS) when [`Config::tls`] is set,
    /// with the same certificate. Boxed like `tls`.
    pub ws: Option<Box<WsConfig>>,
    /// Who may connect, and what they may do (SPEC.md 11.1, 11.2); off by
    /// default: anyone, under any name, anywhere.
    pub auth: AuthConfig,
    /// Where to serve `/metrics`, `/healthz`, `/readyz`, `/connz` and
    /// `/roomz` (SPEC.md 12); `None`, the default, serves nothing. Bind it
    /// to a private address: it shows who is connected.
    pub http_addr: Option<SocketAddr>,
    /// A lame-duck drain (SIGTERM, [`ShutdownHandle::drain`](crate::ShutdownHandle::drain))
    /// spreads its SHUTTING_DOWN closes over this long, so that clients do
    /// not all reconnect at the same moment (`--drain-timeout`). 0 closes
    /// everyone at once.
    pub drain_timeout: Duration,
    /// What each room keeps of its past messages for members that come
    /// back (SPEC.md 5.11); nothing by default.
    pub history: crate::HistoryLimits,
    /// Rooms shared with other nodes through Redis (SPEC.md 14); `None`,
    /// the default, serves this node's clients alone.
    pub cluster: Option<crate::ClusterConfig>,
}

impl Config {
    /// The default `--drain-timeout`: long enough to spread thousands of
    /// reconnects, short enough for a service manager's stop timeout
    /// (systemd's default is 90 s).
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
}

/// How fast one connection may send: token buckets for frames and for
/// bytes, each refilling at its rate and holding `burst` worth of it. A
/// limit of 0 is off.
///
/// The defaults are generous on purpose: they sit well above what one
/// client pushes through its connection's reader thread here. Measured
/// with `relay-stress bench` on a 2-core machine, the busiest publisher
/// reached 4.2 M frames/s (fan-out 1→1, 109-byte frames) and 1.1 GB/s
/// (fan-out 1→1, 4 KiB content); the defaults are about 2.4 times both,
/// and a burst of 2 s holds 100 times the bench's 200,000-message run. So
/// they never touch normal use or a benchmark, and bound only a client on
/// a much faster machine; an operator facing untrusted clients sets them
/// to the application's needs (a chat: `--rate-frames 100 --rate-bytes
/// 1048576`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Frames a second (`--rate-frames`); 0 is no limit.
    pub frames_per_sec: u64,
    /// Bytes a second, counted on the wire with each frame's 4-byte length
    /// (`--rate-bytes`); 0 is no limit.
    pub bytes_per_sec: u64,
    /// How much of each rate a quiet client may save up and spend at once
    /// (`--rate-burst`, seconds). The byte bucket always holds at least one
    /// frame of the maximum size, so every legal frame can pass.
    pub burst: Duration,
    /// The largest frame on the wire (`max_frame` + 4); set by
    /// [`Config::validate`].
    largest_frame: u64,
}

impl RateLimits {
    /// Limits of `frames_per_sec` and `bytes_per_sec` (0: off), each with
    /// `burst` worth of tokens.
    pub fn new(frames_per_sec: u64, bytes_per_sec: u64, burst: Duration) -> RateLimits {
        RateLimits {
            frames_per_sec,
            bytes_per_sec,
            burst,
            largest_frame: 0,
        }
    }

    /// No limits at all.
    pub fn off() -> RateLimits {
        RateLimits::new(0, 0, Duration::from_secs(1))
    }

    /// Frames the frame bucket holds: at least one.
    pub(crate) fn frame_capacity(&self) -> u64 {
        capacity(self.frames_per_sec, self.burst).max(1)
    }

    /// Bytes the byte bucket holds: at least one frame of the maximum size.
    pub(crate) fn byte_capacity(&self) -> u64 {
        capacity(self.bytes_per_sec, self.burst).max(self.largest_frame)
    }
}

fn capacity(rate: u64, burst: Duration) -> u64 {
    (u128::from(rate) * burst.as_nanos() / 1_000_000_000).min(u128::from(u64::MAX)) as u64
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::new(10_000_000, 5 << 29, Duration::from_secs(2))
    }
}

/// Server-wide bounds: what all connections together may hold, whatever
/// each one is allowed on its own. Without them, 4,000 connections each in
/// 1,000 rooms took the server to 1.35 GB, and 800 clients that never read
/// held 2.14 GB of queued output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Rooms that may exist at once; a JOIN that would create one more is
    /// refused with INVALID_ROOM.
    pub max_rooms: usize,
    /// Memberships (one connection in one room) at once; a JOIN past it is
    /// refused with INVALID_ROOM.
    pub max_memberships: usize,
    /// Bytes of queued output, partially received frames and room state
    /// together (SPEC.md 11.4). `None`: [`default_memory_budget`] of the
    /// machine's memory, decided when the server binds.
    pub memory: Option<u64>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_rooms: 500_000,
            max_memberships: 1_000_000,
            memory: None,
        }
    }
}

/// The smallest memory budget: below it a few maximum frames in flight
/// would have the server shedding all the time.
pub const MIN_MEMORY_BUDGET: u64 = 4 << 20;
/// The largest budget chosen on its own, whatever the machine.
pub const MAX_DEFAULT_MEMORY_BUDGET: u64 = 16 << 30;
/// The budget assumed when the machine's memory cannot be read.
pub const FALLBACK_MEMORY_BUDGET: u64 = 1 << 30;

/// The memory budget when none is set: half the machine's memory (the
/// other half is for the kernel's socket buffers, thread stacks and the
/// rest of the system), at most 16 GiB; 1 GiB if the memory is unknown.
pub fn default_memory_budget(physical: Option<u64>) -> u64 {
    physical.map_or(FALLBACK_MEMORY_BUDGET, |bytes| {
        (bytes / 2).clamp(MIN_MEMORY_BUDGET, MAX_DEFAULT_MEMORY_BUDGET)
    })
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

/// The WebSocket listener: where, and which web pages may connect.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Where to listen for WebSocket (`--ws-addr`). Port 0 picks a free
    /// port (see `Server::ws_addr`).
    pub addr: SocketAddr,
    /// Which `Origin`s may connect (`--ws-allowed-origins`).
    pub allowed_origins: crate::conn::ws::origin::Origins,
    /// The upgrade request must have arrived within this long
    /// (`--ws-handshake-timeout`; after the TLS handshake, for WSS), so a
    /// client that trickles headers holds its threads no longer.
    pub handshake_timeout: Duration,
}

impl WsConfig {
    /// The default `--ws-handshake-timeout`, as for TLS.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// A listener on `addr` with the default rules.
    pub fn new(addr: SocketAddr) -> WsConfig {
        WsConfig {
            addr,
            allowed_origins: crate::conn::ws::origin::Origins::default(),
            handshake_timeout: WsConfig::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
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
            rates: RateLimits::default(),
            max_connections_per_ip: 0,
            budget: Budget::default(),
            tls: None,
            ws: None,
            auth: AuthConfig::default(),
            http_addr: None,
            drain_timeout: Config::DEFAULT_DRAIN_TIMEOUT,
            history: crate::HistoryLimits::default(),
            cluster: None,
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
        if self.max_frame > MAX_MAX_FRAME {
            return Err(ConfigError {
                flag: "max-frame",
                problem: format!(
                    "must be at most {MAX_MAX_FRAME} (64 MiB), not {}: each frame is held whole in memory while it is relayed",
                    self.max_frame
                ),
            });
        }
        for (flag, value) in [
            ("max-connections", self.max_connections),
            ("max-rooms", self.max_rooms_per_connection),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    flag,
                    problem: if flag == "max-connections" {
                        "must be at least 1; with 0 every client would be refused".to_owned()
                    } else {
                        "must be at least 1; with 0 no client could join a room".to_owned()
                    },
                });
            }
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
        if let Some((flag, problem)) = self.cluster.as_ref().and_then(|c| c.problem()) {
            return Err(ConfigError { flag, problem });
        }
        if self.drain_timeout > MAX_TIMEOUT {
            return Err(ConfigError {
                flag: "drain-timeout",
                problem: format!(
                    "must be at most {} seconds, not {}",
                    MAX_TIMEOUT.as_secs(),
                    self.drain_timeout.as_secs_f64()
                ),
            });
        }
        if self.rates.burst.is_zero() || self.rates.burst > MAX_TIMEOUT {
            return Err(ConfigError {
                flag: "rate-burst",
                problem: format!(
                    "must be above 0 and at most {} seconds, not {}",
                    MAX_TIMEOUT.as_secs(),
                    self.rates.burst.as_secs_f64()
                ),
            });
        }
        self.rates.largest_frame = u64::from(self.max_frame) + protocol::LENGTH_PREFIX as u64;
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
        if self.history.messages > crate::HistoryLimits::MAX_MESSAGES {
            return Err(ConfigError {
                flag: "history-messages",
                problem: format!(
                    "must be at most {}, not {}",
                    crate::HistoryLimits::MAX_MESSAGES,
                    self.history.messages
                ),
            });
        }
        if self.history.bytes > crate::HistoryLimits::MAX_BYTES {
            return Err(ConfigError {
                flag: "history-bytes",
                problem: format!(
                    "must be at most {} (1G) per room, not {}",
                    crate::HistoryLimits::MAX_BYTES,
                    self.history.bytes
                ),
            });
        }
        if self.history.max_age.is_some_and(|age| age > MAX_TIMEOUT) {
            return Err(ConfigError {
                flag: "history-seconds",
                problem: format!("must be at most {} seconds", MAX_TIMEOUT.as_secs()),
            });
        }
        if let Some(ws) = &self.ws
            && (ws.handshake_timeout.is_zero() || ws.handshake_timeout > MAX_TIMEOUT)
        {
            return Err(ConfigError {
                flag: "ws-handshake-timeout",
                problem: format!(
                    "must be above 0 and at most {} seconds, not {}",
                    MAX_TIMEOUT.as_secs(),
                    ws.handshake_timeout.as_secs_f64()
                ),
            });
        }
        if self.stall_timeout > MAX_TIMEOUT {
            return Err(ConfigError {
                flag: "stall-timeout-ms",
                problem: format!("must be at most {} ms", MAX_TIMEOUT.as_millis()),
            });
        }
        for (flag, value) in [
            ("max-total-rooms", self.budget.max_rooms),
            ("max-memberships", self.budget.max_memberships),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    flag,
                    problem: "must be at least 1; no client could join a room".to_owned(),
                });
            }
        }
        if let Some(bytes) = self.budget.memory
            && bytes < MIN_MEMORY_BUDGET
        {
            return Err(ConfigError {
                flag: "memory-budget",
                problem: format!(
                    "must be at least {MIN_MEMORY_BUDGET} bytes (4M), not {bytes}; below that the server would shed all the time"
                ),
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
        let huge = Config {
            max_frame: u32::MAX,
            ..Config::default()
        };
        let error = huge.validate().unwrap_err();
        assert_eq!(error.flag, "max-frame");
        assert!(
            error.to_string().contains("at most 67108864 (64 MiB)"),
            "{error}"
        );
        let largest = Config {
            max_frame: MAX_MAX_FRAME,
            ..Config::default()
        };
        assert!(largest.validate().is_ok());
        let nobody = Config {
            max_connections: 0,
            ..Config::default()
        };
        assert_eq!(nobody.validate().unwrap_err().flag, "max-connections");
        let no_room = Config {
            max_rooms_per_connection: 0,
            ..Config::default()
        };
        assert_eq!(no_room.validate().unwrap_err().flag, "max-rooms");
        let long = Config {
            stall_timeout: MAX_TIMEOUT * 2,
            ..Config::default()
        };
        assert_eq!(long.validate().unwrap_err().flag, "stall-timeout-ms");
        let no_rooms = Config {
            budget: Budget {
                max_rooms: 0,
                ..Budget::default()
            },
            ..Config::default()
        };
        assert_eq!(no_rooms.validate().unwrap_err().flag, "max-total-rooms");
        let tiny_budget = Config {
            budget: Budget {
                memory: Some(1000),
                ..Budget::default()
            },
            ..Config::default()
        };
        assert_eq!(tiny_budget.validate().unwrap_err().flag, "memory-budget");
    }

    #[test]
    fn the_default_memory_budget_is_half_the_machine_within_bounds() {
        assert_eq!(default_memory_budget(Some(8 << 30)), 4 << 30);
        assert_eq!(default_memory_budget(Some(256 << 30)), 16 << 30);
        assert_eq!(default_memory_budget(Some(1 << 20)), MIN_MEMORY_BUDGET);
        assert_eq!(default_memory_budget(None), 1 << 30);
    }
}
