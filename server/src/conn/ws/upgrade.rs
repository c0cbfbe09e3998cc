//! The HTTP upgrade that opens a WebSocket connection (RFC 6455 4), done by
//! the reader thread before the first frame.
//!
//! tungstenite parses the request (with httparse) and computes the accept
//! key; this module bounds it and decides. The request may take at most
//! [`MAX_REQUEST`] bytes and the handshake timeout, so a client that
//! trickles headers (slowloris) holds its threads for that long at most,
//! and costs at most that much memory. The answer (101, or an error status
//! with a line saying why) goes to the writer through the link: the writer
//! sends it, and after a refusal closes the connection.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{Request, create_response, write_response};
use tungstenite::http::Response;

use super::WsSettings;
use super::link::Link;
use crate::conn::transport::{ReadHalf, is_timeout};
use crate::sys::wake::WaitMask;

/// The longest upgrade request read: browsers send well under 2 KiB, and
/// cookies for the page's site come along; more is refused with 431.
pub(crate) const MAX_REQUEST: usize = 8 * 1024;
/// The paths that upgrade; anything else is 404.
const PATHS: [&str; 2] = ["/", "/ws"];

/// The request read so far, kept across a wake-up that interrupts it.
#[derive(Debug, Default)]
pub(crate) struct Upgrade {
    request: Vec<u8>,
}

/// Why an upgrade failed: refused with an HTTP status (sent), or the client
/// did not finish it in time or went away (nothing sent).
#[derive(Debug)]
pub(crate) struct UpgradeFailed {
    pub(crate) status: Option<u16>,
    pub(crate) why: String,
}

impl fmt::Display for UpgradeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "WebSocket upgrade refused with {status}: {}", self.why),
            None => write!(f, "WebSocket upgrade failed: {}", self.why),
        }
    }
}

impl std::error::Error for UpgradeFailed {}

impl UpgradeFailed {
    fn io(kind: io::ErrorKind, status: Option<u16>, why: impl Into<String>) -> io::Error {
        io::Error::new(
            kind,
            UpgradeFailed {
                status,
                why: why.into(),
            },
        )
    }
}

/// A refusal: the status, a line for the client, and an extra header.
struct Refusal {
    status: u16,
    why: String,
    header: Option<(&'static str, &'static str)>,
}

impl Refusal {
    fn new(status: u16, why: impl Into<String>) -> Refusal {
        Refusal {
            status,
            why: why.into(),
            header: None,
        }
    }
}

impl Upgrade {
    /// Reads the request and queues the answer. Returns the bytes that
    /// followed the request in its reads; `Interrupted` when the thread is
    /// woken (calling again resumes).
    pub(crate) fn run<R: ReadHalf>(
        &mut self,
        inner: &mut R,
        link: &Link,
        settings: &WsSettings,
        deadline: Instant,
        mask: &WaitMask,
    ) -> io::Result<Vec<u8>> {
        let mut chunk = [0u8; 2048];
        loop {
            match Request::try_parse(&self.request) {
                Ok(Some((used, request))) => {
                    let early = self.request.split_off(used);
                    self.request = Vec::new();
                    return match decide(&request, settings) {
                        Ok(response) => {
                            link.respond(response, true);
                            Ok(early)
                        }
                        Err(refusal) => Err(refuse(link, refusal)),
                    };
                }
                Ok(None) if self.request.len() >= MAX_REQUEST => {
                    return Err(refuse(
                        link,
                        Refusal::new(
                            431,
                            format!("the upgrade request is over {MAX_REQUEST} bytes"),
                        ),
                    ));
                }
                Ok(None) => {}
                Err(error) => {
                    return Err(refuse(
                        link,
                        Refusal::new(400, format!("not a WebSocket upgrade request ({error})")),
                    ));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(UpgradeFailed::io(
                    io::ErrorKind::TimedOut,
                    None,
                    format!(
                        "no upgrade request within the handshake timeout ({} s)",
                        settings.handshake_timeout.as_secs_f64()
                    ),
                ));
            }
            if !inner.wait_readable(left, mask)? {
                continue;
            }
            inner.set_read_timeout(left.clamp(Duration::from_millis(1), Duration::from_secs(1)))?;
            let room = (MAX_REQUEST - self.request.len()).min(chunk.len());
            match inner.read(&mut chunk[..room]) {
                Ok(0) => {
                    return Err(UpgradeFailed::io(
                        io::ErrorKind::UnexpectedEof,
                        None,
                        "the client closed the connection during the upgrade",
                    ));
                }
                Ok(n) => self.request.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The 101 for an acceptable request, or why it is refused.
fn decide(request: &Request, settings: &WsSettings) -> Result<Vec<u8>, Refusal> {
    let path = request.uri().path();
    if !PATHS.contains(&path) {
        return Err(Refusal::new(
            404,
            format!("no WebSocket endpoint at {path:?}; connect to / (or /ws)"),
        ));
    }
    let response = create_response(request).map_err(|error| match error {
        WsError::Protocol(ProtocolError::MissingSecWebSocketVersionHeader) => Refusal {
            status: 426,
            why: "only WebSocket version 13 is spoken".to_owned(),
            header: Some(("Sec-WebSocket-Version", "13")),
        },
        WsError::Protocol(
            ProtocolError::MissingConnectionUpgradeHeader
            | ProtocolError::MissingUpgradeWebSocketHeader,
        ) => Refusal {
            status: 426,
            why: "this port speaks only WebSocket; send an upgrade request".to_owned(),
            header: Some(("Upgrade", "websocket")),
        },
        error => Refusal::new(400, format!("not a valid WebSocket upgrade ({error})")),
    })?;
    let headers = request.headers();
    let origin = match headers.get("Origin").map(|v| v.to_str()) {
        None => None,
        Some(Ok(origin)) => Some(origin),
        Some(Err(_)) => return Err(Refusal::new(403, "the Origin header is not ASCII")),
    };
    let host = headers.get("Host").and_then(|v| v.to_str().ok());
    if !settings.origins.allow(origin, host) {
        return Err(Refusal::new(
            403,
            format!(
                "origin {:?} may not connect; the server's --ws-allowed-origins decides",
                origin.unwrap_or_default()
            ),
        ));
    }
    let mut out = Vec::with_capacity(160);
    write_response(&mut out, &response)
        .map_err(|error| Refusal::new(500, format!("the answer could not be written ({error})")))?;
    Ok(out)
}

/// Queues the refusal's answer for the writer; returns the error that
/// ends the connection.
fn refuse(link: &Link, refusal: Refusal) -> io::Error {
    let body = format!("{}\n", refusal.why);
    let mut builder = Response::builder()
        .status(refusal.status)
        .header("Connection", "close")
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Content-Length", body.len());
    if let Some((name, value)) = refusal.header {
        builder = builder.header(name, value);
    }
    let mut out = Vec::with_capacity(128 + body.len());
    if let Ok(response) = builder.body(())
        && write_response(&mut out, &response).is_ok()
    {
        out.extend_from_slice(body.as_bytes());
        link.respond(out, false);
    }
    UpgradeFailed::io(
        io::ErrorKind::PermissionDenied,
        Some(refusal.status),
        refusal.why,
    )
}
