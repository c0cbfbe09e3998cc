//! `relay pub --to-user USER` and `--to-connection ID`: direct messages
//! from scripts (SPEC.md 3.16), received by library clients, with their
//! counts, refusals and exit codes, against an in-process server.

use client::{Client, DirectMessage, Event};
use testkit::start_server;

mod support;

use support::cli::{Live, relay, run_with_input};
use support::{expect_event, login};

/// The next direct message `client` gets.
fn next_direct(client: &Client) -> DirectMessage {
    expect_event(client, "a direct message", |event| match event {
        Event::Direct(direct) => Some(direct.clone()),
        _ => None,
    })
}

/// A direct message's content as JSON text.
fn content(direct: &DirectMessage) -> String {
    match &direct.body {
        client::Body::Json(raw) => raw.get().to_owned(),
        client::Body::Binary(bytes) => panic!("binary content {bytes:?}"),
    }
}

#[test]
fn pub_to_user_reaches_every_connection_of_the_user_and_exits_0() {
    let server = start_server();
    let addr = server.local_addr();
    let alice = login(addr, "alice");
    let alice_elsewhere = login(addr, "alice");
    let (status, out, err) = run_with_input(
        relay(
            addr,
            &["--name", "bob", "pub", "--to-user", "alice", "hello"],
        ),
        b"",
    );
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(out, "", "nothing on standard output without --json");
    assert!(
        err.starts_with("1 of 1 message delivered to user alice through relay://127.0.0.1:"),
        "{err}"
    );
    for receiver in [&alice, &alice_elsewhere] {
        let direct = next_direct(receiver);
        assert_eq!(content(&direct), "\"hello\"");
        assert_eq!(direct.user.as_deref(), Some("bob"));
        assert!(direct.from.starts_with('c'), "{}", direct.from);
    }

    // -q: no summary; the exit code says it all.
    let (status, out, err) = run_with_input(
        relay(addr, &["-q", "pub", "--to-user", "alice", "again"]),
        b"",
    );
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
    assert_eq!(content(&next_direct(&alice)), "\"again\"");
}

#[test]
fn pub_to_connection_reaches_that_connection_only() {
    let server = start_server();
    let addr = server.local_addr();
    let first = login(addr, "alice");
    let second = login(addr, "alice");
    let id = first.connection_id().expect("a connection id after HELLO");
    let (status, out, err) = run_with_input(
        relay(
            addr,
            &["pub", "--to-connection", &id, "--json", "{\"x\": [1, 2]}"],
        ),
        b"",
    );
    assert_eq!(status.code(), Some(0), "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON summary");
    assert_eq!(
        summary,
        serde_json::json!({"toConnection": id, "messages": 1, "delivered": 1, "refused": 0})
    );
    assert_eq!(err, "", "--json: the summary is the object");
    // Relayed byte for byte.
    assert_eq!(content(&next_direct(&first)), "{\"x\": [1, 2]}");

    // The other connection of the same user got nothing: the first direct
    // message it sees is the next one, sent to the user.
    let (status, _, err) = run_with_input(relay(addr, &["pub", "--to-user", "alice", "both"]), b"");
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(content(&next_direct(&second)), "\"both\"");
    assert_eq!(content(&next_direct(&first)), "\"both\"");
}

