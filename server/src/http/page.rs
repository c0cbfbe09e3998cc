//! The chat page: the static files of `web/` at the repository root, built
//! into the binary so a server serves its own page without files beside it,
//! and served on the HTTP listener at `/` and their paths.
//!
//! `web/lib/` is the TypeScript client library compiled for browsers
//! (`npm run build:web` in `clients/js`). It is committed, so building the
//! server never needs Node; CI checks the committed copy is what the
//! library's source compiles to.
//!
//! Caching: every answer says `no-cache` (the browser asks again each time)
//! with an `ETag` of the file's contents, so an unchanged file costs a 304
//! and a new server's files are never stale.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::routes::Answer;

/// One embedded file.
pub(crate) struct Asset {
    /// The URL path it is served at.
    pub(crate) path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// The quoted ETag, fixed at compile time from the contents.
    etag: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// What the page may load and connect to: itself, and WebSockets (on the
/// port `/config.json` names, which is not this one).
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../../../web", $path)),
            etag: {
                const HEX: [u8; 18] = etag(include_bytes!(concat!("../../../web", $path)));
                match std::str::from_utf8(&HEX) {
                    Ok(text) => text,
                    Err(_) => panic!("an ETag is ASCII"),
                }
            },
        }
    };
}

/// Every file of `web/`; a test checks none is missing.
pub(crate) const ASSETS: &[Asset] = &[
    asset!("/index.html", HTML),
    asset!("/style.css", CSS),
    asset!("/app.js", JS),
    asset!("/lib/index.js", JS),
    asset!("/lib/client.js", JS),
    asset!("/lib/emitter.js", JS),
    asset!("/lib/errors.js", JS),
    asset!("/lib/frame.js", JS),
    asset!("/lib/payloads.js", JS),
    asset!("/lib/transport.js", JS),
    asset!("/lib/websocket.js", JS),
];

/// The file served at `path` (`/` is `/index.html`).
pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS.iter().find(|asset| asset.path == path)
}

/// The file, or a 304 when the browser's copy (`If-None-Match`) is current.
pub(crate) fn respond(asset: &'static Asset, request: &HeaderMap) -> Answer {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == asset.etag || tag.trim() == "*");
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.body))
    };
    let mut answer = Response::new(Full::new(body));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    // Every value is a constant of this module or an ETag, all ASCII.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !fresh {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if asset.content_type == HTML {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
        }
    }
    answer
}

/// `"` + 16 hex digits of the contents' FNV-1a hash + `"`: a change of any
/// byte changes it, which is all an ETag needs (it is no security check).
const fn etag(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut n = 0;
    while n < 16 {
        out[1 + n] = digits[((hash >> (60 - 4 * n)) & 0xf) as usize];
        n += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `web/` is embedded, so a new one cannot be
    /// forgotten (the page would load it and get a 404).
    #[test]
    fn every_file_of_web_is_served() {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            {
                let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    out.push(format!("/{}", relative.display()));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        files.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        served.sort();
        assert_eq!(
            files, served,
            "web/ and page::ASSETS must list the same files"
        );
    }

    #[test]
    fn etags_differ_with_contents() {
        assert_ne!(etag(b"a"), etag(b"b"));
        assert_eq!(etag(b"").len(), 18);
        let tags: std::collections::BTreeSet<&str> = ASSETS.iter().map(|a| a.etag).collect();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
