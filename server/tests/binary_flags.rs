//! The server binary's flags and log lines as a user meets them: addresses
//! as typed, settings that cannot work, a bad environment value named as
//! the variable, the version, HELLO at INFO, payload previews with --debug,
//! signals by name, and SIGHUP from a closed terminal.

#![allow(clippy::unwrap_used)]

use std::io::{BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::json;
use testkit::{Raw, WAIT, wait_until};

mod support;

use support::{Log, listening_on, signal};

fn server(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay-server"));
    command.args(args);
    for var in [
        "RELAY_ADDR",
        "RELAY_PORT",
        "RELAY_MAX_FRAME",
        "RELAY_DEBUG",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    for (var, value) in env {
        command.env(var, value);
    }
    command.output().unwrap()
}

fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = server(args, env);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn settings_that_cannot_work_are_refused_and_name_their_source() {
    let stderr = refused(&["--addr", "127.0.0.1:0", "--max-connections", "0"], &[]);
    assert!(
        stderr.contains("--max-connections must be at least 1"),
        "{stderr}"
    );
    let stderr = refused(&["--addr", "127.0.0.1:0", "--max-rooms", "0"], &[]);
    assert!(
        stderr.contains("--max-rooms must be at least 1"),
        "{stderr}"
    );
    let stderr = refused(&["--addr", "127.0.0.1:0", "--max-frame", "4294967295"], &[]);
    assert!(
        stderr.contains("--max-frame must be at most 67108864 (64 MiB)"),
        "{stderr}"
    );
    // From the environment: the variable is named, not the flag.
    let stderr = refused(&["--addr", "127.0.0.1:0"], &[("RELAY_MAX_FRAME", "lots")]);
    assert!(
        stderr.contains("RELAY_MAX_FRAME (from the environment)"),
        "{stderr}"
    );
    assert!(!stderr.contains("--max-frame"), "{stderr}");
    let stderr = refused(
        &["--addr", "127.0.0.1:0"],
        &[("RELAY_MAX_FRAME", "4294967295")],
    );
    assert!(
        stderr.contains("RELAY_MAX_FRAME must be at most"),
        "{stderr}"
    );
    let stderr = refused(
        &[],
        &[("RELAY_ADDR", "127.0.0.1:0"), ("RELAY_MAX_ROOMS", "0")],
    );
    assert!(
        stderr.contains("RELAY_MAX_ROOMS must be at least 1"),
        "{stderr}"
    );
    let stderr = refused(&["--addr", "127.0.0.1:4000", "--port", "5"], &[]);
    assert!(stderr.contains("--addr already names a port"), "{stderr}");
    let stderr = refused(&["--addr", "http://x:1"], &[]);
    assert!(stderr.contains("HOST:PORT"), "{stderr}");
}

#[test]
fn version_works_on_the_server_binary() {
    let output = server(&["--version"], &[]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        format!("relay-server {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Starts the server with `args`; its first stdout line's address, and its
/// log as written.
fn start(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, std::net::SocketAddr, Log) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay-server"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("RELAY_DEBUG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (var, value) in env {
        command.env(var, value);
    }
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = listening_on(&mut stdout);
    let (log, _) = Log::follow(child.stderr.take().unwrap());
    (child, addr, log)
}

fn stop(mut child: std::process::Child) {
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
}

#[test]
fn an_address_without_a_port_takes_port_and_the_log_tells_version_hello_and_signals_by_name() {
    let (child, addr, log) = start(
        &["--addr", "127.0.0.1", "--port", "0"],
        &[("RELAY_DEBUG", "maybe")],
    );
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let (_client, _) = Raw::hello(addr, json!({"userId": "ann", "clientVersion": "test/1"}));
    wait_until("the HELLO line", || {
        log.contains("c1: HELLO as \"ann\" (\"test/1\")")
    });
    let text = log.text();
    assert!(
        text.contains(&format!(
            "INFO  relay-server {} (protocol v1) started",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.contains("WARN  RELAY_DEBUG=\"maybe\" is not understood"),
        "{text}"
    );
    signal(&child, libc::SIGTERM);
    wait_until("the signal's name", || {
        log.contains("SIGTERM received; draining")
    });
    stop(child);
}

#[test]
fn debug_shows_a_bounded_preview_of_each_payload_but_never_a_hello() {
    let (child, addr, log) = start(&["--addr", "127.0.0.1:0", "--debug"], &[]);
    let (mut client, _) = Raw::hello(addr, json!({"userId": "dee", "token": "never-logged-0123"}));
    client.join("preview-room");
    let long = "x".repeat(500);
    client.send_json(
        protocol::MessageType::Message,
        &json!({"room": "preview-room", "content": long}),
    );
    wait_until("the MESSAGE line", || log.contains("→ MESSAGE"));
    let text = log.text();
    assert!(text.contains("(HELLO payload not shown)"), "{text}");
    assert!(!text.contains("never-logged"), "{text}");
    assert!(text.contains(r#"\"room\":\"preview-room\""#), "{text}");
    let message = text.lines().find(|l| l.contains("→ MESSAGE")).unwrap();
    assert!(message.ends_with("...") && message.len() < 300, "{message}");
    stop(child);
}

#[test]
fn closing_the_terminal_stops_the_server_gracefully() {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_relay-server"));
    command.args(["--addr", "127.0.0.1:0", "--drain-timeout", "0"]);
    command.env_remove("RUST_LOG");
    let mut child = pty.slave.spawn_command(command).unwrap();
    drop(pty.slave);
    // Read until the server is up, on a thread that then lets go of its copy
    // of the terminal's master side.
    let mut reader = pty.master.try_clone_reader().unwrap();
    let (sender, up) = crossbeam_channel::bounded::<String>(1);
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        while !seen.contains("accepting up to") {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        let _ = sender.send(seen);
    });
    let seen = up.recv_timeout(WAIT).expect("the server started");
    assert!(seen.contains("listening on"), "{seen}");
    // The window closes: the kernel hangs the terminal up and sends SIGHUP.
    drop(pty.master);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running after its terminal closed");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}
