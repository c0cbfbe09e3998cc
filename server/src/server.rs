//! The accept loops (plain TCP, and TLS when configured, each on its own
//! thread), admission, and shutdown: the public [`Server`],
//! [`RunningServer`] and [`ShutdownHandle`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{Ordering, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::ErrorCode;

use crate::budget::{MEMBERSHIP_BYTES, ROOM_BYTES};
use crate::config::{Config, ConfigError, default_memory_budget};
use crate::conn::outbound::Batch;
use crate::conn::tls::Tls;
use crate::conn::transport::Tcp;
use crate::conn::ws::Ws;
use crate::counters::{Counters, Refusal};
use crate::http::HttpListener;
use crate::logging::{REFUSALS, throttled};
use crate::per_address::TooMany;
use crate::shared::{Shared, TlsListening, WsListening};
use crate::tls::{Certificates, TlsReloader};

/// After SHUTTING_DOWN, how long writers get to flush before sockets are cut.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// A bound server, not yet running.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    /// The TLS port's socket, when `Config::tls` asks for one.
    tls_listener: Option<TcpListener>,
    /// The WebSocket port's socket, when `Config::ws` asks for one.
    ws_listener: Option<TcpListener>,
    /// The HTTP endpoint, when `Config::http_addr` asks for one.
    http: Option<HttpListener>,
    shared: Arc<Shared>,
}

/// Which port a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Plain,
    Tls,
    /// WebSocket; over TLS when the server has a certificate.
    Ws,
}

/// A server running on a background thread. Dropping it shuts it down.
#[derive(Debug)]
pub struct RunningServer {
    shared: Arc<Shared>,
    http_addr: Option<SocketAddr>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// Stops a server from any thread (a signal handler thread, a test).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl Server {
    /// Validates `config` (see [`Config::validate`]), loads the TLS
    /// certificate files if any, binds the listening sockets and checks
    /// system limits. An invalid setting or unusable TLS file is an
    /// `InvalidInput` error whose message names its flag.
    pub fn bind(config: Config) -> io::Result<Server> {
        let invalid = |error| io::Error::new(io::ErrorKind::InvalidInput, error);
        let mut config = config.validate().map_err(invalid)?;
        let certificates = match &config.tls {
            Some(tls) => Some(
                Certificates::load(tls)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?,
            ),
            None => None,
        };
        if let Some(cluster) = &config.cluster {
            crate::cluster::room_order::check_mode(cluster)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        }
        // Last of the checks, since it logs the budget it settles on.
        config.budget.memory = Some(memory_budget(&config).map_err(invalid)?);
        let listener = TcpListener::bind(config.addr)?;
        let local_addr = listener.local_addr()?;
        let (tls_listener, tls) = match (&config.tls, certificates) {
            (Some(tls), Some(certificates)) => {
                let listener = TcpListener::bind(tls.addr).map_err(|error| {
                    io::Error::new(error.kind(), format!("--tls-addr {}: {error}", tls.addr))
                })?;
                let addr = listener.local_addr()?;
                let certificates = Arc::new(certificates);
                (Some(listener), Some(TlsListening { addr, certificates }))
            }
            _ => (None, None),
        };
        let (ws_listener, ws) = match &config.ws {
            Some(ws) => {
                let listener = TcpListener::bind(ws.addr).map_err(|error| {
                    io::Error::new(error.kind(), format!("--ws-addr {}: {error}", ws.addr))
                })?;
                let addr = listener.local_addr()?;
                let settings = Arc::new(crate::conn::ws::WsSettings {
                    origins: ws.allowed_origins.clone(),
                    handshake_timeout: ws.handshake_timeout,
                    max_frame: config.max_frame,
                });
                (Some(listener), Some(WsListening { addr, settings }))
            }
            None => (None, None),
        };
        let capacity = crate::sys::limits::check(config.max_connections);
        for warning in &capacity.warnings {
            tracing::warn!("{warning}");
        }
        let http = config.http_addr.map(HttpListener::bind).transpose()?;
        let shared = Shared::new(config, capacity.connections, local_addr)
            .with_tls(tls)
            .with_ws(ws);
        Ok(Server {
            listener,
            tls_listener,
            ws_listener,
            http,
            shared: Arc::new(shared),
        })
    }

