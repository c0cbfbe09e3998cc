//! The accept loop, the registry of live connections, and shutdown.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use protocol::ErrorCode;

use crate::config::Config;
use crate::counters::Counters;
use crate::peer::{CloseReason, Peer, QueueLimits};
use crate::rooms::Rooms;
use crate::state::ConnState;

/// Stack of a reader thread: enough for serde_json at its nesting limit.
const READER_STACK: usize = 256 * 1024;
/// Stack of a writer thread, which only moves bytes.
const WRITER_STACK: usize = 64 * 1024;
/// After SHUTTING_DOWN, how long writers get to flush before sockets are cut.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// State every connection thread shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) rooms: Rooms,
    pub(crate) counters: Arc<Counters>,
    /// Live connections by id, for shutdown; the condvar signals removals.
    registry: Mutex<HashMap<u64, Arc<Peer>>>,
    registry_changed: Condvar,
    shutting_down: AtomicBool,
    /// Connections allowed: `--max-connections` capped by system limits.
    max_connections: usize,
    local_addr: SocketAddr,
}

/// A bound server, not yet running.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// A server running on a background thread. Dropping it shuts it down.
#[derive(Debug)]
pub struct RunningServer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// Stops a server from any thread (a signal handler thread, a test).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the listening socket and checks system limits.
    pub fn bind(config: Config) -> io::Result<Server> {
        crate::wake::install_handler();
        let listener = TcpListener::bind(config.addr)?;
        let local_addr = listener.local_addr()?;
        let capacity = crate::limits::check(config.max_connections);
        for warning in &capacity.warnings {
            log::warn!("{warning}");
        }
        let shared = Shared {
            max_connections: capacity.connections,
            config,
            rooms: Rooms::default(),
            counters: Arc::default(),
            registry: Mutex::default(),
            registry_changed: Condvar::new(),
            shutting_down: AtomicBool::new(false),
            local_addr,
        };
        Ok(Server {
            listener,
            shared: Arc::new(shared),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Connections this server admits: `--max-connections`, capped by what
    /// the system allows.
    pub fn max_connections(&self) -> usize {
        self.shared.max_connections
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.shared.counters)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until shut down; returns once every connection is closed (or
    /// was cut after the shutdown flush bound).
    pub fn run(self) -> io::Result<()> {
        let next_id = AtomicU64::new(1);
        let mut last_warning: Option<Instant> = None;
        while !self.shared.shutting_down.load(Ordering::Acquire) {
            match self.listener.accept() {
                Ok((stream, addr)) => {
                    if self.shared.shutting_down.load(Ordering::Acquire) {
                        break;
                    }
                    admit(&self.shared, stream, addr, next_id.fetch_add(1, Relaxed));
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Out of file descriptors, most likely: back off briefly
                    // instead of spinning; connections closing will free
                    // some. Warn at most once a second.
                    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        log::warn!("accept failed: {error}; retrying");
                        last_warning = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        drop(self.listener);
        close_all(&self.shared);
        let stats = self.shared.counters.snapshot();
        log::info!(
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
        let thread = std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || self.run())?;
        Ok(RunningServer {
            shared,
            thread: Some(thread),
        })
    }
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.shared.counters)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
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
                Ok(Err(error)) => log::error!("server stopped with an error: {error}"),
                Err(_) => log::error!("the accept thread panicked"),
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
    /// Starts the shutdown: stop accepting, SHUTTING_DOWN to everyone. The
    /// server's `run` returns once connections are closed.
    pub fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the accept loop with a connection of our own.
        let mut addr = self.shared.local_addr;
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

fn error_frame(code: ErrorCode, message: &str) -> Vec<u8> {
    crate::peer::Batch::error(code, message).bytes
}

/// Turns a connection away with SERVER_FULL, without a thread.
fn reject(shared: &Shared, mut stream: TcpStream, addr: SocketAddr, why: &str) {
    log::warn!("rejecting {addr}: {why}");
    let message = format!("{why}; try again later");
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    if stream
        .write_all(&error_frame(ErrorCode::ServerFull, &message))
        .is_ok()
    {
        shared.counters.error_sent(ErrorCode::ServerFull);
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Take what the client already sent, so closing does not reset the
    // connection before it reads the error.
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }
}

fn admit(shared: &Arc<Shared>, stream: TcpStream, addr: SocketAddr, id: u64) {
    let live = shared.counters.connections.load(Relaxed) as usize;
    if live >= shared.max_connections {
        let why = format!("server is full ({} connections)", shared.max_connections);
        reject(shared, stream, addr, &why);
        return;
    }
    let config = &shared.config;
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_write_timeout(Some(config.write_timeout)));
    if let Err(error) = setup {
        log::warn!("{addr}: socket setup failed: {error}");
        return;
    }
    let limits = QueueLimits {
        items: config.queue_items,
        bytes: config.queue_bytes.max(2 * config.max_frame as usize),
    };
    let (peer, rx) = Peer::new(id, addr, stream, limits);
    shared.registry.lock().insert(id, Arc::clone(&peer));
    shared.counters.connections.fetch_add(1, Relaxed);
    shared.counters.connections_total.fetch_add(1, Relaxed);
    log::info!("c{id}: connected from {addr}");

    let writer = {
        let (shared, peer) = (Arc::clone(shared), Arc::clone(&peer));
        crate::thread::spawn(WRITER_STACK, move || {
            crate::writer::run_writer(shared, peer, rx)
        })
    };
    if let Err(error) = writer {
        log::warn!("c{id}: no thread for this connection ({error}); sending SERVER_FULL");
        shared.counters.error_sent(ErrorCode::ServerFull);
        let _ = (&peer.stream).write_all(&error_frame(
            ErrorCode::ServerFull,
            "server cannot start another connection now (thread limit); try again later",
        ));
        peer.close(CloseReason::Fatal);
        let _ = peer.stream.shutdown(Shutdown::Write);
        thread_finished(shared, &peer);
        thread_finished(shared, &peer);
        return;
    }
    let reader = {
        let (shared, peer) = (Arc::clone(shared), Arc::clone(&peer));
        crate::thread::spawn(READER_STACK, move || {
            crate::connection::run_reader(shared, peer)
        })
    };
    if let Err(error) = reader {
        log::warn!("c{id}: no reader thread ({error}); sending SERVER_FULL");
        let frame = error_frame(
            ErrorCode::ServerFull,
            "server cannot start another connection now (thread limit); try again later",
        );
        shared.counters.error_sent(ErrorCode::ServerFull);
        let batch = Arc::new(crate::peer::Batch {
            bytes: frame,
            frames: 1,
        });
        let _ = peer.try_push(&batch);
        peer.close(CloseReason::Fatal);
        thread_finished(shared, &peer);
    }
}

/// A connection thread's last steps, run when it returns and also when it
/// unwinds from a panic (a bug), so the connection still reaches CLOSED and
/// leaves the registry and the counters right.
pub(crate) struct ThreadExit {
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    reader: bool,
}

impl ThreadExit {
    pub(crate) fn reader(shared: &Arc<Shared>, peer: &Arc<Peer>) -> ThreadExit {
        peer.register_reader(true);
        ThreadExit {
            shared: Arc::clone(shared),
            peer: Arc::clone(peer),
            reader: true,
        }
    }

    pub(crate) fn writer(shared: &Arc<Shared>, peer: &Arc<Peer>) -> ThreadExit {
        ThreadExit {
            shared: Arc::clone(shared),
            peer: Arc::clone(peer),
            reader: false,
        }
    }
}

impl Drop for ThreadExit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            log::error!(
                "c{}: connection thread panicked; closing the connection",
                self.peer.id
            );
            self.shared.counters.thread_panics.fetch_add(1, Relaxed);
            self.peer.close(CloseReason::WriteFailed);
            let _ = self.peer.stream.shutdown(Shutdown::Both);
        }
        if self.reader {
            self.peer.register_reader(false);
        } else {
            self.peer.set_writer_done();
        }
        thread_finished(&self.shared, &self.peer);
    }
}

/// Called by each connection thread as it ends; the last one closes the
/// connection for good (CLOSED, exactly once).
pub(crate) fn thread_finished(shared: &Shared, peer: &Arc<Peer>) {
    if peer.threads_left.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    // Both threads are done; the reader already left every room.
    let _ = peer.state.advance(ConnState::Closing);
    if let Err(error) = peer.state.advance(ConnState::Closed) {
        log::error!("c{}: {error}", peer.id);
        return;
    }
    log::debug!("c{}: CLOSING → CLOSED", peer.id);
    let _ = peer.stream.shutdown(Shutdown::Both);
    // Log before leaving the registry: once it is empty a stopping server
    // may exit, and this line must not be lost.
    log::info!(
        "c{}: disconnected from {} ({}; {} bytes in, {} bytes out)",
        peer.id,
        peer.addr,
        peer.close_reason().map_or("closed", CloseReason::describe),
        peer.bytes_in.load(Relaxed),
        peer.bytes_out.load(Relaxed),
    );
    shared.counters.connections.fetch_sub(1, Relaxed);
    shared.registry.lock().remove(&peer.id);
    shared.registry_changed.notify_all();
}

/// SHUTTING_DOWN to everyone, a bounded flush, then cut what remains.
fn close_all(shared: &Shared) {
    let peers: Vec<Arc<Peer>> = shared.registry.lock().values().cloned().collect();
    log::info!("shutting down: closing {} connection(s)", peers.len());
    for peer in &peers {
        peer.close(CloseReason::ShuttingDown);
    }
    drop(peers);
    if !wait_for_empty(shared, SHUTDOWN_FLUSH) {
        let peers: Vec<Arc<Peer>> = shared.registry.lock().values().cloned().collect();
        log::warn!(
            "{} connections did not flush in time; cutting them",
            peers.len()
        );
        for peer in &peers {
            let _ = peer.stream.shutdown(Shutdown::Both);
        }
        drop(peers);
        wait_for_empty(shared, Duration::from_secs(5));
    }
}

fn wait_for_empty(shared: &Shared, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut registry = shared.registry.lock();
    while !registry.is_empty() {
        if shared
            .registry_changed
            .wait_until(&mut registry, deadline)
            .timed_out()
        {
            return registry.is_empty();
        }
    }
    true
}