#[test]
fn pub_to_nobody_exits_1_and_says_who_is_missing() {
    let server = start_server();
    let addr = server.local_addr();
    let (status, out, err) = run_with_input(
        relay(addr, &["--name", "bob", "pub", "--to-user", "carol", "hi"]),
        b"",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("message 1 refused: nobody named carol is connected to relay://127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.contains("0 of 1 message delivered to user carol"),
        "{err}"
    );

    // Its own connection does not count, and the message says so.
    let (status, _, err) = run_with_input(
        relay(addr, &["--name", "bob", "pub", "--to-user", "bob", "hi"]),
        b"",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("your own connection does not count"), "{err}");

    let (status, out, err) = run_with_input(
        relay(addr, &["pub", "--to-connection", "c999999", "1", "--json"]),
        b"",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("message 1 refused: no connection c999999 is open on relay://"),
        "{err}"
    );
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON summary");
    assert_eq!(summary["delivered"], 0);
    assert_eq!(summary["refused"], 1);
}

#[test]
fn pub_dash_sends_every_line_in_order() {
    let server = start_server();
    let addr = server.local_addr();
    let alice = login(addr, "alice");
    let lines: Vec<String> = (1..=50).map(|n| format!("line {n}")).collect();
    // One JSON string a line, and an empty line at the end.
    let input: String = lines.iter().map(|l| format!("\"{l}\"\n")).collect();
    let (status, out, err) = run_with_input(
        relay(addr, &["pub", "--to-user", "alice", "-", "--json"]),
        format!("{input}\n").as_bytes(),
    );
    assert_eq!(status.code(), Some(0), "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON summary");
    assert_eq!(summary["toUser"], "alice");
    assert_eq!(summary["messages"], 50, "the empty line is skipped");
    assert_eq!(summary["delivered"], 50);
    for line in &lines {
        assert_eq!(content(&next_direct(&alice)), format!("\"{line}\""));
    }

    // Without --json, each line is text; a line that is not JSON with
    // --json is not sent, counted, and the rest still go.
    let (status, _, err) = run_with_input(
        relay(addr, &["pub", "--to-user", "alice", "-"]),
        b"plain {not json}\n",
    );
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(content(&next_direct(&alice)), "\"plain {not json}\"");
    let (status, out, err) = run_with_input(
        relay(addr, &["pub", "--to-user", "alice", "-", "--json"]),
        b"1\nnot json\n3\n",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("message 2 not sent: not JSON"), "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON summary");
    assert_eq!(
        (&summary["delivered"], &summary["refused"]),
        (&2.into(), &1.into())
    );
    assert_eq!(content(&next_direct(&alice)), "1");
    assert_eq!(content(&next_direct(&alice)), "3");
}

#[test]
fn pub_to_a_user_the_token_does_not_allow_exits_1_with_the_servers_words() {
    let tokens = "cli-direct-token-0123456789 erin join=* publish=* direct=support.*\n";
    let server = support::start_server_with_tokens(tokens);
    let addr = server.local_addr();
    let (status, _, err) = run_with_input(
        relay(
            addr,
            &[
                "--token",
                "cli-direct-token-0123456789",
                "pub",
                "--to-user",
                "alice",
                "hi",
            ],
        ),
        b"",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "message 1 refused: FORBIDDEN: MESSAGE to user \"alice\": your token does not allow direct messages to them"
        ),
        "{err}"
    );
    assert!(
        err.contains("0 of 1 message delivered to user alice"),
        "{err}"
    );
}

#[test]
fn pub_to_user_exits_5_when_the_connection_is_lost() {
    let server = start_server();
    let addr = server.local_addr();
    let alice = login(addr, "alice");
    let mut publisher = Live::spawn(relay(addr, &["pub", "--to-user", "alice", "-"]));
    publisher.type_line("before");
    assert_eq!(content(&next_direct(&alice)), "\"before\"");
    server.shutdown();
    let (status, lines) = publisher.finish();
    assert_eq!(status.code(), Some(5), "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("connection lost after 1 of 1 messages were sent")),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn pub_refuses_a_room_with_a_recipient_and_binary_direct_messages() {
    let server = start_server();
    let addr = server.local_addr();
    let (status, _, err) = run_with_input(
        relay(addr, &["pub", "news", "hi", "--to-user", "alice"]),
        b"",
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("a ROOM cannot be used with --to-user"),
        "{err}"
    );
    let (status, _, err) = run_with_input(
        relay(addr, &["pub", "--to-connection", "c1", "hi", "--binary"]),
        b"",
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--binary cannot be used with --to-connection: a direct message carries JSON content only"),
        "{err}"
    );
    let (status, _, err) = run_with_input(
        relay(
            addr,
            &["pub", "--to-user", "a", "--to-connection", "c1", "hi"],
        ),
        b"",
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}
