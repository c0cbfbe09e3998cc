//! Which answer each request gets: the route table of SPEC.md 12. Every
//! handler is synchronous and quick (it renders from atomics and takes
//! short read locks), so it runs on the HTTP thread itself.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::{listing, metrics, page};
use crate::shared::Shared;

/// An answer: always a body in memory, of known length.
pub(super) type Answer = Response<Full<Bytes>>;

/// What a path that is not served says, so a person who mistyped one
/// learns the right ones.
const NOT_FOUND: &str =
    "not found: try /metrics, /healthz, /readyz, /connz, /roomz, /config.json or /\n";

/// The answer to `request`; its body, if any, is never read.
pub(super) fn answer<B>(request: &Request<B>, shared: &Shared) -> Answer {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    let readable = matches!(*request.method(), Method::GET | Method::HEAD);
    if let Some(asset) = page::find(path) {
        return if readable {
            page::respond(asset, request.headers())
        } else {
            not_allowed()
        };
    }
    let known = matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/connz" | "/roomz" | "/config.json"
    );
    if !known {
        return text(StatusCode::NOT_FOUND, NOT_FOUND);
    }
    if !readable {
        return not_allowed();
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.accepting() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        "/config.json" => json(client_config(shared)),
        "/metrics" => match metrics::render(shared) {
            Ok(body) => with_type(StatusCode::OK, body, metrics::CONTENT_TYPE),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics could not be encoded\n",
            ),
        },
        _ => match listing::Page::parse(query) {
            Ok(page) if path == "/connz" => json(listing::connz(shared, page)),
            Ok(page) => json(listing::roomz(shared, page)),
            Err(why) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        },
    }
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

fn not_allowed() -> Answer {
    let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    answer
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    answer
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    with_type(status, body, "text/plain; charset=utf-8")
}

fn json(body: String) -> Answer {
    with_type(StatusCode::OK, body, "application/json")
}

/// `content_type` is always one of this module's constants.
fn with_type(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    answer
}
