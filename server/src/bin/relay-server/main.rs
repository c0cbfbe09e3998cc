//! `relay-server`: the relay as a program. Flags, logging and signals live
//! here; everything else is the library.
//!
//! - `listen`: listen addresses as people type them.
//! - `names`: a setting named as the user gave it (flag or variable).
//! - `hangup`: what SIGHUP means (reload, or stop when the terminal closed).

mod hangup;
mod listen;
mod names;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use server::auth::JwtVerifier;
use server::auth::jwt::MIN_SECRET_LEN;

use self::listen::ListenAddr;
use self::names::Names;

/// Relay: a TCP message relay with rooms (protocol: SPEC.md).
#[derive(Debug, Parser)]
#[command(name = "relay-server", version, about)]
struct Args {
    /// Address to listen on: HOST:PORT, [::1]:4000, a bare PORT (on
    /// 127.0.0.1), a host name, or relay://HOST:PORT. Use 0.0.0.0:4000 to
    /// accept other machines.
    #[arg(long, env = "RELAY_ADDR", default_value = "127.0.0.1:4000", value_parser = listen::parse)]
    addr: ListenAddr,
    /// The port to listen on, when --addr gives none (--addr 0.0.0.0
    /// --port 4100).
    #[arg(long, env = "RELAY_PORT")]
    port: Option<u16>,
    /// Connections beyond this are refused with SERVER_FULL (at least 1).
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Largest frame accepted, in bytes (the frame's length field): from
    /// 1024 to 67108864 (64 MiB; each frame is held whole while relayed).
    #[arg(long, env = "RELAY_MAX_FRAME", default_value_t = protocol::DEFAULT_MAX_FRAME)]
    max_frame: u32,
    /// Seconds without a complete frame before IDLE_TIMEOUT.
    #[arg(long, env = "RELAY_IDLE_TIMEOUT", default_value_t = 60.0)]
    idle_timeout: f64,
    /// Seconds a write may make no progress before the connection is abandoned.
    #[arg(long, env = "RELAY_WRITE_TIMEOUT", default_value_t = 30.0)]
    write_timeout: f64,
    /// Milliseconds a publisher waits for a member with a full queue before
    /// cutting it off with SLOW_CONSUMER.
    #[arg(long, env = "RELAY_STALL_TIMEOUT_MS", default_value_t = 500)]
    stall_timeout_ms: u64,
    /// Rooms one connection may be in at once (at least 1).
    #[arg(long, env = "RELAY_MAX_ROOMS", default_value_t = 1000)]
    max_rooms: usize,
    /// Bytes a connection's outbound queue may hold.
    #[arg(long, env = "RELAY_QUEUE_BYTES", default_value_t = 4 << 20)]
    queue_bytes: usize,
    /// Entries (batches of frames) a connection's outbound queue may hold.
    #[arg(long, env = "RELAY_QUEUE_FRAMES", default_value_t = 64)]
    queue_frames: usize,
    /// Frames a second one connection may send (HELLO and HEARTBEAT
    /// included); more is refused with RATE_LIMITED. 0 turns the limit off.
    /// The default is far above what one client reaches here.
    #[arg(long, env = "RELAY_RATE_FRAMES", default_value_t = server::RateLimits::default().frames_per_sec)]
    rate_frames: u64,
    /// Bytes a second one connection may send (whole frames, length
    /// prefix included); more is refused with RATE_LIMITED. 0 turns the
    /// limit off.
    #[arg(long, env = "RELAY_RATE_BYTES", default_value_t = server::RateLimits::default().bytes_per_sec)]
    rate_bytes: u64,
    /// Seconds of each rate a quiet connection may save up and send at once.
    #[arg(long, env = "RELAY_RATE_BURST", default_value_t = server::RateLimits::default().burst.as_secs_f64())]
    rate_burst: f64,
    /// Connections one IP address may hold at once; more are refused with
    /// SERVER_FULL. 0 (the default) is no limit.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    max_connections_per_ip: usize,
    /// Rooms that may exist at once, server-wide; a JOIN that would create
    /// one more gets INVALID_ROOM.
    #[arg(long, env = "RELAY_MAX_TOTAL_ROOMS", default_value_t = server::Budget::default().max_rooms)]
    max_total_rooms: usize,
    /// Memberships (one connection in one room) at once, server-wide; a
    /// JOIN past it gets INVALID_ROOM.
    #[arg(long, env = "RELAY_MAX_MEMBERSHIPS", default_value_t = server::Budget::default().max_memberships)]
    max_memberships: usize,
    /// Bytes the server may hold for clients: queued output, partially
    /// received frames and room state together, e.g. 512M or 2G. Past it
    /// new connections get SERVER_FULL and the heaviest are cut with
    /// OVERLOADED. Default: half the machine's memory, at most 16G; more
    /// than the machine has is refused.
    #[arg(long, env = "RELAY_MEMORY_BUDGET", value_parser = server::parse_bytes)]
    memory_budget: Option<u64>,
    /// Messages each room keeps for members that come back (JOIN_ROOM with
    /// "since" or "history"); 0, the default, keeps none. Kept messages
    /// count against --memory-budget.
    #[arg(long, env = "RELAY_HISTORY_MESSAGES", default_value_t = 0)]
    history_messages: usize,
    /// Bytes of messages each room keeps at most, e.g. 256K (with
    /// --history-messages).
    #[arg(long, env = "RELAY_HISTORY_BYTES", value_parser = server::parse_bytes, default_value = "1M")]
    history_bytes: u64,
    /// Seconds a kept message stays at most; 0, the default, is no age
    /// limit.
    #[arg(long, env = "RELAY_HISTORY_SECONDS", default_value_t = 0.0)]
    history_seconds: f64,
    /// Rooms with more members than this send membership changes as one
    /// "members" notice per --member-events-interval-ms to the clients
    /// that asked for it in HELLO ("memberEvents":"batched"); others
    /// still get one event per change.
    #[arg(long, env = "RELAY_MEMBER_EVENTS_BATCH_ABOVE", default_value_t = 100)]
    member_events_batch_above: usize,
    /// How often a big room's batched membership changes are sent, in
    /// milliseconds (10 to 60000).
    #[arg(long, env = "RELAY_MEMBER_EVENTS_INTERVAL_MS", default_value_t = 1000)]
    member_events_interval_ms: u64,
    /// Also listen for TLS here (needs --tls-cert and --tls-key); the plain
    /// --addr port keeps working beside it.
    #[arg(long, env = "RELAY_TLS_ADDR")]
    tls_addr: Option<SocketAddr>,
    /// Serve /metrics, /healthz, /readyz, /connz, /roomz and the chat page
    /// (at /) over HTTP here (for example 127.0.0.1:8080); off by default.
    /// Keep it private: it lists who is connected.
    #[arg(long, env = "RELAY_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// Share rooms with other Relay nodes through Redis at this URL
    /// (redis://HOST:PORT); off by default.
    #[arg(long, env = "RELAY_CLUSTER", value_name = "URL")]
    cluster: Option<String>,
    /// This node's name in the cluster (letters, digits, '.', '_', '-',
    /// ':'; at most 64 bytes), unique among live nodes. Default: the host
    /// name and the process id.
    #[arg(long, env = "RELAY_NODE_ID", requires = "cluster")]
    node_id: Option<String>,
    /// Seconds after its last heartbeat that a node's members leave the
    /// cluster's presence (when it dies without a word).
    #[arg(
        long,
        env = "RELAY_CLUSTER_PRESENCE_TTL",
        default_value_t = 15.0,
        requires = "cluster"
    )]
    cluster_presence_ttl: f64,
    /// Bytes of batches that may wait for Redis, e.g. 16M; past it they
    /// are dropped and the other nodes' members get gap notices.
    #[arg(long, env = "RELAY_CLUSTER_QUEUE_BYTES", value_parser = server::parse_bytes, default_value = "16M", requires = "cluster")]
    cluster_queue_bytes: u64,
    /// How a room's messages are ordered across nodes: publisher (each
    /// node numbers its own rooms; no wait for Redis) or room (one order
    /// and one seq per room on every node, at a Redis round trip per
    /// publish). Every node of a cluster must use the same.
    #[arg(long, env = "RELAY_CLUSTER_ORDER", value_name = "MODE", default_value = "publisher", requires = "cluster", value_parser = |s: &str| s.parse::<server::ClusterOrder>())]
    cluster_order: server::ClusterOrder,
    /// Also serve WebSocket here, for browsers (SPEC.md 13): one Relay
    /// frame per binary message, at path / (or /ws). Over TLS (wss://)
    /// when the --tls-* flags are given, with the same certificate.
    #[arg(long, env = "RELAY_WS_ADDR")]
    ws_addr: Option<SocketAddr>,
    /// Web pages allowed to open WebSocket connections: comma-separated
    /// origins (https://chat.example.com), or * for any. Default: pages
    /// from the host the client connected to, on any port. Clients that
    /// send no Origin (programs, not browsers) are always allowed.
    #[arg(long, env = "RELAY_WS_ALLOWED_ORIGINS", value_name = "ORIGINS", value_parser = |s: &str| s.parse::<server::Origins>())]
    ws_allowed_origins: Option<server::Origins>,
    /// Seconds a WebSocket upgrade request may take to arrive.
    #[arg(long, env = "RELAY_WS_HANDSHAKE_TIMEOUT", default_value_t = 10.0)]
    ws_handshake_timeout: f64,
    /// PEM certificate chain for the TLS port, leaf first. Reread on SIGHUP.
    #[arg(long, env = "RELAY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate. Reread on SIGHUP.
    #[arg(long, env = "RELAY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): TLS clients must show a certificate they
    /// signed (mutual TLS). Reread on SIGHUP.
    #[arg(long, env = "RELAY_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Seconds a TLS handshake may take before the connection is cut.
    #[arg(long, env = "RELAY_TLS_HANDSHAKE_TIMEOUT", default_value_t = 10.0)]
    tls_handshake_timeout: f64,
    /// Static tokens for services, one per line: TOKEN USER
    /// [join=PATTERNS] [publish=PATTERNS] (SPEC.md 11.1). Turns
    /// authentication on. Reread on SIGHUP.
    #[arg(long, env = "RELAY_AUTH_TOKENS", value_name = "FILE")]
    auth_tokens: Option<PathBuf>,
    /// Shared secret for HS256 JWTs (at least 32 bytes). Turns
    /// authentication on. Prefer the environment variable: a flag shows in
    /// the process list.
    #[arg(
        long,
        env = "RELAY_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// A file holding the HS256 secret (one trailing newline is not part
    /// of it), in place of --jwt-secret: kept out of the environment too,
    /// and reread on SIGHUP.
    #[arg(
        long,
        env = "RELAY_JWT_SECRET_FILE",
        value_name = "FILE",
        conflicts_with = "jwt_secret"
    )]
    jwt_secret_file: Option<PathBuf>,
    /// Public key (PEM) for signed JWTs: RSA (RS256), EC P-256 (ES256) or
    /// Ed25519 (EdDSA). Turns authentication on. Reread on SIGHUP.
    #[arg(long, env = "RELAY_JWT_PUBLIC_KEY", value_name = "FILE")]
    jwt_public_key: Option<PathBuf>,
    /// The algorithm of --jwt-public-key, when not the key's default:
    /// RS384, RS512, PS256, PS384, PS512 or ES384.
    #[arg(long, env = "RELAY_JWT_ALGORITHM", requires = "jwt_public_key")]
    jwt_algorithm: Option<String>,
    /// Seconds of clock skew allowed on a JWT's exp and nbf.
    #[arg(long, env = "RELAY_JWT_LEEWAY", default_value_t = server::auth::jwt::DEFAULT_LEEWAY_SECS)]
    jwt_leeway: u64,
    /// Which lines to log, RUST_LOG style: a level (error, warn, info,
    /// debug, trace) and per-module levels, e.g. `warn,server::conn=debug`.
    /// RUST_LOG is read when this is not given.
    #[arg(
        long = "log",
        env = "RUST_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    log_filter: String,
    /// A file holding the log filter (its first line that is not blank or
    /// a `#` comment): used instead of --log, and read again on SIGHUP, so
    /// a running server's filter can be changed.
    #[arg(long, env = "RELAY_LOG_FILTER_FILE", value_name = "FILE")]
    log_filter_file: Option<PathBuf>,
    /// human (the default), or json: one object a line for log shippers.
    #[arg(
        long,
        env = "RELAY_LOG_FORMAT",
        default_value = "human",
        value_name = "FORMAT"
    )]
    log_format: server::logging::Format,
    /// Seconds over which SIGTERM's lame-duck drain spreads the
    /// SHUTTING_DOWN closes, so clients do not all reconnect at once; 0
    /// closes everyone together. A second SIGTERM or SIGINT exits at once.
    #[arg(long, env = "RELAY_DRAIN_TIMEOUT", default_value_t = server::Config::DEFAULT_DRAIN_TIMEOUT.as_secs_f64())]
    drain_timeout: f64,
    /// Log every frame, with a preview of its first 64 payload bytes (a
    /// HELLO's is never shown: it may hold a token), and every state
    /// transition; the same as --log debug. RELAY_DEBUG=1 does the same.
    #[arg(long)]
    debug: bool,
}