    /// The plain TCP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The TLS address actually bound, if the server has a TLS port.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.shared.tls_addr()
    }

    /// The HTTP endpoint's address actually bound, if it has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpListener::addr)
    }

    /// The WebSocket address actually bound, if the server has one.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.shared.ws_addr()
    }

    /// Whether the WebSocket port speaks TLS (WSS): when the server has a
    /// certificate.
    pub fn ws_tls(&self) -> bool {
        self.shared.ws.is_some() && self.shared.tls.is_some()
    }

    /// Reloads the TLS files on request (SIGHUP in `relay-server`), if the
    /// server has a TLS port.
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.shared.tls_reloader()
    }

    /// Connections this server admits: `--max-connections`, capped by what
    /// the system allows.
    pub fn max_connections(&self) -> usize {
        self.shared.max_connections
    }

    /// The server's live counters.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.shared.counters)
    }

    /// The memory budget in bytes: `--memory-budget`, or the default
    /// derived from the machine's memory.
    pub fn memory_budget(&self) -> u64 {
        self.shared.counters.memory_budget()
    }

    /// A handle that stops this server from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until shut down; returns once every connection is closed (or
    /// was cut after the shutdown flush bound).
    pub fn run(self) -> io::Result<()> {
        start_housekeeping(&self.shared);
        start_notices(&self.shared);
        crate::cluster::threads::start(&self.shared);
        // Before the accept loops, so `/readyz` answers as soon as they run.
        let http = match self.http {
            Some(http) => Some(http.serve(&self.shared)?),
            None => None,
        };
        let tls_thread = match self.tls_listener {
            Some(listener) => {
                let shared = Arc::clone(&self.shared);
                Some(
                    std::thread::Builder::new()
                        .name("relay-accept-tls".into())
                        .spawn(move || accept_loop(&shared, listener, Port::Tls))?,
                )
            }
            None => None,
        };
        let ws_thread = match self.ws_listener {
            Some(listener) => {
                let shared = Arc::clone(&self.shared);
                Some(
                    std::thread::Builder::new()
                        .name("relay-accept-ws".into())
                        .spawn(move || accept_loop(&shared, listener, Port::Ws))?,
                )
            }
            None => None,
        };
        accept_loop(&self.shared, self.listener, Port::Plain);
        if let Some(thread) = tls_thread
            && thread.join().is_err()
        {
            tracing::error!("the TLS accept thread panicked");
        }
        if let Some(thread) = ws_thread
            && thread.join().is_err()
        {
            tracing::error!("the WebSocket accept thread panicked");
        }
        close_all(&self.shared);
        if let Some(http) = http {
            http.stop();
        }
        let stats = self.shared.counters.snapshot();
        tracing::info!(
            "stopped: {} connections served, {} frames in, {} frames out, {} bytes in, {} bytes out, {} slow consumers, errors {:?}",
            stats.connections_total,
            stats.frames_in,
            stats.frames_out,
            stats.bytes_in,
            stats.bytes_out,
            stats.slow_consumers,
            stats.errors
        );
        Ok(())
    }

    /// Runs the server on a background thread.
    pub fn spawn(self) -> io::Result<RunningServer> {
        let shared = Arc::clone(&self.shared);
        let http_addr = self.http_addr();
        let thread = std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || self.run())?;
        Ok(RunningServer {
            shared,
            http_addr,
            thread: Some(thread),
        })
    }
}

