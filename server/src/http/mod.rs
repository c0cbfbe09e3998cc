//! The operator's HTTP endpoint (`--http-addr`, SPEC.md 12): metrics,
//! health, listings of connections and rooms, and the chat page
//! ([`page`], at `/`).
//!
//! `tiny_http` parses the requests; it reads them on its own threads, so a
//! slow HTTP client holds one of its sockets, never one of the
//! [`WORKERS`] that answer. Answers are bounded: `/connz` and `/roomz` page
//! at most [`listing::MAX_LIMIT`] items, and no request body is ever read.

mod listing;
mod metrics;
mod page;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response};

use crate::shared::Shared;

/// Threads answering requests: enough that one slow scrape does not hold
/// up a health check, few enough to cost nothing.
const WORKERS: usize = 2;

/// The bound HTTP listener, not yet answering.
pub(crate) struct HttpListener {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
}

/// The answering threads; [`Serving::stop`] ends them.
pub(crate) struct Serving {
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpListener({})", self.addr)
    }
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Serving({} threads)", self.threads.len())
    }
}

impl HttpListener {
    /// Binds `addr`; an error names the flag.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<HttpListener> {
        let server = tiny_http::Server::http(addr).map_err(|error| {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("--http-addr {addr}: {error}"),
            )
        })?;
        let addr = server.server_addr().to_ip().ok_or_else(|| {
            io::Error::other(format!("--http-addr {addr}: not bound to an IP address"))
        })?;
        Ok(HttpListener {
            server: Arc::new(server),
            addr,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts answering on [`WORKERS`] threads.
    pub(crate) fn serve(self, shared: &Arc<Shared>) -> io::Result<Serving> {
        let mut threads = Vec::with_capacity(WORKERS);
        for n in 0..WORKERS {
            let server = Arc::clone(&self.server);
            let shared = Arc::clone(shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("relay-http-{n}"))
                    .spawn(move || answer_all(&server, &shared))?,
            );
        }
        Ok(Serving {
            server: self.server,
            threads,
        })
    }
}

impl Serving {
    /// Ends the answering threads, after the server has stopped: `/readyz`
    /// says 503 for as long as the shutdown lasts.
    pub(crate) fn stop(self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("an HTTP thread panicked");
            }
        }
    }
}

fn answer_all(server: &tiny_http::Server, shared: &Shared) {
    loop {
        match server.recv() {
            Ok(request) => answer(request, shared),
            // `unblock`, or the listener is gone.
            Err(_) => return,
        }
    }
}

fn answer(request: Request, shared: &Shared) {
    let (path, query) = match request.url().split_once('?') {
        Some((path, query)) => (path, query),
        None => (request.url(), ""),
    };
    if let Some(asset) = page::find(path) {
        if matches!(request.method(), Method::Get | Method::Head) {
            let reply = page::respond(asset, &request);
            let _ = request.respond(reply);
        } else {
            let _ = request.respond(with_header(text(405, "only GET\n"), "Allow", "GET, HEAD"));
        }
        return;
    }
    let known = matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/connz" | "/roomz" | "/config.json"
    );
    let reply = if !known {
        text(
            404,
            "not found: try /metrics, /healthz, /readyz, /connz or /roomz\n",
        )
    } else if !matches!(request.method(), Method::Get | Method::Head) {
        with_header(text(405, "only GET\n"), "Allow", "GET, HEAD")
    } else {
        match path {
            "/healthz" => text(200, "ok\n"),
            "/readyz" if shared.accepting() => text(200, "ready\n"),
            "/readyz" => text(503, "shutting down\n"),
            "/config.json" => with_header(
                Response::from_string(client_config(shared)),
                "Content-Type",
                "application/json",
            ),
            "/metrics" => match metrics::render(shared) {
                Ok(body) => with_header(
                    Response::from_string(body),
                    "Content-Type",
                    metrics::CONTENT_TYPE,
                ),
                Err(_) => text(500, "metrics could not be encoded\n"),
            },
            _ => match listing::Page::parse(query) {
                Ok(page) => {
                    let body = if path == "/connz" {
                        listing::connz(shared, page)
                    } else {
                        listing::roomz(shared, page)
                    };
                    with_header(
                        Response::from_string(body),
                        "Content-Type",
                        "application/json",
                    )
                }
                Err(why) => text(400, &format!("{why}\n")),
            },
        }
    };
    // A client that went away does not need its answer.
    let _ = request.respond(reply);
}

/// What a web page needs to find the WebSocket port (SPEC.md 13.1):
/// `{"websocket":{"port":N,"tls":bool,"path":"/"}}`, or
/// `{"websocket":null}` when the server has none. The page takes the host
/// from its own address: the server cannot know the name clients use.
fn client_config(shared: &Shared) -> String {
    let websocket = shared.ws_addr().map(|addr| {
        serde_json::json!({
            "port": addr.port(),
            "tls": shared.tls.is_some(),
            "path": "/",
        })
    });
    serde_json::json!({ "websocket": websocket }).to_string()
}

fn text(status: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    with_header(
        Response::from_string(body).with_status_code(status),
        "Content-Type",
        "text/plain; charset=utf-8",
    )
}

/// `response` with a header, if it is valid ASCII (all callers pass
/// constants, which are).
fn with_header<R: io::Read>(response: Response<R>, name: &str, value: &str) -> Response<R> {
    match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}
