//! `relay pub`, `sub`, `stats` and `ping`: their output, parsed, and each
//! exit code, against an in-process server.

use std::net::TcpListener;

use testkit::start_server;

mod support;

use support::cli::{Live, relay, run_with_input, wait_exit};

/// A subscriber that is in its rooms (it said so) before the test goes on.
fn subscriber(addr: std::net::SocketAddr, args: &[&str]) -> Live {
    let mut live = Live::spawn(relay(addr, args));
    live.expect("subscribed to");
    live
}

#[test]
fn pub_sends_one_message_and_sub_prints_it_as_json() {
    let server = start_server();
    let addr = server.local_addr();
    let mut sub = subscriber(addr, &["--name", "s", "sub", "news", "-n", "1", "--json"]);
    let (status, out, err) =
        run_with_input(relay(addr, &["--name", "p", "pub", "news", "hello"]), b"");
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(out, "");
    assert!(
        err.starts_with("1 of 1 message accepted by relay://127.0.0.1:"),
        "{err}"
    );
    let line: serde_json::Value =
        serde_json::from_str(&sub.expect("\"hello\"")).expect("one JSON object");
    assert_eq!(line["room"], "news");
    assert_eq!(line["user"], "p");
    assert_eq!(line["content"], "hello");
    assert!(line["from"].as_str().is_some_and(|f| f.starts_with('c')));
    assert!(line["timestamp"].as_u64().is_some_and(|t| t > 0));
    let status = wait_exit(&mut sub.child);
    assert_eq!(status.code(), Some(0), "sub -n 1 ends after one message");
}

#[test]
fn pub_dash_sends_each_line_and_joins_once() {
    let server = start_server();
    let addr = server.local_addr();
    let mut sub = subscriber(addr, &["sub", "r", "-n", "4", "--raw"]);
    let mut watcher = Live::start(addr, &["--name", "watcher"]);
    watcher.type_line("/join r");
    watcher.expect("joined r");
    let (status, out, err) = run_with_input(
        relay(addr, &["--name", "pubber", "pub", "r", "-", "--json"]),
        b"1\n\"two\"\n{\"three\": [3]}\nnull\n",
    );
    assert_eq!(status.code(), Some(0), "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON summary");
    assert_eq!(summary["messages"], 4);
    assert_eq!(summary["accepted"], 4);
    assert_eq!(summary["refused"], 0);
    // --raw: the content only; JSON content as its JSON text.
    for expected in ["1", "two", "{\"three\": [3]}", "null"] {
        assert_eq!(sub.next_line(), expected);
    }
    assert_eq!(wait_exit(&mut sub.child).code(), Some(0));
    // One join and one leave for all four messages.
    watcher.expect("[r] * pubber left");
    let (_, seen) = watcher.finish();
    let joins = seen
        .iter()
        .filter(|l| l.contains("* pubber joined"))
        .count();
    assert_eq!(joins, 1, "{seen:?}");
}

#[test]
fn pub_binary_and_sub_shows_a_preview() {
    let server = start_server();
    let addr = server.local_addr();
    let mut sub = subscriber(addr, &["sub", "bin", "-n", "1"]);
    let dir = std::env::temp_dir().join(format!("relay-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("payload.bin");
    std::fs::write(&file, [0u8, 1, 0xfe, 0xff]).expect("write");
    let path = file.to_string_lossy().into_owned();
    let (status, _, err) =
        run_with_input(relay(addr, &["pub", "bin", "-f", &path, "--binary"]), b"");
    assert_eq!(status.code(), Some(0), "{err}");
    let line = sub.expect("binary");
    assert!(line.starts_with("[bin] c"), "{line}");
    assert!(
        line.ends_with("): binary, 4 bytes: 00 01 fe ff (hex)"),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pub_exits_1_unless_every_message_was_accepted() {
    // dave may join r but publish nowhere: every MESSAGE gets FORBIDDEN,
    // with its id.
    let tokens = "cli-pub-token-0123456789 dave join=r publish=elsewhere\n";
    let server = support::start_server_with_tokens(tokens);
    let addr = server.local_addr();
    let (status, _, err) = run_with_input(
        relay(
            addr,
            &["--token", "cli-pub-token-0123456789", "pub", "r", "-"],
        ),
        b"a\nb\n",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("message 1 refused: FORBIDDEN"), "{err}");
    assert!(err.contains("message 2 refused: FORBIDDEN"), "{err}");
    assert!(err.contains("0 of 2 messages accepted"), "{err}");

    // A line that is not JSON is not sent, and counted.
    let open = start_server();
    let (status, out, err) = run_with_input(
        relay(open.local_addr(), &["pub", "r", "-", "--json"]),
        b"{\"ok\":1}\nnot json\n",
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("message 2 not sent: not JSON"), "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON summary");
    assert_eq!(summary["accepted"], 1);
    assert_eq!(summary["refused"], 1);

    // A wrong token: the login is refused.
    let (status, _, err) = run_with_input(relay(addr, &["--token", "nope", "pub", "r", "x"]), b"");
    assert_eq!(status.code(), Some(4), "{err}");
}

#[test]
fn nothing_listening_exits_3_for_every_subcommand() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    for args in [&["pub", "r", "x"][..], &["sub", "r"], &["stats"], &["ping"]] {
        let (status, out, err) = run_with_input(relay(addr, args), b"");
        assert_eq!(status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(out, "");
        assert!(err.starts_with("relay: cannot connect to "), "{err}");
    }
}

#[test]
fn sub_times_out_with_6_when_count_is_not_reached_and_0_without_count() {
    let server = start_server();
    let addr = server.local_addr();
    let (status, out, err) = run_with_input(
        relay(addr, &["sub", "quiet", "-n", "3", "--timeout", "0.3"]),
        b"",
    );
    assert_eq!(status.code(), Some(6), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("timed out with 0 of 3 messages"), "{err}");
    let (status, _, err) = run_with_input(relay(addr, &["sub", "quiet", "--timeout", "0.3"]), b"");
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
fn sub_exits_5_when_the_server_goes_away() {
    let server = start_server();
    let mut sub = subscriber(server.local_addr(), &["sub", "r"]);
    server.shutdown();
    sub.expect("disconnected: server closed the connection: SHUTTING_DOWN");
    assert_eq!(wait_exit(&mut sub.child).code(), Some(5));
}

#[test]
fn stats_prints_the_counters_in_both_formats() {
    let server = start_server();
    let addr = server.local_addr();
    let (status, out, err) = run_with_input(relay(addr, &["stats"]), b"");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.lines().any(|l| l == "connections: 1"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("framesIn: ")), "{out}");
    let (status, out, err) = run_with_input(relay(addr, &["stats", "--json"]), b"");
    assert_eq!(status.code(), Some(0), "{err}");
    let stats: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(stats["connections"], 1);
    assert!(stats["connectionsTotal"].as_u64().is_some_and(|n| n >= 2));
}

#[test]
fn ping_prints_one_round_trip_a_line() {
    let server = start_server();
    let addr = server.local_addr();
    let (status, out, err) = run_with_input(relay(addr, &["ping", "-c", "3"]), b"");
    assert_eq!(status.code(), Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[2].contains("round trip 3: "), "{out}");
    assert!(err.starts_with("3 round trips: min "), "{err}");
    let (status, out, _) = run_with_input(relay(addr, &["ping", "--json", "-c", "1"]), b"");
    assert_eq!(status.code(), Some(0));
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(line["seq"], 1);
    assert!(line["rttMs"].as_f64().is_some_and(|ms| ms >= 0.0));
}