/// RELAY_DEBUG: on, off, or a value that is neither (warned about once the
/// log is up, and taken as off).
fn relay_debug() -> Result<bool, String> {
    let Some(value) = std::env::var_os("RELAY_DEBUG") else {
        return Ok(false);
    };
    let value = value.to_string_lossy();
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "RELAY_DEBUG={value:?} is not understood, so debug logging stays off; use 1 (on) or 0 (off)"
        )),
    }
}

/// Seconds from the command line; the range is checked by
/// `Config::validate`, this only refuses what is not a duration at all.
fn seconds(value: f64, flag: &str, names: &Names<'_>) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        format!(
            "{} must be a number of seconds above 0, not {value}",
            names.of(flag)
        )
    })
}

/// The TLS port's settings: all of --tls-addr, --tls-cert and --tls-key, or
/// none of them.
fn tls(args: &Args, names: &Names<'_>) -> Result<Option<Box<server::TlsConfig>>, String> {
    let handshake_timeout = seconds(args.tls_handshake_timeout, "tls-handshake-timeout", names)?;
    match (&args.tls_addr, &args.tls_cert, &args.tls_key) {
        (None, None, None) if args.tls_client_ca.is_none() => Ok(None),
        (Some(addr), Some(cert), Some(key)) => Ok(Some(Box::new(server::TlsConfig {
            addr: *addr,
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
            handshake_timeout,
        }))),
        _ => Err(
            "--tls-addr, --tls-cert and --tls-key go together (--tls-client-ca needs them too); give all three for a TLS port, or none"
                .into(),
        ),
    }
}

