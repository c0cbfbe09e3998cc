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

use tiny_http::{Header, Request, Response, StatusCode};

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
pub(crate) fn respond(asset: &'static Asset, request: &Request) -> Response<&'static [u8]> {
    let fresh = request.headers().iter().any(|header| {
        header.field.equiv("If-None-Match")
            && header
                .value
                .as_str()
                .split(',')
                .any(|tag| tag.trim() == asset.etag || tag.trim() == "*")
    });
    let mut headers = vec![
        header("Cache-Control", "no-cache"),
        header("ETag", asset.etag),
        header("X-Content-Type-Options", "nosniff"),
        header("Referrer-Policy", "no-referrer"),
    ];
    if fresh {
        return Response::new(
            StatusCode(304),
            headers.into_iter().flatten().collect(),
            &[],
            Some(0),
            None,
        );
    }
    headers.push(header("Content-Type", asset.content_type));
    if asset.content_type == HTML {
        headers.push(header("Content-Security-Policy", CSP));
    }
    Response::new(
        StatusCode(200),
        headers.into_iter().flatten().collect(),
        asset.body,
        Some(asset.body.len()),
        None,
    )
}

/// A header from constants, which are all valid ASCII.
fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
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
