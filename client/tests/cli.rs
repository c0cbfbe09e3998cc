//! The `relay` chat driven through pipes (the scriptable stdin mode),
//! against an in-process server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use testkit::{start_server, start_server_with};

mod support;

use support::cli::{Live, STDERR, cli, run_script, wait_exit};

/// Standard error's lines.
fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn a_script_joins_sends_and_exits_zero_after_the_replies() {
    let server = start_server();
    let (status, out, err) = run_script(
        server.local_addr(),
        &["--name", "alice", "--echo"],
        "/join physics\nhi\n/rooms\n/ping\n/leave\n",
    );
    assert!(status.success(), "status {status}, stderr {err}");
    // Standard output carries only the messages.
    let out = lines(&out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        out[0].starts_with("[physics] alice (") && out[0].ends_with("): hi"),
        "{out:?}"
    );
    let err = lines(&err);
    assert!(
        err[0].starts_with("connected to relay://127.0.0.1:") && err[0].contains(" as alice (c"),
        "{err:?}"
    );
    assert_eq!(err[1], "joined physics (0 other members)", "{err:?}");
    assert_eq!(err[2], "rooms: physics (current)", "{err:?}");
    assert!(err[3].starts_with("round trip "), "{err:?}");
    assert_eq!(err[4], "left physics", "{err:?}");
    assert_eq!(err.len(), 5, "{err:?}");
    // Not a terminal: no colour codes.
    assert!(!err.concat().contains('\x1b'), "{err:?}");
}

#[test]
fn quiet_leaves_only_errors_on_stderr() {
    let server = start_server();
    let (status, out, err) = run_script(
        server.local_addr(),
        &["--name", "q", "-q", "--echo"],
        "/join r\nhello\n",
    );
    assert!(status.success(), "{err}");
    assert_eq!(err, "");
    assert!(out.ends_with("): hello\n"), "{out}");
}

#[test]
fn only_a_slash_makes_a_command() {
    let server = start_server();
    let (status, out, err) = run_script(
        server.local_addr(),
        &["--name", "s", "--echo"],
        "/join lunch\njoin us at 5 for lunch\njion chemistry\n//etc\n/rooms\n",
    );
    assert!(status.success(), "{err}");
    let messages: Vec<&str> = out
        .lines()
        .map(|l| l.split_once("): ").expect("a message line").1)
        .collect();
    assert_eq!(
        messages,
        ["join us at 5 for lunch", "jion chemistry", "/etc"]
    );
    // No room was joined by a bare word, and the user was told once.
    assert!(err.contains("rooms: lunch (current)\n"), "{err}");
    assert_eq!(err.matches("commands start with /").count(), 1, "{err}");
}