impl RunningServer {
    /// The plain TCP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The TLS address actually bound, if the server has a TLS port.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.shared.tls_addr()
    }

    /// The HTTP endpoint's address actually bound, if it has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The WebSocket address actually bound, if the server has one.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.shared.ws_addr()
    }

    /// Reloads the TLS files on request, if the server has a TLS port.
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.shared.tls_reloader()
    }

    /// The server's live counters.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.shared.counters)
    }

    /// A handle that stops this server from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Whether the server takes new connections (what `/readyz` reports):
    /// false from the moment a stop or drain begins.
    pub fn accepting(&self) -> bool {
        self.shared.accepting()
    }

    /// Stops the server and waits until it has finished.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shutdown_handle().shutdown();
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!("server stopped with an error: {error}"),
                Err(_) => tracing::error!("the accept thread panicked"),
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ShutdownHandle {
    /// Stops at once: stop accepting, SHUTTING_DOWN to everyone together.
    /// The server's `run` returns once connections are closed. During a
    /// [`drain`](ShutdownHandle::drain) this hurries it: every close still
    /// due happens now.
    pub fn shutdown(&self) {
        self.stop(Duration::ZERO);
    }

    /// Lame-duck drain (SIGTERM in `relay-server`): stop accepting at once
    /// (readiness fails), then SHUTTING_DOWN to each connection, spread
    /// evenly over [`Config::drain_timeout`] and each with its own
    /// `retryAfterMs`, so clients do not all reconnect together. The
    /// server's `run` returns once connections are closed.
    pub fn drain(&self) {
        self.stop(self.shared.config.drain_timeout);
    }

    fn stop(&self, window: Duration) {
        self.shared.stop_accepting();
        if !self.shared.drain.begin(window) {
            return;
        }
        self.shared.shutting_down.store(true, Ordering::Release);
        // Wake each accept loop with a connection of our own; the loop
        // then ends and its listening socket closes.
        let tls = self.shared.tls.as_ref().map(|tls| tls.addr);
        let ws = self.shared.ws_addr();
        for mut addr in std::iter::once(self.shared.local_addr).chain(tls).chain(ws) {
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    [127, 0, 0, 1].into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
    }
}

/// Accepts connections on one port until the server shuts down.
fn accept_loop(shared: &Arc<Shared>, listener: TcpListener, port: Port) {
    let mut last_warning: Option<Instant> = None;
    while !shared.shutting_down.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, addr)) => {
                if shared.shutting_down.load(Ordering::Acquire) {
                    break;
                }
                admit(shared, stream, addr, shared.next_id(), port);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                // Out of file descriptors, most likely: back off briefly
                // instead of spinning; connections closing will free
                // some. Warn at most once a second.
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!("accept failed: {error}; retrying");
                    last_warning = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// At most this much of what a rejected client already sent is read before
/// its socket closes: more than any honest client sends before its answer,
/// and a bound on the work a client that keeps streaming can make the
/// accept loop do.
const REJECT_DRAIN: usize = 64 * 1024;

/// Turns a connection away with SERVER_FULL, without a thread and without
/// ever waiting for the client: the accept loop must stay free for everyone
/// else, whatever a rejected client does.
fn reject(shared: &Shared, mut stream: TcpStream, addr: SocketAddr, why: &str) {
    throttled!(REFUSALS, WARN, "rejecting {addr}: {why}");
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let message = format!("{why}; try again later");
    let frame = Batch::error(ErrorCode::ServerFull, &message).bytes;
    // A new connection's send buffer is empty: the ERROR goes in whole.
    if matches!(stream.write(&frame), Ok(n) if n == frame.len()) {
        shared.counters.error_sent(ErrorCode::ServerFull);
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Closing a socket with unread input resets it, which could destroy the
    // ERROR before the client reads it: take what has arrived, within bounds.
    drain_without_waiting(&mut stream, REJECT_DRAIN);
}

/// Reads what has already arrived on a non-blocking `stream`, at most
/// about `limit` bytes, without waiting for more; returns how much.
fn drain_without_waiting(stream: &mut impl Read, limit: usize) -> usize {
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < limit {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    total
}

/// The memory budget the server runs with: the one set, if the machine
/// has that much memory, else the default for the machine. Logged with the
/// machine's memory, so an operator sees both numbers.
fn memory_budget(config: &Config) -> Result<u64, ConfigError> {
    let physical = crate::sys::memory::physical_memory();
    let budget = match (config.budget.memory, physical) {
        (Some(budget), Some(physical)) if budget > physical => {
            return Err(ConfigError {
                flag: "memory-budget",
                problem: format!(
                    "is {budget} bytes, more than this machine's {physical} bytes of memory; set it lower (without it the budget is half the memory, at most 16 GiB)"
                ),
            });
        }
        (Some(budget), _) => budget,
        (None, physical) => default_memory_budget(physical),
    };
    let rooms = (config.budget.max_rooms as u64).saturating_mul(ROOM_BYTES as u64);
    let memberships =
        (config.budget.max_memberships as u64).saturating_mul(MEMBERSHIP_BYTES as u64);
    if rooms.saturating_add(memberships) > budget / 2 {
        tracing::warn!(
            "--max-total-rooms and --max-memberships allow room state of about {} bytes, more than half the {budget}-byte memory budget; joins will be refused at the budget, and little is left for queued output",
            rooms.saturating_add(memberships)
        );
    }
    match physical {
        Some(physical) => tracing::info!(
            "memory budget {budget} bytes, of this machine's {physical} bytes (queued output, partial frames and room state together)"
        ),
        None => tracing::warn!(
            "memory budget {budget} bytes; this machine's memory is unknown, so the budget is not checked against it"
        ),
    }
    Ok(budget)
}

/// Turns a connection on the TLS or WebSocket port away. No ERROR: a
/// frame could only be sent after a handshake, and the accept loop never
/// does one; the client sees the connection close before the handshake
/// ends.
fn reject_tls(mut stream: TcpStream, addr: SocketAddr, why: &str) {
    throttled!(REFUSALS, WARN, "rejecting {addr} on the TLS port: {why}");
    if stream.set_nonblocking(true).is_ok() {
        drain_without_waiting(&mut stream, REJECT_DRAIN);
    }
}

fn admit(shared: &Arc<Shared>, stream: TcpStream, addr: SocketAddr, id: u64, port: Port) {
    let live = shared.counters.connections.load(Relaxed) as usize;
    if live >= shared.max_connections {
        shared.counters.refused(Refusal::Full);
        let why = format!("server is full ({} connections)", shared.max_connections);
        match port {
            Port::Plain => reject(shared, stream, addr, &why),
            Port::Tls | Port::Ws => reject_tls(stream, addr, &why),
        }
        return;
    }
    let memory = &shared.counters.memory;
    if memory.is_shedding() {
        shared.counters.refused(Refusal::Memory);
        let why = format!(
            "server is over its memory budget ({} of {} bytes in use)",
            memory.used(),
            memory.limit()
        );
        match port {
            Port::Plain => reject(shared, stream, addr, &why),
            Port::Tls | Port::Ws => reject_tls(stream, addr, &why),
        }
        return;
    }
    let slot = match shared.per_address.admit(addr.ip()) {
        Ok(slot) => slot,
        Err(TooMany { limit }) => {
            shared.counters.refused(Refusal::PerAddress);
            let why = format!(
                "too many connections from {} (at most {limit} per address)",
                addr.ip()
            );
            match port {
                Port::Plain => reject(shared, stream, addr, &why),
                Port::Tls | Port::Ws => reject_tls(stream, addr, &why),
            }
            return;
        }
    };
    let write_timeout = shared.config.write_timeout;
    let started = match (port, &shared.tls, &shared.config.tls) {
        (Port::Ws, tls, config) => {
            let Some(ws) = &shared.ws else { return };
            let settings = Arc::clone(&ws.settings);
            match (tls, config) {
                (Some(tls), Some(config)) => Tls::new(
                    stream,
                    tls.certificates.current(),
                    write_timeout,
                    config.handshake_timeout,
                )
                .map(|tls| {
                    crate::conn::start::start(shared, Ws::new(tls, settings), id, addr, slot);
                }),
                _ => Tcp::new(stream, write_timeout).map(|tcp| {
                    crate::conn::start::start(shared, Ws::new(tcp, settings), id, addr, slot);
                }),
            }
        }
        (Port::Tls, Some(tls), Some(config)) => Tls::new(
            stream,
            tls.certificates.current(),
            write_timeout,
            config.handshake_timeout,
        )
        .map(|transport| crate::conn::start::start(shared, transport, id, addr, slot)),
        _ => Tcp::new(stream, write_timeout)
            .map(|transport| crate::conn::start::start(shared, transport, id, addr, slot)),
    };
    if let Err(error) = started {
        throttled!(REFUSALS, WARN, "{addr}: socket setup failed: {error}");
    }
}

/// Starts the thread that does the server's periodic chores: shedding
/// load past the memory budget (at once when usage crosses it, and checked
/// every second), giving memory back after a crowd leaves, and waking
/// writers to watch bytes that publishers left in their sockets. It ends
/// with the server.
fn start_housekeeping(shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    let started = std::thread::Builder::new()
        .name("relay-housekeeping".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            while !shared.shutting_down.load(Ordering::Acquire) {
                let crossed = shared
                    .counters
                    .memory
                    .wait_for_alarm(Duration::from_secs(1));
                crate::shed::shed(&shared);
                if !crossed {
                    shared.trim_after_crowd();
                    crate::conn::writer::ring_unwatched(&shared);
                }
            }
        });
    if let Err(error) = started {
        tracing::warn!(
            "no housekeeping thread ({error}); memory freed by departed clients stays with the server"
        );
    }
}

/// Starts the thread that sends big rooms' batched membership changes
/// every `--member-events-interval-ms` (SPEC.md 3.17), off the joins' and
/// leaves' path. It ends with the server.
fn start_notices(shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    let started = std::thread::Builder::new()
        .name("relay-notices".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let config = &shared.config;
            while !shared.shutting_down.load(Ordering::Acquire) {
                // A timer, not a synchronisation: the interval is the
                // batching's whole point.
                std::thread::sleep(config.member_batching.interval);
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64);
                shared.rooms.flush_notices(
                    now_ms,
                    config.max_frame as usize,
                    config.stall_timeout,
                    &shared.counters,
                );
            }
        });
    if let Err(error) = started {
        tracing::warn!(
            "no thread for batched membership notices ({error}); clients that asked for them hear of no change in big rooms"
        );
    }
}

