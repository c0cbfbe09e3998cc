//! The server binary's logs: a stderr nobody reads cannot stop the server,
//! a client cannot make it log in proportion to its requests, JSON lines
//! carry the connection's fields, and RUST_LOG-style filters apply.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, Command, Stdio};

use serde_json::{Value, json};
use testkit::{Raw, WAIT};

mod support;

use support::{Log, listening_on, signal};

/// Starts the binary with `args` on port 0; returns it and its address.
fn start(args: &[&str]) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("RELAY_LOG_FORMAT")
        .env_remove("RELAY_DEBUG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_on(&mut BufReader::new(child.stdout.take().unwrap()));
    (child, addr)
}

/// Reads all of `stderr` on a thread of its own, so the caller's waits
/// have timeouts.
fn read_all(mut stderr: ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        let _ = tx.send(log);
    });
    rx
}

/// SIGTERMs the server and returns everything it logged; it must exit 0.
fn stop(mut child: Child, log: std::sync::mpsc::Receiver<String>) -> String {
    signal(&child, libc::SIGTERM);
    let log = log.recv_timeout(WAIT).expect("the server did not exit");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    log
}

#[test]
fn a_stderr_nobody_reads_does_not_stop_the_server() {
    // Debug: several lines per cycle, far more than a pipe holds. Before
    // the log had its own thread, the server stopped after 352 cycles.
    let (mut child, addr) = start(&["--log", "debug"]);
    let stderr = child.stderr.take().unwrap();
    const CYCLES: usize = 1_000;
    for i in 0..CYCLES {
        let (mut client, _) = Raw::hello(addr, json!({"userId": format!("u{i}")}));
        client.join("lobby");
    }
    // Reading again: the writer catches up and says what it dropped.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("no line saying how many were dropped");
        if line.contains("log lines dropped") {
            break;
        }
    }
    signal(&child, libc::SIGTERM);
    let mut tail = String::new();
    while let Ok(line) = lines.recv_timeout(WAIT) {
        tail.push_str(&line);
        tail.push('\n');
    }
    assert!(child.wait().unwrap().success(), "{tail}");
    assert!(
        tail.contains(&format!("stopped: {CYCLES} connections served")),
        "{}",
        &tail[tail.len().saturating_sub(2000)..]
    );
}

#[test]
fn a_join_leave_flood_on_fresh_names_is_not_logged_per_request() {
    let (mut child, addr) = start(&[]);
    let log = read_all(child.stderr.take().unwrap());
    let (mut client, _) = Raw::hello(addr, json!({"userId": "flood"}));
    const ROOMS: usize = 3_000;
    for i in 0..ROOMS {
        let room = format!("fresh-{i}");
        client.join(&room);
        client.leave(&room);
    }
    drop(client);
    let log = stop(child, log);
    let requests = 2 * ROOMS;
    // Start-up, one connection and the stop: about a kilobyte in all,
    // whatever the number of requests (it was 222 bytes per request).
    assert!(
        log.len() * 4 < requests,
        "{} bytes of log for {requests} requests:\n{log}",
        log.len()
    );
    assert!(!log.contains("fresh-"), "{log}");
}

#[test]
fn json_lines_parse_and_carry_the_connection() {
    let (mut child, addr) = start(&["--log-format", "json"]);
    let log = read_all(child.stderr.take().unwrap());
    let (mut client, _) = Raw::hello(addr, json!({"userId": "ann"}));
    client.join("r");
    drop(client);
    let log = stop(child, log);
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let disconnected = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("c1: disconnected"))
        })
        .unwrap_or_else(|| panic!("no disconnect line in\n{log}"));
    let span = &disconnected["span"];
    assert_eq!(span["conn"], 1, "{disconnected}");
    assert_eq!(span["user"], "ann", "{disconnected}");
    assert!(
        span["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{disconnected}"
    );
    assert_eq!(disconnected["level"], "INFO");
    assert!(
        lines.iter().any(|line| line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("stopped: 1 connections served"))),
        "{log}"
    );
}

#[test]
fn a_warn_filter_hides_the_info_lines() {
    let (mut child, addr) = start(&["--log", "warn"]);
    let log = read_all(child.stderr.take().unwrap());
    let (mut client, _) = Raw::hello(addr, json!({"userId": "ann"}));
    client.join("r");
    drop(client);
    let log = stop(child, log);
    assert!(log.contains("WARN  authentication is off"), "{log}");
    assert!(!log.contains("INFO"), "{log}");
    assert!(!log.contains("disconnected"), "{log}");
}

#[test]
fn rust_log_is_the_filter_when_no_flag_is_given() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay-server"));
    let mut child = command
        .args(["--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let log = read_all(child.stderr.take().unwrap());
    let log = stop(child, log);
    assert!(!log.contains("authentication is off"), "{log}");
    assert!(!log.contains("stopped:"), "{log}");
}

#[test]
fn a_bad_filter_is_refused_at_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--log", "info,[unclosed"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("relay: bad log filter"), "{stderr}");
}

#[test]
fn sighup_rereads_the_log_filter_file() {
    let path = std::env::temp_dir().join(format!("relay-log-filter-{}", std::process::id()));
    std::fs::write(&path, "# quiet to begin with\nwarn\n").unwrap();
    let (mut child, addr) = start(&["--log-filter-file", path.to_str().unwrap()]);
    // Line by line, so the test can wait for the reload to be logged.
    let (log, collector) = Log::follow(child.stderr.take().unwrap());
    let (mut before, _) = Raw::hello(addr, json!({"userId": "before"}));
    before.join("r");
    drop(before);

    std::fs::write(&path, "info\n").unwrap();
    signal(&child, libc::SIGHUP);
    testkit::wait_until("the new filter logged", || {
        log.contains("reload: log filter is now \"info\"")
    });
    let (mut after, _) = Raw::hello(addr, json!({"userId": "after"}));
    after.join("r");
    drop(after);

    // A file without a filter keeps the one in force.
    std::fs::write(&path, "# nothing\n").unwrap();
    signal(&child, libc::SIGHUP);
    testkit::wait_until("the refusal logged", || {
        log.contains("reload: log filter refused")
    });
    signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    collector.join().unwrap();
    let log = log.text();
    assert!(!log.contains("user=\"before\""), "{log}");
    assert!(log.contains("user=\"after\""), "{log}");
    let _ = std::fs::remove_file(&path);
}
