//! The HTTP endpoint (SPEC.md 12), through a real socket: health and
//! readiness, the metrics after a chat, the listings during one, and a real
//! `promtool` and Prometheus reading the exposition when they are installed.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protocol::MessageType;
use serde_json::{Value, json};
use testkit::{Raw, start_server_with, wait_until};

const TIMEOUT: Duration = Duration::from_secs(10);

fn with_http() -> server::RunningServer {
    start_server_with(server::Config {
        http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Default::default()
    })
}

/// A minimal HTTP/1.1 client: one request, `Connection: close`, the
/// status and the body.
fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path).unwrap()
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The value of the sample named exactly `sample` (labels included).
fn metric(exposition: &str, sample: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok())?
    })
}

/// Two clients in room "lobby", one message from the first to the second.
fn chat(addr: SocketAddr) -> (Raw, Raw) {
    let (mut alice, _) = Raw::hello(addr, json!({ "userId": "alice" }));
    let (mut bob, _) = Raw::hello(addr, json!({ "userId": "bob" }));
    alice.join("lobby");
    bob.join("lobby");
    alice.publish("lobby", json!("hi"));
    bob.expect_skipping_messages(MessageType::Message);
    (alice, bob)
}

#[test]
fn health_is_ok_and_readiness_fails_once_shutdown_begins() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    assert_eq!(get(http, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(http, "/readyz").0, 200);
    // A client that neither reads nor closes keeps the server stopping
    // (for up to its flush bound), while HTTP still answers.
    let (client, _) = Raw::hello(server.local_addr(), json!({}));
    server.shutdown_handle().shutdown();
    let (status, body) = get(http, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(get(http, "/healthz").0, 200);
    drop(client);
    server.shutdown();
    assert!(
        request(http, "GET", "/healthz").is_err(),
        "HTTP stops with the server"
    );
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    assert_eq!(get(http, "/nope").0, 404);
    assert_eq!(get(http, "/lib/nope.js").0, 404);
    assert_eq!(request(http, "POST", "/metrics").unwrap().0, 405);
    assert_eq!(request(http, "DELETE", "/connz").unwrap().0, 405);
    assert_eq!(get(http, "/connz?limit=lots").0, 400);
}

#[test]
fn the_server_has_no_http_port_unless_asked() {
    let server = testkit::start_server();
    assert_eq!(server.http_addr(), None);
}

#[test]
fn metrics_move_with_a_chat_and_agree_with_the_counters() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let (status, before) = get(http, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&before, "relay_connections"), Some(0.0));
    assert_eq!(
        metric(&before, r#"relay_frames_in_total{type="hello"}"#),
        Some(0.0)
    );
    let (_alice, _bob) = chat(server.local_addr());
    // A frame is counted once the write that completes it returns, which
    // the client's read does not wait for.
    let after = wait_for_metrics(http, |after| {
        metric(after, r#"relay_frames_out_total{type="message"}"#) == Some(2.0)
    });
    assert_eq!(metric(&after, "relay_connections"), Some(2.0));
    assert_eq!(metric(&after, "relay_rooms"), Some(1.0));
    assert_eq!(metric(&after, "relay_memberships"), Some(2.0));
    assert_eq!(
        metric(&after, "relay_connections_accepted_total"),
        Some(2.0)
    );
    // HELLO x2, JOIN x2, MESSAGE x1 in; out, the answers, Bob's arrival
    // told to Alice, and Alice's message to Bob.
    let typed = |name: &str, kind: &str| {
        metric(&after, &format!(r#"{name}{{type="{kind}"}}"#)).unwrap_or(-1.0)
    };
    assert_eq!(typed("relay_frames_in_total", "hello"), 2.0);
    assert_eq!(typed("relay_frames_in_total", "join_room"), 2.0);
    assert_eq!(typed("relay_frames_in_total", "message"), 1.0);
    assert_eq!(typed("relay_frames_in_total", "leave_room"), 0.0);
    assert_eq!(typed("relay_frames_out_total", "hello"), 2.0);
    assert_eq!(typed("relay_frames_out_total", "join_room"), 2.0);
    assert_eq!(typed("relay_frames_out_total", "message"), 2.0);
    assert_eq!(typed("relay_frames_out_total", "error"), 0.0);
    // A frame's bytes include its 7-byte header.
    assert!(typed("relay_frame_bytes_in_total", "hello") >= 14.0);
    assert!(typed("relay_frame_bytes_out_total", "message") > 14.0);
    assert!(metric(&after, "relay_bytes_out_total").unwrap() > 0.0);
    assert!(metric(&after, "relay_threads").unwrap() >= 4.0);
    // A chat where everyone reads: no publisher ever waited, nothing dropped.
    assert_eq!(metric(&after, "relay_stall_waits_total"), Some(0.0));
    assert_eq!(metric(&after, "relay_log_lines_dropped_total"), Some(0.0));
    // Every label value is there, at 0 until it happens.
    assert_eq!(
        metric(&after, r#"relay_errors_sent_total{code="SERVER_FULL"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &after,
            r#"relay_connections_refused_total{reason="per_address"}"#
        ),
        Some(0.0)
    );
    // One source of truth: the same atomics as the counters (and HELLO),
    // whose frame counts are the sums over types.
    let stats = server.counters().snapshot();
    assert_eq!(
        metric(&after, "relay_connections_accepted_total"),
        Some(stats.connections_total as f64)
    );
    let sum = |name: &str| -> f64 {
        after
            .lines()
            .filter(|line| line.starts_with(&format!("{name}{{type=")))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(sum("relay_frames_in_total"), stats.frames_in as f64);
    assert_eq!(sum("relay_frames_out_total"), stats.frames_out as f64);
    // The socket's byte count holds every frame's bytes (and nothing is
    // left partial in a quiet chat).
    assert_eq!(sum("relay_frame_bytes_in_total"), stats.bytes_in as f64);
}

#[test]
fn histograms_count_a_broadcast_its_queue_depth_and_its_latency() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let addr = server.local_addr();
    let (mut alice, _) = Raw::hello(addr, json!({ "userId": "alice" }));
    alice.join("hall");
    let mut members: Vec<Raw> = (0..3)
        .map(|_| {
            let (mut member, _) = Raw::hello(addr, json!({}));
            member.join("hall");
            member
        })
        .collect();
    // The joins told the members already there: 1, 2, then 3 of them.
    let before = wait_for_metrics(http, |before| {
        metric(before, "relay_broadcast_fanout_count") == Some(3.0)
            && metric(before, "relay_delivery_latency_seconds_count") == Some(6.0)
    });
    let fan_outs = 3.0;
    let timed = 6.0;
    alice.publish("hall", json!("to all three"));
    for member in &mut members {
        member.expect_skipping_messages(MessageType::Message);
    }
    // The delivery is counted once the write that completed it returned,
    // which the member's read does not wait for.
    let after = wait_for_metrics(http, |after| {
        metric(after, "relay_delivery_latency_seconds_count") == Some(timed + 3.0)
    });
    // One MESSAGE to three members (Alice does not echo).
    assert_eq!(
        metric(&after, "relay_broadcast_fanout_count"),
        Some(fan_outs + 1.0)
    );
    let fan_out_sum = metric(&after, "relay_broadcast_fanout_sum").unwrap()
        - metric(&before, "relay_broadcast_fanout_sum").unwrap();
    assert_eq!(fan_out_sum, 3.0);
    assert_eq!(
        metric(&after, r#"relay_broadcast_fanout_bucket{le="2.0"}"#),
        metric(&before, r#"relay_broadcast_fanout_bucket{le="2.0"}"#),
        "a fan-out of 3 is above the bucket of 2"
    );
    assert!(
        metric(&after, r#"relay_broadcast_fanout_bucket{le="5.0"}"#).unwrap() >= fan_outs + 1.0
    );
    // Every sampled delivery found its own bytes at least in the queue.
    let depths = metric(&after, "relay_queue_depth_bytes_count").unwrap();
    assert!(depths >= 3.0, "{after}");
    assert!(metric(&after, "relay_queue_depth_bytes_sum").unwrap() >= depths * 14.0);
    // A latency is positive and, on any machine, under the top bucket.
    assert!(metric(&after, "relay_delivery_latency_seconds_sum").unwrap() > 0.0);
    assert_eq!(
        metric(
            &after,
            r#"relay_delivery_latency_seconds_bucket{le="10.0"}"#
        ),
        metric(
            &after,
            r#"relay_delivery_latency_seconds_bucket{le="+Inf"}"#
        ),
        "{after}"
    );
}

/// Scrapes until `ready` holds, for [`TIMEOUT`] at most; the last scrape.
fn wait_for_metrics(http: SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, exposition) = get(http, "/metrics");
        if ready(&exposition) {
            return exposition;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there:\n{exposition}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn refusals_and_closes_are_counted_by_reason() {
    let server = start_server_with(server::Config {
        http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        max_connections_per_ip: 1,
        ..Default::default()
    });
    let http = server.http_addr().unwrap();
    let (first, _) = Raw::hello(server.local_addr(), json!({}));
    let mut second = Raw::connect(server.local_addr());
    second.expect_fatal("SERVER_FULL");
    let (_, metrics) = get(http, "/metrics");
    assert_eq!(
        metric(
            &metrics,
            r#"relay_connections_refused_total{reason="per_address"}"#
        ),
        Some(1.0)
    );
    drop(first);
    wait_until("the first connection to close", || {
        server.counters().connections() == 0
    });
    let (_, metrics) = get(http, "/metrics");
    let closes: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("relay_closes_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(closes, 1.0, "{metrics}");
}

#[test]
fn connz_and_roomz_list_a_chat_in_stable_pages() {
    let server = with_http();
    let http = server.http_addr().unwrap();
    let (mut alice, mut bob) = chat(server.local_addr());
    alice.join("attic");
    bob.join("zoo");

    // Alice: HELLO, JOIN lobby, MESSAGE, JOIN attic in; her HELLO and two
    // JOIN answers, and Bob's arrival, out. Bob: HELLO and two JOINs in;
    // his HELLO and two JOIN answers and Alice's message out. Counted as
    // each read ends and each write returns, which the clients' reads do
    // not wait for.
    let counts = |connz: &Value| -> Vec<(u64, u64)> {
        connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let count = |key: &str| c[key].as_u64().unwrap_or(0);
                (count("frames_in"), count("frames_out"))
            })
            .collect()
    };
    let deadline = Instant::now() + TIMEOUT;
    let connz = loop {
        let connz = get_json(http, "/connz");
        if counts(&connz) == [(4, 4), (3, 4)] {
            break connz;
        }
        assert!(
            Instant::now() < deadline,
            "the counts never got there: {connz}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(connz["total"], 2);
    assert_eq!(connz["offset"], 0);
    assert_eq!(connz["limit"], 100);
    let connections = connz["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 2);
    let ids: Vec<u64> = connections
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap();
            id.strip_prefix('c').unwrap().parse().unwrap()
        })
        .collect();
    assert!(ids[0] < ids[1], "sorted by id: {ids:?}");
    assert_eq!(connections[0]["user"], "alice");
    assert_eq!(connections[1]["user"], "bob");
    for connection in connections {
        assert_eq!(connection["tls"], false);
        assert!(
            connection["address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        assert!(connection["queued_bytes"].is_u64());
        assert!(connection["age_seconds"].is_u64());
        assert_eq!(connection["rooms_total"], 2);
    }
    assert_eq!(connections[0]["rooms"], json!(["attic", "lobby"]));
    assert_eq!(connections[1]["rooms"], json!(["lobby", "zoo"]));
    for connection in connections {
        let bytes_in = connection["bytes_in"].as_u64().unwrap();
        let frames_in = connection["frames_in"].as_u64().unwrap();
        assert!(bytes_in >= 7 * frames_in, "{connection}");
        let bytes_out = connection["bytes_out"].as_u64().unwrap();
        let frames_out = connection["frames_out"].as_u64().unwrap();
        assert!(bytes_out >= 7 * frames_out, "{connection}");
    }
    let second = get_json(http, "/connz?offset=1&limit=1");
    assert_eq!(second["total"], 2);
    assert_eq!(second["connections"][0]["id"], connections[1]["id"]);

    let roomz = get_json(http, "/roomz");
    assert_eq!(roomz["total"], 3);
    let rooms: Vec<(String, u64)> = roomz["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["members"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rooms,
        [("attic".into(), 1), ("lobby".into(), 2), ("zoo".into(), 1)]
    );
    let page = get_json(http, "/roomz?offset=1&limit=1");
    assert_eq!(page["rooms"][0]["name"], "lobby");
    // Bob's arrival (a member event) and Alice's "hi".
    assert_eq!(page["rooms"][0]["messages"], 2);
    assert_eq!(roomz["rooms"][0]["messages"], 0);
    assert_eq!(page["rooms"].as_array().unwrap().len(), 1);
    let past_the_end = get_json(http, "/roomz?offset=10");
    assert_eq!(past_the_end["rooms"].as_array().unwrap().len(), 0);
    let capped = get_json(http, "/roomz?limit=1000000");
    assert_eq!(capped["limit"], 1000);
}

/// `name` on PATH, or `None` after a note; on CI (`CI=true`) its absence
/// fails the test.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is not installed; .ci/run installs it (Debian package prometheus)"
        );
        eprintln!("skipped: {name} is not installed (apt-get install prometheus)");
    }
    found
}

#[test]
fn promtool_accepts_the_exposition() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let server = with_http();
    let (_alice, _bob) = chat(server.local_addr());
    let (_, metrics) = get(server.http_addr().unwrap(), "/metrics");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Kills and reaps the child, and removes its directory, however the test
/// ends.
struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_real_prometheus_scrapes_the_server() {
    let Some(binary) = tool("prometheus") else {
        return;
    };
    let server = with_http();
    let http = server.http_addr().unwrap();
    let (_client, _) = Raw::hello(server.local_addr(), json!({}));

    let dir = std::env::temp_dir().join(format!(
        "relay-prometheus-{}-{}",
        std::process::id(),
        http.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: relay\n    static_configs:\n      - targets: ['{http}']\n"
        ),
    )
    .unwrap();
    // Prometheus cannot listen on port 0: take a free port and give it back.
    let web = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _prometheus = Prometheus { child, dir };

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = request(web, "GET", "/api/v1/query?query=relay_connections")
            .ok()
            .and_then(|(status, body)| (status == 200).then_some(body))
            .and_then(|body| serde_json::from_str::<Value>(&body).ok());
        if let Some(answer) = answer
            && let Some(sample) = answer["data"]["result"].get(0)
        {
            assert_eq!(sample["value"][1], "1", "{answer}");
            assert_eq!(sample["metric"]["job"], "relay");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not report relay_connections within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