/// The WebSocket listener's settings, when --ws-addr is given.
fn ws(args: &Args, names: &Names<'_>) -> Result<Option<Box<server::WsConfig>>, String> {
    let handshake_timeout = seconds(args.ws_handshake_timeout, "ws-handshake-timeout", names)?;
    match args.ws_addr {
        Some(addr) => Ok(Some(Box::new(server::WsConfig {
            allowed_origins: args.ws_allowed_origins.clone().unwrap_or_default(),
            handshake_timeout,
            ..server::WsConfig::new(addr)
        }))),
        None if args.ws_allowed_origins.is_some() => {
            Err("--ws-allowed-origins needs --ws-addr, the WebSocket port it applies to".into())
        }
        None => Ok(None),
    }
}

/// Authentication from the flags; a file or key that cannot be used is an
/// error that names it (never a token or the secret).
fn auth(args: &Args) -> Result<server::auth::AuthConfig, String> {
    use server::auth::TokenTable;
    let tokens = match &args.auth_tokens {
        Some(path) => Some(TokenTable::load(path).map_err(|error| error.to_string())?),
        None => None,
    };
    let jwt = JwtSources::of(args).build()?;
    Ok(server::auth::AuthConfig { tokens, jwt })
}

/// Where the JWT keys come from: read at start, and again on SIGHUP.
#[derive(Debug, Clone)]
struct JwtSources {
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    public_key: Option<PathBuf>,
    algorithm: Option<String>,
    leeway: u64,
}

