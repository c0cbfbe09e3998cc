//! The HTTP endpoint's connections (SPEC.md 12.3), through real sockets:
//! a burst of new connections is answered beside idle keep-alive ones (the
//! hang seen with tiny_http), and each bound holds: connections at once,
//! the head timeout, the head size, an answer nobody reads, and stop.

#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use testkit::start_server_with;

/// How long any one answer may take on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(20);
/// SPEC.md 12.3: connections at once, and the head timeout.
const MAX_CONNECTIONS: usize = 64;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

fn with_http() -> server::RunningServer {
    start_server_with(server::Config {
        http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Default::default()
    })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Sends a keep-alive `GET path` (as a browser does).
fn send(stream: &mut TcpStream, path: &str) {
    stream.write_all(&request(path)).unwrap();
}

/// The bytes of a keep-alive `GET path`, to be written at once.
fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").into_bytes()
}

/// Reads one answer off a keep-alive connection: its status and body.
fn answer(stream: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut chunk = [0; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(end) = head.parse(&raw).unwrap() {
            let length: usize = head
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap_or(0);
            let status = head.code.unwrap();
            while raw.len() < end + length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
                raw.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, raw[end..end + length].to_vec()));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the server closed `stream` (EOF or reset) without answering;
/// a read that times out is a failure of the test.
fn closed_unanswered(stream: &mut TcpStream) -> bool {
    let mut byte = [0];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => true,
        Err(e) => panic!("the server neither answered nor closed: {e}"),
    }
}

fn web(path: &str) -> Vec<u8> {
    let file = if path == "/" { "/index.html" } else { path };
    std::fs::read(format!("{}/../web{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The regression test for the hang: tiny_http kept a thread per idle
/// keep-alive connection and could leave one of a burst of new
/// connections queued with no thread to answer it. Against tiny_http 0.12
/// this failed 4 runs in 4 (an answer never came, in round 1 or 3).
#[test]
fn a_burst_of_page_requests_is_answered_beside_idle_keep_alive_connections() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut stream = connect(http);
            send(&mut stream, "/healthz");
            assert_eq!(answer(&mut stream).unwrap(), (200, b"ok\n".to_vec()));
            stream
        })
        .collect();
    let paths = [
        "/",
        "/style.css",
        "/app.js",
        "/lib/index.js",
        "/lib/client.js",
        "/lib/emitter.js",
        "/lib/errors.js",
        "/lib/frame.js",
        "/lib/payloads.js",
        "/lib/transport.js",
    ];
    // Bursts one after another, each larger than the last: each leaves
    // the server idle resources (tiny_http: parked pool threads) that the
    // next one outgrows, which is where tiny_http lost a connection. With
    // the idle ones and the last burst's, if not yet seen closed, they stay
    // within the 64 connections allowed.
    for (round, size) in [10, 14, 18, 22, 10, 14, 18, 22].into_iter().enumerate() {
        burst(http, &paths, round, size);
    }
    drop(idle);
}

