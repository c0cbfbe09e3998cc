//! The operator's HTTP endpoint (`--http-addr`, SPEC.md 12): metrics,
//! health, listings of connections and rooms, and the chat page
//! ([`page`], at `/`).
//!
//! hyper parses HTTP/1.1 and keeps connections alive; a current-thread
//! tokio runtime on one thread, `relay-http`, drives every connection
//! ([`serve`]) and answers from the synchronous routes ([`routes`]), which
//! are quick. One thread, however many connections, because the server it
//! replaces (tiny_http 0.12) gave each connection a pool thread for its
//! whole keep-alive life and, when a connection arrived while a woken
//! thread still counted as waiting, queued it with no thread to run it: a
//! browser's burst of requests for the page hung behind its own idle
//! keep-alive connections, and so could a `/metrics` scrape.
//!
//! Bounds, each because a client could otherwise grow it:
//! - at most [`MAX_CONNECTIONS`] connections at once; one past that is
//!   closed as soon as it is accepted, unanswered (it costs no work, and a
//!   browser or scraper retries);
//! - a request head must arrive whole within [`HEAD_TIMEOUT`] of the
//!   connection opening or of its previous answer, so both a trickling
//!   client (slowloris) and an idle keep-alive connection are closed after
//!   it;
//! - a request head is at most [`MAX_HEAD_BYTES`] (hyper answers `431` past
//!   it); no request body is read: hyper discards what it already buffered
//!   and closes the connection rather than read more;
//! - an answer the client stops reading is abandoned after
//!   [`stall::WRITE_STALL`] without progress;
//! - answers are bounded: `/connz` and `/roomz` page at most
//!   [`listing::MAX_LIMIT`] items.
//!
//! [`Serving::stop`] stops accepting, lets answers in flight finish and
//! closes idle connections, for at most [`STOP_GRACE`].

mod listing;
mod metrics;
mod page;
mod routes;
mod serve;
mod stall;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::shared::Shared;

/// HTTP connections open at once. A browser opens at most six to one host
/// and a scraper one, so this leaves room for several operators while
/// bounding the memory a flood of connections can take (each holds at most
/// about two head buffers).
const MAX_CONNECTIONS: usize = 64;

/// How long a request head may take to arrive whole, counted from the
/// connection's start or its previous answer: the slowloris bound and the
/// keep-alive idle timeout in one.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head, request line and headers together (hyper's
/// smallest buffer bound is 8 KiB; a browser's head is well under 2 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How long [`Serving::stop`] waits for answers in flight before closing
/// every connection regardless.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The bound HTTP listener, not yet answering.
pub(crate) struct HttpListener {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

/// The answering thread; [`Serving::stop`] ends it.
pub(crate) struct Serving {
    /// Dropped or fired, it tells the thread to stop.
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpListener({})", self.addr)
    }
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Serving")
    }
}

impl HttpListener {
    /// Binds `addr`; an error names the flag.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<HttpListener> {
        let named =
            |error: io::Error| io::Error::new(error.kind(), format!("--http-addr {addr}: {error}"));
        let listener = std::net::TcpListener::bind(addr).map_err(named)?;
        let addr = listener.local_addr().map_err(named)?;
        Ok(HttpListener { listener, addr })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts answering on the `relay-http` thread.
    pub(crate) fn serve(self, shared: &Arc<Shared>) -> io::Result<Serving> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        self.listener.set_nonblocking(true)?;
        let listener = {
            // Registering the socket needs the runtime's reactor.
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(self.listener)?
        };
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::clone(shared);
        let thread = std::thread::Builder::new()
            .name("relay-http".into())
            .spawn(move || runtime.block_on(serve::serve(listener, shared, stopped)))?;
        Ok(Serving { stop, thread })
    }
}

impl Serving {
    /// Ends the answering thread, after the server has stopped: `/readyz`
    /// says 503 for as long as the shutdown lasts. Returns within about
    /// [`STOP_GRACE`].
    pub(crate) fn stop(self) {
        // An error means the thread has already ended.
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the HTTP thread panicked");
        }
    }
}