impl JwtSources {
    fn of(args: &Args) -> JwtSources {
        JwtSources {
            secret: args.jwt_secret.clone(),
            secret_file: args.jwt_secret_file.clone(),
            public_key: args.jwt_public_key.clone(),
            algorithm: args.jwt_algorithm.clone(),
            leeway: args.jwt_leeway,
        }
    }

    /// Whether a SIGHUP has anything to reread (a secret given as a value
    /// cannot change).
    fn has_files(&self) -> bool {
        self.secret_file.is_some() || self.public_key.is_some()
    }

    /// The verifier these sources make, `None` without JWTs; an error
    /// names the flag and the file, never the secret.
    fn build(&self) -> Result<Option<JwtVerifier>, String> {
        let secret = match (&self.secret, &self.secret_file) {
            (Some(secret), _) => Some((secret.as_bytes().to_vec(), "--jwt-secret".to_owned())),
            (None, Some(path)) => Some((
                read_secret(path)?,
                format!("--jwt-secret-file {}", path.display()),
            )),
            (None, None) => None,
        };
        let mut jwt = None;
        if let Some((secret, flag)) = secret {
            if secret.is_empty() {
                return Err(format!(
                    "{flag} is empty; give a random secret of at least {MIN_SECRET_LEN} bytes"
                ));
            }
            if secret.len() < MIN_SECRET_LEN {
                tracing::warn!(
                    "{flag} is {} bytes; use at least {MIN_SECRET_LEN} random bytes, or it can be guessed",
                    secret.len()
                );
            }
            jwt = Some(JwtVerifier::new(self.leeway).with_secret(&secret));
        }
        if let Some(path) = &self.public_key {
            let verifier = jwt.unwrap_or_else(|| JwtVerifier::new(self.leeway));
            jwt = Some(
                verifier
                    .with_public_key_file(path, self.algorithm.as_deref())
                    .map_err(|error| error.to_string())?,
            );
        }
        Ok(jwt)
    }
}

