//! The `relay` binary driven through pipes, against an in-process server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use testkit::{start_server, start_server_with};

mod support;

use support::cli::{Live, cli, run_script, wait_exit};

#[test]
fn a_script_joins_sends_and_exits_zero_after_the_replies() {
    let server = start_server();
    let (status, out, err) = run_script(
        server.local_addr(),
        &["--name", "alice"],
        "join physics\nsend hi\nrooms\nheartbeat\nleave\n",
    );
    assert!(status.success(), "status {status}, stderr {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("connected to ") && lines[0].contains(" as alice (c"),
        "{out}"
    );
    assert_eq!(lines[1], "joined physics (0 other members)", "{out}");
    assert_eq!(lines[2], "rooms: physics (current)", "{out}");
    assert!(lines[3].starts_with("heartbeat: round trip "), "{out}");
    assert_eq!(lines[4], "left physics", "{out}");
    assert_eq!(lines.len(), 5, "{out}");
    // Not a terminal: no colour codes.
    assert!(!out.contains('\x1b'), "{out:?}");
}

#[test]
fn misuse_gets_clear_messages() {
    let server = start_server();
    let (status, out, _) = run_script(
        server.local_addr(),
        &["--name", "m"],
        "send too early\nhello?\n/dance now\njoin\nleave\n",
    );
    assert!(status.success());
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(
        errors,
        [
            "error: not in a room; join one first with: join <room>",
            "error: not in a room; join one first with: join <room>",
            "error: unknown command /dance; type help for the list",
            "error: usage: join <room>",
            "error: not in a room; nothing to leave",
        ],
        "{out}"
    );
}

#[test]
fn server_errors_are_printed_with_their_code() {
    let server = start_server_with_one_room();
    let (status, out, _) = run_script(server.local_addr(), &["--name", "e"], "join a\njoin b\n");
    assert!(status.success());
    assert!(
        out.lines().any(|l| l.starts_with("error: INVALID_ROOM: ")),
        "{out}"
    );
}

fn start_server_with_one_room() -> server::RunningServer {
    start_server_with(server::Config {
        max_rooms_per_connection: 1,
        ..server::Config::default()
    })
}

#[test]
fn echo_prints_own_messages_in_the_documented_format() {
    let server = start_server();
    let (status, out, _) = run_script(
        server.local_addr(),
        &["--name", "self", "--echo"],
        "join r\nhello me\n",
    );
    assert!(status.success());
    let line = out
        .lines()
        .find(|l| l.starts_with("[r] "))
        .unwrap_or_else(|| panic!("no message line in {out}"));
    // [r] self (HH:MM:SS): hello me
    let (head, content) = line.split_once("): ").expect("format");
    assert_eq!(content, "hello me");
    let time = head.strip_prefix("[r] self (").expect("prefix");
    assert_eq!(time.len(), 8);
    assert!(time.chars().enumerate().all(|(i, c)| if i == 2 || i == 5 {
        c == ':'
    } else {
        c.is_ascii_digit()
    }));
}

#[test]
fn two_clis_in_the_same_room_see_each_other() {
    let server = start_server();
    let addr = server.local_addr();
    let mut alice = Live::start(addr, &["--name", "alice"]);
    alice.expect("connected to");
    alice.type_line("join lobby");
    alice.expect("joined lobby (0 other members)");

    let mut bob = Live::start(addr, &["--name", "bob"]);
    bob.expect("connected to");
    bob.type_line("join lobby");
    bob.expect("joined lobby (1 other member)");
    alice.expect("[lobby] * bob joined");

    alice.type_line("hi bob");
    let line = bob.expect("hi bob");
    assert!(line.starts_with("[lobby] alice ("), "{line}");
    bob.type_line("send hello alice");
    let line = alice.expect("hello alice");
    assert!(line.starts_with("[lobby] bob ("), "{line}");

    let (status, _) = bob.finish();
    assert!(status.success());
    alice.expect("[lobby] * bob left");
    let (status, _) = alice.finish();
    assert!(status.success());
}

#[test]
fn a_lost_connection_is_reported_plainly() {
    let server = start_server();
    let mut live = Live::start(server.local_addr(), &["--name", "z"]);
    live.expect("connected to");
    live.type_line("join r");
    live.expect("joined r");
    server.shutdown();
    let line = live.expect("disconnected:");
    assert!(
        line.starts_with("disconnected: server closed the connection: SHUTTING_DOWN"),
        "{line}"
    );
    let status = wait_exit(&mut live.child);
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    live.child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_quiet_session_outlives_the_idle_timeout() {
    let server = start_server_with(server::Config {
        idle_timeout: Duration::from_millis(1200),
        ..server::Config::default()
    });
    let mut live = Live::start(server.local_addr(), &["--name", "reader"]);
    live.expect("connected to");
    live.type_line("join r");
    live.expect("joined r");
    // Two idle timeouts without typing: the CLI's heartbeats keep it open.
    live.expect_none("disconnected", Duration::from_millis(2500));
    live.type_line("rooms");
    live.expect("rooms: r (current)");
    let (status, _) = live.finish();
    assert!(status.success());
}

#[test]
fn no_server_is_an_error_on_stderr() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (status, out, err) = run_script(addr, &[], "join x\n");
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
    assert!(err.starts_with("relay: cannot connect to "), "{err}");
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn help_names_the_history_file() {
    let server = start_server();
    let mut command = cli(server.local_addr(), &["--name", "h"]);
    command.env("XDG_DATA_HOME", "/tmp/relay-test-data");
    let mut child = command.spawn().expect("start");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"help\n")
        .expect("write");
    let status = wait_exit(&mut child);
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(status.success());
    assert!(
        out.contains("join <room>") && out.contains("heartbeat"),
        "{out}"
    );
    assert!(
        out.contains("history file: /tmp/relay-test-data/relay/history"),
        "{out}"
    );
}

fn start_server_with_tokens() -> server::RunningServer {
    let tokens = "cli-test-token-0123456789 carol join=r publish=r\n";
    start_server_with(server::Config {
        auth: server::auth::AuthConfig {
            tokens: Some(server::auth::TokenTable::parse(tokens, "test").expect("tokens")),
            jwt: None,
        },
        ..server::Config::default()
    })
}

#[test]
fn a_token_logs_in_as_its_user() {
    let server = start_server_with_tokens();
    let (status, out, err) = run_script(
        server.local_addr(),
        &["--token", "cli-test-token-0123456789", "--echo"],
        "join r\nhi\njoin other\n",
    );
    assert!(status.success(), "{err}");
    assert!(out.lines().any(|l| l.starts_with("[r] carol (")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("error: FORBIDDEN: ")),
        "{out}"
    );
}

#[test]
fn a_wrong_token_is_refused_with_auth_failed() {
    let server = start_server_with_tokens();
    let (status, _, err) = run_script(server.local_addr(), &["--token", "wrong"], "join r\n");
    assert!(!status.success());
    assert!(err.contains("AUTH_FAILED: authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
}
