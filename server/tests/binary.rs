//! The server binary: flags, its `listening on` line, and a graceful stop on
//! SIGTERM that tells clients, exits 0 and logs the final counters.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use protocol::MessageType;
use serde_json::json;
use testkit::{Raw, WAIT};

#[test]
fn sigterm_stops_the_server_gracefully() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let (mut client, _) = Raw::hello(addr, json!({"userId": "ann"}));
    client.join("r");

    // SAFETY: kill only sends a signal to the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let error = client
        .expect_skipping_messages(MessageType::Error)
        .expect_error();
    assert_eq!(error.code.as_str(), "SHUTTING_DOWN");
    client.expect_close();
    drop(client);

    let (tx, rx) = std::sync::mpsc::channel();
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        let status = child.wait().unwrap();
        let _ = tx.send((status, log));
    });
    let (status, log) = rx.recv_timeout(WAIT).expect("the server did not exit");
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("signal 15 received"), "{log}");
    assert!(log.contains("stopped: 1 connections served"), "{log}");
    assert!(log.contains("c1: disconnected"), "{log}");
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--max-frame", "2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("relay: --max-frame must be at least"),
        "{stderr}"
    );
}