/// The secret in a `--jwt-secret-file`, without the newline that ends the
/// file.
fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut secret = std::fs::read(path)
        .map_err(|error| format!("--jwt-secret-file {}: {error}", path.display()))?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    Ok(secret)
}

/// The address to listen on, from --addr and --port.
fn listen_addr(args: &Args, names: &Names<'_>) -> Result<SocketAddr, String> {
    let mut addr = args.addr.addr;
    match args.port {
        Some(_) if args.addr.port_given => Err(format!(
            "{} already names a port; give it there or with {}, not both",
            names.of("addr"),
            names.of("port")
        )),
        Some(port) => {
            addr.set_port(port);
            Ok(addr)
        }
        None => Ok(addr),
    }
}

fn config(args: &Args, names: &Names<'_>) -> Result<server::Config, String> {
    let config = server::Config {
        addr: listen_addr(args, names)?,
        max_connections: args.max_connections,
        max_frame: args.max_frame,
        idle_timeout: seconds(args.idle_timeout, "idle-timeout", names)?,
        write_timeout: seconds(args.write_timeout, "write-timeout", names)?,
        stall_timeout: Duration::from_millis(args.stall_timeout_ms),
        max_rooms_per_connection: args.max_rooms,
        queue_items: args.queue_frames,
        queue_bytes: args.queue_bytes,
        rates: server::RateLimits::new(
            args.rate_frames,
            args.rate_bytes,
            seconds(args.rate_burst, "rate-burst", names)?,
        ),
        max_connections_per_ip: args.max_connections_per_ip,
        http_addr: args.http_addr,
        budget: server::Budget {
            max_rooms: args.max_total_rooms,
            max_memberships: args.max_memberships,
            memory: args.memory_budget,
        },
        tls: tls(args, names)?,
        ws: ws(args, names)?,
        auth: auth(args)?,
        drain_timeout: if args.drain_timeout == 0.0 {
            Duration::ZERO
        } else {
            seconds(args.drain_timeout, "drain-timeout", names)?
        },
        history: server::HistoryLimits {
            messages: args.history_messages,
            bytes: usize::try_from(args.history_bytes).unwrap_or(usize::MAX),
            max_age: if args.history_seconds == 0.0 {
                None
            } else {
                Some(seconds(args.history_seconds, "history-seconds", names)?)
            },
        },
        member_batching: server::MemberBatching {
            above: args.member_events_batch_above,
            interval: Duration::from_millis(args.member_events_interval_ms),
        },
        cluster: match &args.cluster {
            Some(url) => Some(server::ClusterConfig {
                url: url.clone(),
                node_id: args.node_id.clone().unwrap_or_else(server::default_node_id),
                presence_ttl: seconds(args.cluster_presence_ttl, "cluster-presence-ttl", names)?,
                queue_bytes: usize::try_from(args.cluster_queue_bytes).unwrap_or(usize::MAX),
                order: args.cluster_order,
            }),
            None => None,
        },
    };
    config
        .validate()
        .map_err(|error| format!("{} {}", names.of(error.flag), error.problem))
}

