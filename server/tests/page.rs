//! The chat page on the HTTP listener: the embedded files of `web/`, their
//! types and cache headers, through a real socket.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use testkit::start_server_with;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request with `Connection: close`; `extra` is more header lines.
fn request(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn with_http() -> server::RunningServer {
    start_server_with(server::Config {
        http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Default::default()
    })
}

fn web(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../web{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn the_page_is_served_at_the_root_with_its_security_headers() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let page = request(http, "GET", "/", "");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.body, web("/index.html"));
    assert_eq!(page.header("Cache-Control"), Some("no-cache"));
    assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(request(http, "GET", "/index.html", "").body, page.body);
}

#[test]
fn each_file_has_its_type_and_the_library_is_there() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    for (path, content_type) in [
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/lib/index.js", "text/javascript; charset=utf-8"),
        ("/lib/client.js", "text/javascript; charset=utf-8"),
        ("/lib/frame.js", "text/javascript; charset=utf-8"),
    ] {
        let answer = request(http, "GET", path, "");
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("Content-Type"), Some(content_type), "{path}");
        assert_eq!(answer.body, web(path), "{path}");
        assert_eq!(answer.header("Content-Security-Policy"), None, "{path}");
    }
}

#[test]
fn an_unchanged_file_is_a_304_and_a_stale_tag_gets_the_file() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let first = request(http, "GET", "/app.js", "");
    let etag = first.header("ETag").unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let again = request(
        http,
        "GET",
        "/app.js",
        &format!("If-None-Match: \"other\", {etag}\r\n"),
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("ETag"), Some(etag.as_str()));
    let stale = request(http, "GET", "/app.js", "If-None-Match: \"0000\"\r\n");
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, first.body);
    // Each file has its own tag.
    assert_ne!(
        request(http, "GET", "/style.css", "").header("ETag"),
        Some(etag.as_str())
    );
}

#[test]
fn head_has_no_body_other_methods_are_405_and_the_operator_routes_still_answer() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let head = request(http, "HEAD", "/", "");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let post = request(http, "POST", "/", "Content-Length: 0\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
    assert_eq!(request(http, "GET", "/healthz", "").status, 200);
    assert_eq!(request(http, "GET", "/metrics", "").status, 200);
    assert_eq!(request(http, "GET", "/lib/", "").status, 404);
    assert_eq!(request(http, "GET", "/../Cargo.toml", "").status, 404);
}