/// SHUTTING_DOWN to everyone (spread over the drain's window), a bounded
/// flush, then cut what remains.
fn close_all(shared: &Shared) {
    let peers = shared.peers();
    shared.drain.tell_spread(&peers, |peer, retry_after_ms| {
        peer.outbound.close_for_shutdown(retry_after_ms);
    });
    drop(peers);
    if !shared.wait_for_no_peers(SHUTDOWN_FLUSH) {
        let peers = shared.peers();
        tracing::warn!(
            "{} connections did not flush in time; cutting them",
            peers.len()
        );
        for peer in &peers {
            peer.cut();
        }
        drop(peers);
        shared.wait_for_no_peers(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn draining_a_rejected_client_stops_at_its_bound_while_it_streams() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        let streamer = std::thread::spawn(move || {
            let chunk = [7u8; 16 * 1024];
            // Streams until the server closes (the write then fails).
            for _ in 0..1024 {
                if client.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        // Let the client's data arrive, as it would while the server is full.
        let mut first = [0u8; 1];
        server_side.read_exact(&mut first).unwrap();
        server_side.set_nonblocking(true).unwrap();
        let drained = drain_without_waiting(&mut server_side, 64 * 1024);
        assert!(drained <= 64 * 1024 + 4096, "drained {drained} bytes");
        drop(server_side);
        streamer.join().unwrap();
    }
}