/// What SIGHUP rereads: the TLS files and the tokens file, each kept as
/// it was if its new version cannot be used.
struct Reload {
    tls: Option<server::TlsReloader>,
    /// The `--auth-tokens` file and the table the server reads (a clone
    /// shares its tokens).
    tokens: Option<(PathBuf, server::auth::TokenTable)>,
    /// `--log-filter-file`.
    log_filter: Option<PathBuf>,
    /// The JWT keys' sources and the verifier the server reads (a clone
    /// shares its keys).
    jwt: Option<(JwtSources, JwtVerifier)>,
}

/// The filter in a `--log-filter-file`.
fn read_filter(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("--log-filter-file {}: {error}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| format!("--log-filter-file {}: no filter in it", path.display()))
}

impl Reload {
    /// Rereads everything; every outcome is logged, and nothing here ends
    /// the server.
    fn run(&self) {
        tracing::info!("SIGHUP received; reloading");
        match &self.tls {
            None => tracing::info!("reload: no TLS port; no certificate to reload"),
            Some(reloader) => match reloader.reload() {
                Ok(()) => tracing::info!(
                    "reload: TLS certificate reloaded: new connections use it, open ones keep theirs"
                ),
                Err(error) => tracing::error!(
                    "reload: TLS reload failed, keeping the certificate in force: {error}"
                ),
            },
        }
        if let Some((path, table)) = &self.tokens {
            match server::auth::TokenTable::load(path) {
                Ok(new) => {
                    table.replace(&new);
                    tracing::info!(
                        "reload: {} tokens from {}: new HELLOs use them, open connections keep who they are",
                        new.len(),
                        path.display()
                    );
                }
                Err(error) => tracing::error!(
                    "reload: tokens file refused, keeping the {} tokens in force: {error}",
                    table.len()
                ),
            }
        }
        if let Some((sources, verifier)) = &self.jwt {
            if !sources.has_files() {
                tracing::info!(
                    "reload: the JWT secret was given as a value; nothing to reread (--jwt-secret-file is reread)"
                );
            } else {
                match sources.build() {
                    Ok(Some(new)) => {
                        verifier.replace(&new);
                        tracing::info!(
                            "reload: JWT keys reread ({:?}): new HELLOs use them, open connections keep who they are",
                            new.algorithms()
                        );
                    }
                    // The sources are the ones that made a verifier at start.
                    Ok(None) => {}
                    Err(error) => tracing::error!(
                        "reload: JWT keys refused, keeping the keys in force: {error}"
                    ),
                }
            }
        }
        if let Some(path) = &self.log_filter {
            match read_filter(path)
                .and_then(|filter| server::logging::reload_filter(&filter).map(|()| filter))
            {
                Ok(filter) => tracing::warn!("reload: log filter is now {filter:?}"),
                Err(error) => {
                    tracing::error!("reload: log filter refused, keeping the one in force: {error}")
                }
            }
        }
    }
}

/// Says at start who may connect, so an open server is never a surprise.
fn log_auth(args: &Args) {
    let jwt = JwtSources::of(args);
    let jwt_on = jwt.secret.is_some() || jwt.has_files();
    if args.auth_tokens.is_none() && !jwt_on {
        tracing::warn!(
            "authentication is off: anyone who can reach this port may join any room under any name; see --auth-tokens and --jwt-secret"
        );
        return;
    }
    if let Some(path) = &args.auth_tokens {
        tracing::info!("authentication: static tokens from {}", path.display());
    }
    if jwt_on {
        tracing::info!("authentication: JWTs, {} s leeway", args.jwt_leeway);
    }
}

fn main() -> ExitCode {
    let command = Args::command();
    let argv: Vec<String> = std::env::args().collect();
    let matches = match command.clone().try_get_matches() {
        Ok(matches) => matches,
        Err(error) => {
            if let Some(message) = names::env_error(&command, &error, &argv) {
                eprintln!("{message}");
                return ExitCode::from(2);
            }
            error.exit();
        }
    };
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    let names = Names {
        command: &command,
        matches: &matches,
    };
    // Before any thread exists (the log writer is the first), so every
    // thread inherits the mask.
    let signals = server::Signals::block();
    let started_on_terminal = hangup::has_terminal();
    let (env_debug, env_debug_warning) = match relay_debug() {
        Ok(on) => (on, None),
        Err(warning) => (false, Some(warning)),
    };
    let debug = args.debug || env_debug;
    let from_file = match args.log_filter_file.as_deref().map(read_filter) {
        Some(Err(error)) => {
            eprintln!("relay: {error}");
            return ExitCode::from(2);
        }
        Some(Ok(filter)) => Some(filter),
        None => None,
    };
    let filter = match (&from_file, debug) {
        (_, true) => "debug",
        (Some(filter), false) => filter.as_str(),
        (None, false) => args.log_filter.as_str(),
    };
    // Flushes on every return below, so the last lines reach stderr.
    let _log = match server::logging::init(filter, args.log_format) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("relay: {error}");
            return ExitCode::from(2);
        }
    };
    let config = match config(&args, &names) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("relay: {error}");
            return ExitCode::from(2);
        }
    };
    // Clones share the server's tokens and JWT keys, so SIGHUP can
    // replace them.
    let tokens = config.auth.tokens.clone();
    let jwt = config.auth.jwt.clone();
    let server = match server::Server::bind(config) {
        Ok(server) => server,
        // A setting checked against the machine (the memory budget), or a
        // TLS file that cannot work; the message names it.
        Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("relay: {error}");
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!(
                "relay: cannot listen on {}: {error}; is another server using it?",
                args.addr.addr
            );
            return ExitCode::FAILURE;
        }
    };
    // Once bound: a start that fails prints its error alone.
    tracing::info!(
        "relay-server {} (protocol v1) started",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(warning) = env_debug_warning {
        tracing::warn!("{warning}");
    }
    if args.max_frame > 16 * 1024 * 1024 {
        tracing::warn!(
            "{} is {} bytes: one client may make the server hold that much for each frame it sends; most deployments need 1 MiB",
            names.of("max-frame"),
            args.max_frame
        );
    }
    let handle = server.shutdown_handle();
    let reload = Reload {
        tls: server.tls_reloader(),
        tokens: args.auth_tokens.clone().zip(tokens),
        log_filter: args.log_filter_file.clone(),
        jwt: jwt.map(|verifier| (JwtSources::of(&args), verifier)),
    };
    let drain_timeout = args.drain_timeout;
    let spawned = std::thread::Builder::new()
        .name("relay-signals".into())
        .spawn(move || {
            let mut stopping = false;
            loop {
                let signal = signals.wait();
                let hangup = match signal {
                    server::Signal::Hangup => Some(hangup::decide(started_on_terminal)),
                    _ => None,
                };
                match (signal, hangup) {
                    (_, Some(hangup::Hangup::Reload)) => reload.run(),
                    _ if stopping => {
                        tracing::warn!("{signal} received again; exiting at once");
                        server::logging::flush();
                        std::process::exit(130)
                    }
                    _ => {
                        let why = if hangup.is_some() {
                            " (the terminal the server was started at has closed)"
                        } else {
                            ""
                        };
                        tracing::info!(
                            "{signal} received{why}; draining: no new connections, closing the open ones over {drain_timeout} s (send it again to exit at once)"
                        );
                        handle.drain();
                        stopping = true;
                    }
                }
            }
        });
    if let Err(error) = spawned {
        eprintln!("relay: cannot start the signal thread: {error}");
        return ExitCode::FAILURE;
    }
    println!("listening on {}", server.local_addr());
    if let Some(addr) = server.tls_addr() {
        println!("listening for TLS on {addr}");
    }
    if let Some(addr) = server.ws_addr() {
        if server.ws_tls() {
            println!("ws listening for TLS on {addr}");
        } else {
            println!("ws listening on {addr}");
        }
    }
    if let Some(addr) = server.http_addr() {
        println!("http listening on {addr}");
    }
    log_auth(&args);
    tracing::info!(
        "accepting up to {} connections, frames up to {} bytes, {} rooms and {} memberships in all, a memory budget of {} bytes",
        server.max_connections(),
        args.max_frame,
        args.max_total_rooms,
        args.max_memberships,
        server.memory_budget()
    );
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relay: {error}");
            ExitCode::FAILURE
        }
    }
}
