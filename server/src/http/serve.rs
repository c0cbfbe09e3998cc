//! The accept loop and each connection's life, on the HTTP thread's
//! runtime: hyper reads requests and writes answers; this module admits
//! connections within [`MAX_CONNECTIONS`] and ends them all at stop.

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::stall::StallLimited;
use super::{HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD_BYTES, STOP_GRACE, routes};
use crate::shared::Shared;

/// How long accepting pauses after an error that is not one connection's
/// (out of file descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `listener` until `stop` fires (or its sender is dropped), then
/// stops gracefully within [`STOP_GRACE`].
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    // Counts the connections it watches, which is every live one.
    let connections = GracefulShutdown::new();
    loop {
        let accepted = poll_fn(|cx| {
            if Pin::new(&mut stop).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            listener.poll_accept(cx).map(Some)
        })
        .await;
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                if connections.count() >= MAX_CONNECTIONS {
                    tracing::debug!(
                        "http: {peer} closed unanswered: {MAX_CONNECTIONS} HTTP connections are open"
                    );
                    continue;
                }
                spawn_connection(&connections, stream, peer, Arc::clone(&shared));
            }
            // One connection's failure (reset before it was accepted).
            Some(Err(error)) if is_per_connection(&error) => {}
            Some(Err(error)) => {
                tracing::warn!("http: accepting failed: {error}; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let open = connections.count();
    if tokio::time::timeout(STOP_GRACE, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "http: connections still answering {} s after shutdown began are closed ({open} were open)",
            STOP_GRACE.as_secs()
        );
    }
}

/// Starts serving one connection with hyper, within the endpoint's
/// bounds, watched by `connections` (which counts it until it ends).
fn spawn_connection(
    connections: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    // Answers are written whole; waiting to coalesce them only delays
    // the next request on the connection.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!("http: {peer}: TCP_NODELAY: {error}");
    }
    let service = service_fn(move |request| {
        std::future::ready(Ok::<_, Infallible>(routes::answer(&request, &shared)))
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true)
        .serve_connection(TokioIo::new(StallLimited::new(stream)), service);
    let connection = connections.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!("http: {peer}: {error}");
        }
    });
}

/// Whether an accept error concerns only the connection being accepted,
/// so the next accept can follow at once.
fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}