/// `size` connections at once, each asking for a file and then for
/// `/healthz` on the same connection. Like a browser's, every connection
/// stays open until the whole burst is answered: an answer that waits for
/// one of them to close waits for ever (here, until its read times out).
fn burst(http: SocketAddr, paths: &[&'static str], round: usize, size: usize) {
    let start = Arc::new(Barrier::new(size));
    let answered = Arc::new(Barrier::new(size));
    let threads: Vec<_> = (0..size)
        .map(|n| {
            let (start, answered) = (Arc::clone(&start), Arc::clone(&answered));
            let path = paths[(n + round) % paths.len()];
            std::thread::spawn(move || {
                start.wait();
                let mut stream = connect(http);
                let mut exchange = || {
                    send(&mut stream, path);
                    let got = answer(&mut stream).map_err(|e| format!("{path}: {e}"))?;
                    send(&mut stream, "/healthz");
                    let again = answer(&mut stream).map_err(|e| format!("{path}, again: {e}"))?;
                    Ok::<_, String>((path, got, again))
                };
                let outcome = exchange();
                answered.wait();
                outcome
            })
        })
        .collect();
    for thread in threads {
        let outcome = thread.join().unwrap();
        let (path, (status, body), again) =
            outcome.unwrap_or_else(|e| panic!("round {round}: unanswered: {e}"));
        assert_eq!(status, 200, "{path}");
        assert!(body == web(path), "{path}: the file's bytes");
        assert_eq!(again, (200, b"ok\n".to_vec()), "{path}");
    }
}

#[test]
fn a_connection_past_the_bound_is_closed_and_a_trickling_head_is_cut() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    // A head that would take a minute, one byte every 100 ms.
    let mut trickler = connect(http);
    trickler
        .set_read_timeout(Some(HEAD_TIMEOUT + TIMEOUT))
        .unwrap();
    let opened = Instant::now();
    let mut writer = trickler.try_clone().unwrap();
    let trickling = std::thread::spawn(move || {
        let mut sent = writer
            .write(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            .unwrap_or(0);
        for _ in 0..600 {
            if writer.write_all(b"a").is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        sent
    });
    // Filled up to the bound, by idle connections and one that is used.
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS - 2).map(|_| connect(http)).collect();
    let mut used = connect(http);
    send(&mut used, "/healthz");
    assert_eq!(answer(&mut used).unwrap().0, 200);
    // The server has accepted all of them (it accepts in order); one more
    // is closed at once, unanswered.
    let mut extra = connect(http);
    // The server may have closed it before this arrives (then the write
    // fails or the peer answers it with a reset).
    let _ = extra.write_all(&request("/healthz"));
    assert!(closed_unanswered(&mut extra), "past the bound: answered");
    // The others are answered while the trickler trickles.
    send(&mut used, "/readyz");
    assert_eq!(answer(&mut used).unwrap(), (200, b"ready\n".to_vec()));
    // The trickler is cut, no sooner than the head timeout and unanswered.
    assert!(
        closed_unanswered(&mut trickler),
        "the trickler was answered"
    );
    assert!(opened.elapsed() >= HEAD_TIMEOUT, "{:?}", opened.elapsed());
    let sent = trickling.join().unwrap();
    assert!(sent < 600, "the trickler sent its whole head: {sent} bytes");
    // So is every idle connection, which frees their places.
    for mut stream in idle {
        assert!(
            closed_unanswered(&mut stream),
            "an idle connection was answered"
        );
    }
    let mut fresh = connect(http);
    send(&mut fresh, "/healthz");
    assert_eq!(answer(&mut fresh).unwrap().0, 200);
}

#[test]
fn an_oversized_head_is_refused_with_431() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let mut stream = connect(http);
    let huge = "a".repeat(20 * 1024);
    // The server may answer and close before it has read all of this.
    let head = format!("GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Huge: {huge}\r\n\r\n");
    let _ = stream.write_all(head.as_bytes());
    assert_eq!(answer(&mut stream).unwrap().0, 431);
    // A head within the bound is answered.
    let mut stream = connect(http);
    let big = "a".repeat(8 * 1024);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Big: {big}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    assert_eq!(answer(&mut stream).unwrap().0, 200);
}

/// A client that pipelines requests and never reads the answers is cut
/// once the answers stop moving, instead of holding its place for ever.
#[test]
fn a_client_that_never_reads_its_answers_is_cut() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let mut stream = connect(http);
    stream
        .set_write_timeout(Some(HEAD_TIMEOUT + TIMEOUT))
        .unwrap();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let requests = "GET /lib/client.js HTTP/1.1\r\nHost: relay\r\n\r\n".repeat(100);
        // Until the server cuts the connection, or the write (blocked once
        // every buffer between the two is full) times out.
        let error = loop {
            if let Err(e) = stream.write_all(requests.as_bytes()) {
                break e;
            }
        };
        let _ = done.send(error);
    });
    let error = finished.recv_timeout(HEAD_TIMEOUT + 2 * TIMEOUT).unwrap();
    assert!(
        matches!(
            error.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "{error}"
    );
}

#[test]
fn stop_closes_idle_and_half_sent_connections_and_ends() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let mut idle = connect(http);
    send(&mut idle, "/healthz");
    assert_eq!(answer(&mut idle).unwrap().0, 200);
    let mut partial = connect(http);
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let (done, stopped) = mpsc::channel();
    std::thread::spawn(move || {
        server.shutdown();
        let _ = done.send(());
    });
    stopped.recv_timeout(TIMEOUT).unwrap();
    assert!(closed_unanswered(&mut idle));
    assert!(closed_unanswered(&mut partial));
    assert!(TcpStream::connect(http).is_err(), "still listening");
}

/// A request body is never read: the answer comes, then the close.
#[test]
fn a_long_request_body_is_not_read() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let mut stream = connect(http);
    stream
        .write_all(
            b"POST /metrics HTTP/1.1\r\nHost: relay\r\nContent-Length: 100000000\r\n\r\nthe start",
        )
        .unwrap();
    assert_eq!(answer(&mut stream).unwrap().0, 405);
    assert!(closed_unanswered(&mut stream), "the connection stayed open");
}