#[test]
fn misuse_gets_clear_messages_and_exit_1() {
    let server = start_server();
    let (status, _, err) = run_script(
        server.local_addr(),
        &["--name", "m"],
        "send too early\n/dance now\n/join\n/leave\n",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(
        errors,
        [
            "error: not in a room; join one first with: /join <room>",
            "error: unknown command /dance; type /help for the list",
            "error: usage: /join <room> [--history N]",
            "error: not in a room; nothing to leave",
        ],
        "{err}"
    );
}

#[test]
fn server_errors_are_printed_with_their_code_and_exit_1() {
    let server = start_server_with_one_room();
    let (status, _, err) = run_script(server.local_addr(), &["--name", "e"], "/join a\n/join b\n");
    assert_eq!(status.code(), Some(1));
    assert!(
        err.lines().any(|l| l.starts_with("error: INVALID_ROOM: ")),
        "{err}"
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
        "/join r\nhello me\n",
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
fn json_output_has_every_field_and_binary_as_base64() {
    let server = start_server();
    let addr = server.local_addr();
    let mut reader = Live::start(addr, &["--name", "reader", "--json"]);
    reader.expect("connected to");
    reader.type_line("/join r");
    reader.expect("joined r");
    let sender = client::Client::connect(addr).expect("connect");
    sender
        .hello_as(Some("writer"), false, testkit::WAIT)
        .expect("hello");
    sender.join_and_wait("r", testkit::WAIT).expect("join");
    sender.send_text("r", "hi").expect("send");
    sender.send_binary("r", &[0, 1, 0xfe, 0xff]).expect("send");
    let text: serde_json::Value =
        serde_json::from_str(&reader.expect("\"hi\"")).expect("a JSON line");
    assert_eq!(text["room"], "r");
    assert_eq!(text["user"], "writer");
    assert_eq!(text["content"], "hi");
    assert!(text["from"].as_str().is_some_and(|f| f.starts_with('c')));
    assert!(text["timestamp"].as_u64().is_some_and(|t| t > 0));
    let binary: serde_json::Value =
        serde_json::from_str(&reader.expect("\"binary\"")).expect("a JSON line");
    assert_eq!(binary["content"], "AAH+/w==");
    assert_eq!(binary["binary"], true);
    let (status, _) = reader.finish();
    assert!(status.success());
}

#[test]
fn two_clis_in_the_same_room_see_each_other() {
    let server = start_server();
    let addr = server.local_addr();
    let mut alice = Live::start(addr, &["--name", "alice"]);
    alice.expect("connected to");
    alice.type_line("/join lobby");
    alice.expect("joined lobby (0 other members)");

    let mut bob = Live::start(addr, &["--name", "bob"]);
    bob.expect("connected to");
    bob.type_line("/join lobby");
    bob.expect("joined lobby (1 other member)");
    alice.expect("[lobby] * bob joined");

    alice.type_line("hi bob");
    let line = bob.expect("hi bob");
    assert!(line.starts_with("[lobby] alice ("), "{line}");
    bob.type_line("/send hello alice");
    let line = alice.expect("hello alice");
    assert!(line.starts_with("[lobby] bob ("), "{line}");
    alice.type_line("/who");
    // Asked of the server (WHO): every member, oldest first.
    let line = alice.expect("lobby: 2 members");
    assert!(line.contains(": alice (c"), "{line}");
    assert!(line.contains("(you), bob (c"), "{line}");

    let (status, _) = bob.finish();
    assert!(status.success());
    alice.expect("[lobby] * bob left");
    let (status, _) = alice.finish();
    assert!(status.success());
}

#[test]
fn a_lost_connection_is_reported_plainly_and_exits_5() {
    let server = start_server();
    let mut live = Live::start(server.local_addr(), &["--name", "z"]);
    live.expect("connected to");
    live.type_line("/join r");
    live.expect("joined r");
    server.shutdown();
    let line = live.expect("disconnected:");
    assert!(
        line.starts_with(&format!(
            "{STDERR}disconnected: server closed the connection: SHUTTING_DOWN"
        )),
        "{line}"
    );
    let status = wait_exit(&mut live.child);
    assert_eq!(status.code(), Some(5));
    live.expect_none("panicked", Duration::from_millis(100));
}

#[test]
fn a_quiet_session_outlives_the_idle_timeout() {
    let server = start_server_with(server::Config {
        idle_timeout: Duration::from_millis(1200),
        ..server::Config::default()
    });
    let mut live = Live::start(server.local_addr(), &["--name", "reader"]);
    live.expect("connected to");
    live.type_line("/join r");
    live.expect("joined r");
    // Two idle timeouts without typing: the CLI's heartbeats keep it open.
    live.expect_none("disconnected", Duration::from_millis(2500));
    live.type_line("/rooms");
    live.expect("rooms: r (current)");
    let (status, _) = live.finish();
    assert!(status.success());
}

#[test]
fn no_server_exits_3_with_the_reason_on_stderr() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (status, out, err) = run_script(addr, &[], "/join x\n");
    assert_eq!(status.code(), Some(3));
    assert_eq!(out, "");
    assert!(err.starts_with("relay: cannot connect to "), "{err}");
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn a_silent_port_did_not_answer_and_a_foreign_service_is_not_relay() {
    // Accepts, and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (status, _, err) = run_script(
        silent.local_addr().expect("addr"),
        &["--connect-timeout", "0.5"],
        "",
    );
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("did not answer within 500"), "{err}");
    assert!(!err.contains("refused the login"), "{err}");

    // Answers like an HTTP server.
    let http = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = http.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = http.accept() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            let mut sink = [0u8; 1024];
            let _ = stream.read(&mut sink);
        }
    });
    let (status, _, err) = run_script(addr, &[], "");
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("is not a Relay server"), "{err}");
    assert!(!err.contains("Options::"), "{err}");
    assert!(!err.contains("refused the login"), "{err}");
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
        .write_all(b"/help\n")
        .expect("write");
    let status = wait_exit(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(status.success());
    assert!(
        err.contains("/join <room>") && err.contains("/who"),
        "{err}"
    );
    assert!(
        err.contains("history file: /tmp/relay-test-data/relay/history"),
        "{err}"
    );
}

fn start_server_with_tokens() -> server::RunningServer {
    support::start_server_with_tokens("cli-test-token-0123456789 carol join=r publish=r\n")
}

#[test]
fn a_token_logs_in_as_its_user() {
    let server = start_server_with_tokens();
    let (status, out, err) = run_script(
        server.local_addr(),
        &["--token", "cli-test-token-0123456789", "--echo"],
        "/join r\nhi\n/join other\n",
    );
    // The refused /join makes it exit 1.
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(out.lines().any(|l| l.starts_with("[r] carol (")), "{out}");
    assert!(
        err.lines().any(|l| l.starts_with("error: FORBIDDEN: ")),
        "{err}"
    );
}

#[test]
fn a_wrong_token_is_a_refused_login_exit_4() {
    let server = start_server_with_tokens();
    let (status, _, err) = run_script(server.local_addr(), &["--token", "wrong"], "/join r\n");
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(err.contains("refused the login"), "{err}");
    assert!(err.contains("AUTH_FAILED: authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_help_lists_the_exit_codes() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["sub"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--help"])
        .output()
        .expect("run");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "Exit codes:",
        "  4  the server refused the login",
        "pub",
        "sub",
        "stats",
        "ping",
    ] {
        assert!(help.contains(needle), "{needle} missing from {help}");
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--version"])
        .output()
        .expect("run");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("relay "));
}
