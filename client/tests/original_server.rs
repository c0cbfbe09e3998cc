//! The client library and the `relay` binary against a stand-in for the
//! original Node.js server (`../shared/ORIGINAL-README.txt`), which our server
//! is wire-compatible with but which sends less:
//!
//! - its HELLO answer has no `maxFrameSize`, `idleTimeoutMs` or `stats`;
//! - its JOIN_ROOM and LEAVE_ROOM answers have no `members`;
//! - its membership events have no `timestamp`, its deliveries no `user`;
//! - its ERRORs are `{"error": "..."}`, and non-fatal;
//! - it never answers a HEARTBEAT.
//!
//! The stand-in writes its frames by hand, byte for byte as the original's
//! `JSON.stringify` and `encodeFrame` would, without the protocol crate.

use std::collections::HashSet;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use client::{Client, ClientError, ErrorCode, Event, MemberChange};
use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;
use testkit::WAIT;

mod support;

use support::cli::{Live, STDERR};

// The original's message types and flags.
const HELLO: u8 = 1;
const JOIN_ROOM: u8 = 2;
const LEAVE_ROOM: u8 = 3;
const MESSAGE: u8 = 4;
const HEARTBEAT: u8 = 5;
const ERROR: u8 = 6;
/// New in protocol 0.4 (SPEC.md 3.15); the original closes the connection on it.
const WHO: u8 = 7;
const JSON: u8 = 0x01;

/// The original's HELLO answer: `status`, `connectionId` and `serverVersion`
/// only.
const HELLO_ANSWER: &str =
    r#"{"status":"connected","connectionId":"conn-1","serverVersion":"1.0.0"}"#;

/// What "promptly" means here: well under the 5 s default timeout that a
/// client waiting for a HEARTBEAT echo would wait out.
const PROMPTLY: Duration = Duration::from_millis(2500);

/// A frame as the original's `encodeFrame` writes it:
/// `| length u32 BE | version 1 | type | flags | payload |`.
fn frame(kind: u8, flags: u8, payload: &str) -> Vec<u8> {
    let length = u32::try_from(3 + payload.len()).expect("a small payload");
    let mut bytes = length.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[1, kind, flags]);
    bytes.extend_from_slice(payload.as_bytes());
    bytes
}

/// A string as `JSON.stringify` writes it.
fn js_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string is JSON")
}

/// A frame the client sent.
#[derive(Debug)]
struct Received {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        assert_eq!(self.flags, JSON, "{self:?}");
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }
}

/// The stand-in: one connection, handled as the original's handlers do.
/// Every frame the client sends is also handed to the test, and the test can
/// send frames the original sends unasked (another member's messages and
/// membership events).
struct Original {
    addr: SocketAddr,
    received: Receiver<Received>,
    /// The connection's write side, shared with the handler so that frames
    /// never interleave; set before the HELLO answer is sent.
    writer: Arc<Mutex<Option<TcpStream>>>,
}

impl Original {
    fn start() -> Original {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (sender, received) = crossbeam_channel::unbounded();
        let writer = Arc::new(Mutex::new(None));
        let handler_writer = Arc::clone(&writer);
        thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                serve(stream, &handler_writer, &sender);
            }
        });
        Original {
            addr,
            received,
            writer,
        }
    }

    /// Sends a frame to the client, as the original does for events.
    fn send(&self, kind: u8, payload: &str) {
        write_frame(&self.writer, kind, payload);
    }

    /// The next frame of `kind` the client sent, skipping others.
    fn expect(&self, kind: u8) -> Received {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.received.recv_deadline(deadline) {
                Ok(frame) if frame.kind == kind => return frame,
                Ok(_) => {}
                Err(_) => panic!("the client sent no frame of type {kind}"),
            }
        }
    }
}

fn write_frame(writer: &Mutex<Option<TcpStream>>, kind: u8, payload: &str) {
    let mut writer = writer.lock().expect("writer lock");
    let stream = writer.as_mut().expect("a client is connected");
    stream
        .write_all(&frame(kind, JSON, payload))
        .expect("write to the client");
}

/// The original's `handleFrame`, for one connection (so a room exists while
/// this connection is in it).
fn serve(stream: TcpStream, writer: &Mutex<Option<TcpStream>>, frames: &Sender<Received>) {
    *writer.lock().expect("writer lock") = Some(stream.try_clone().expect("clone"));
    let mut reader = BufReader::new(stream);
    let mut rooms = HashSet::new();
    let error = |text: &str| {
        write_frame(
            writer,
            ERROR,
            &format!(r#"{{"error":{}}}"#, js_string(text)),
        )
    };
    loop {
        let mut length = [0; 4];
        match reader.read_exact(&mut length) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return,
            Err(e) => panic!("read: {e}"),
        }
        let mut rest = vec![0; u32::from_be_bytes(length) as usize];
        reader.read_exact(&mut rest).expect("a whole frame");
        let received = Received {
            kind: rest[1],
            flags: rest[2],
            payload: rest[3..].to_vec(),
        };
        let payload = if received.flags & JSON != 0 && !received.payload.is_empty() {
            received.json()
        } else {
            Value::Null
        };
        let room = payload["room"].as_str().map(str::trim);
        match received.kind {
            HELLO => write_frame(writer, HELLO, HELLO_ANSWER),
            JOIN_ROOM | LEAVE_ROOM => match room {
                None => error("Invalid room name"),
                Some(room) if room.is_empty() || room.encode_utf16().count() > 64 => {
                    error("Room name must be 1-64 characters");
                }
                Some(room) => {
                    let status = if received.kind == JOIN_ROOM {
                        rooms.insert(room.to_owned());
                        "joined"
                    } else {
                        rooms.remove(room);
                        "left"
                    };
                    let answer = format!(r#"{{"status":"{status}","room":{}}}"#, js_string(room));
                    write_frame(writer, received.kind, &answer);
                }
            },
            MESSAGE => match room {
                None => error("Room name required"),
                Some(_) if payload.get("content").is_none() => error("Message content required"),
                Some(room) if !rooms.contains(room) => {
                    error(&format!("Room '{room}' does not exist"));
                }
                // Relayed to the other members, and there are none.
                Some(_) => {}
            },
            // Noted, never answered.
            HEARTBEAT => {}
            other => error(&format!("Unknown message type: {other}")),
        }
        if frames.send(received).is_err() {
            return;
        }
    }
}

/// Another member, `conn-2`, as the original announces it and relays its
/// messages: no `timestamp` on the event, no `user` on the delivery.
fn member_event(change: &str, room: &str) -> String {
    format!(
        r#"{{"type":"{change}","room":{},"connectionId":"conn-2"}}"#,
        js_string(room)
    )
}

fn delivery(room: &str, content: &str, timestamp: u64) -> String {
    format!(
        r#"{{"room":{},"from":"conn-2","content":{},"timestamp":{timestamp}}}"#,
        js_string(room),
        js_string(content)
    )
}

/// 2024-01-01T13:45:07Z.
const TIMESTAMP: u64 = 1_704_116_707_000;

// ---- the library ---------------------------------------------------------

fn login(original: &Original) -> Client {
    let client = Client::connect(original.addr).expect("connect");
    let reply = client
        .hello_as(Some("alice"), false, WAIT)
        .expect("the original's HELLO answer is a login");
    assert_eq!(reply.status, "connected");
    assert_eq!(reply.connection_id, "conn-1");
    assert_eq!(reply.server_version, "1.0.0");
    assert_eq!(reply.max_frame_size, protocol::ORIGINAL_MAX_FRAME);
    assert_eq!(reply.idle_timeout_ms, 0);
    assert_eq!(reply.stats, None);
    client
}

fn next_event(client: &Client) -> Event {
    client.recv_timeout(WAIT).expect("an event")
}

#[test]
fn the_library_logs_in_joins_and_chats() {
    let original = Original::start();
    let client = login(&original);
    assert_eq!(client.connection_id().as_deref(), Some("conn-1"));
    assert_eq!(client.server_echoes_heartbeats(), Some(false));

    let ack = client.join_and_wait("r", WAIT).expect("join");
    assert_eq!((ack.room.as_str(), ack.members), ("r", None));

    original.send(MESSAGE, &member_event("userJoined", "r"));
    original.send(MESSAGE, &delivery("r", "hi", TIMESTAMP));
    original.send(MESSAGE, &member_event("userLeft", "r"));
    match next_event(&client) {
        Event::Member(member) => {
            assert_eq!(member.change, MemberChange::Joined);
            assert_eq!((member.room.as_str(), member.who()), ("r", "conn-2"));
            assert_eq!(member.timestamp, None);
        }
        other => panic!("expected userJoined, got {other:?}"),
    }
    match next_event(&client) {
        Event::Message(message) => {
            assert_eq!(message.room, "r");
            assert_eq!(
                (message.from.as_str(), message.user.as_deref()),
                ("conn-2", None)
            );
            assert_eq!(message.sender(), "conn-2");
            assert_eq!(message.body.as_text().as_deref(), Some("hi"));
            assert_eq!(message.timestamp, Some(TIMESTAMP));
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
    match next_event(&client) {
        Event::Member(member) => assert_eq!(member.change, MemberChange::Left),
        other => panic!("expected userLeft, got {other:?}"),
    }

    client.send_text("r", "hello").expect("send");
    let sent = original.expect(MESSAGE).json();
    assert_eq!(sent, serde_json::json!({"room": "r", "content": "hello"}));

    let ack = client.leave_and_wait("r", WAIT).expect("leave");
    assert_eq!((ack.room.as_str(), ack.members), ("r", None));
}

#[test]
fn the_library_reports_an_original_error_by_its_text() {
    let original = Original::start();
    let client = login(&original);
    client.send_text("elsewhere", "hello?").expect("send");
    let error = client
        .join_and_wait("r", WAIT)
        .expect_err("the ERROR for the message comes before the JOIN_ROOM answer");
    match &error {
        ClientError::Server(server) => {
            assert_eq!(server.code, ErrorCode::Unknown);
            assert_eq!(server.message, "Room 'elsewhere' does not exist");
            assert!(!server.fatal);
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    // The code is this client's placeholder, not the server's: not shown.
    assert_eq!(
        error.to_string(),
        "server error Room 'elsewhere' does not exist"
    );
    // The JOIN_ROOM answer was kept, and the connection stays usable.
    match next_event(&client) {
        Event::Joined(ack) => assert_eq!(ack.room, "r"),
        other => panic!("expected the JOIN_ROOM answer, got {other:?}"),
    }
    client.send_text("r", "now I'm in").expect("send");
    assert!(client.is_connected());
}

#[test]
fn the_library_reports_no_heartbeat_round_trip_promptly() {
    let original = Original::start();
    let client = login(&original);
    let started = Instant::now();
    let result = client.heartbeat_and_wait(Duration::from_secs(5));
    let took = started.elapsed();
    match &result {
        Err(error @ ClientError::NotAvailable { .. }) => {
            let text = error.to_string();
            assert!(
                text.starts_with(
                    "the heartbeat round-trip time is not available from this server: \
                     it does not answer HEARTBEAT"
                ),
                "{text}"
            );
        }
        other => panic!("expected NotAvailable, got {other:?}"),
    }
    assert!(took < PROMPTLY, "took {took:?}");
    // The HEARTBEAT went out (a keepalive all the same), then the HELLO whose
    // answer showed that no echo was coming.
    original.expect(HELLO);
    original.expect(HEARTBEAT);
    original.expect(HELLO);
    // That HELLO answer was taken; nothing is left over.
    assert!(client.try_recv().is_none());

    match client.stats(WAIT) {
        Err(ClientError::NotAvailable { what, .. }) => assert_eq!(what, "the server's counters"),
        other => panic!("expected NotAvailable, got {other:?}"),
    }
    assert!(client.is_connected());
}

// ---- the CLI -------------------------------------------------------------

/// The `relay` binary, kept running, fed line by line, its output read as it
/// comes (as in `cli.rs`).

#[test]
fn the_cli_chats_through_the_original_server() {
    let original = Original::start();
    let mut cli = Live::start(original.addr, &["--name", "alice"]);
    // Status lines and errors come on standard error (marked here), messages
    // on standard output.
    let greeting = cli.next_line();
    assert!(
        greeting.starts_with(&format!("{STDERR}connected to relay://")),
        "{greeting}"
    );
    assert!(greeting.ends_with(" as alice (conn-1)"), "{greeting}");

    cli.type_line("/join r");
    // The original does not say how many members the room has.
    assert_eq!(cli.next_line(), format!("{STDERR}joined r"));

    original.send(MESSAGE, &member_event("userJoined", "r"));
    assert_eq!(cli.next_line(), "[r] * conn-2 joined");
    original.send(MESSAGE, &delivery("r", "hi alice", TIMESTAMP));
    assert_eq!(cli.next_line(), "[r] conn-2 (13:45:07): hi alice");

    cli.type_line("hi conn-2");
    let sent = original.expect(MESSAGE).json();
    assert_eq!(
        sent,
        serde_json::json!({"room": "r", "content": "hi conn-2"})
    );

    // What the original sends when one of its handlers throws.
    original.send(ERROR, r#"{"error":"Internal server error"}"#);
    assert_eq!(
        cli.next_line(),
        format!("{STDERR}error: Internal server error")
    );

    let started = Instant::now();
    cli.type_line("/ping");
    let answer = cli.next_line();
    let took = started.elapsed();
    assert!(
        answer.starts_with(&format!(
            "{STDERR}round-trip time not available from this server"
        )),
        "{answer}"
    );
    assert!(took < PROMPTLY, "took {took:?}");
    original.expect(HEARTBEAT);

    cli.type_line("/rooms");
    assert_eq!(cli.next_line(), format!("{STDERR}rooms: r (current)"));

    // No WHO for a server whose JOIN answers carry no epoch (it would close
    // the connection): what the CLI saw instead.
    cli.type_line("/who");
    assert_eq!(
        cli.next_line(),
        format!("{STDERR}r: the server does not say how many members; joined since you: conn-2")
    );

    // At the end of the input the CLI makes sure every answer is in, with a
    // HELLO, since a HEARTBEAT would never be answered.
    let started = Instant::now();
    let (status, lines) = cli.finish();
    let took = started.elapsed();
    // The server's ERROR counts as a failed command: a script exits 1.
    assert_eq!(status.code(), Some(1), "{}", lines.join("\n"));
    assert!(took < PROMPTLY, "took {took:?}");
    assert!(
        !lines.iter().any(|line| line.contains("no answer")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(lines.len(), 8, "{}", lines.join("\n"));
    let kinds: Vec<u8> = original
        .received
        .try_iter()
        .map(|frame| frame.kind)
        .collect();
    assert!(
        !kinds.contains(&WHO),
        "a WHO went to the original: {kinds:?}"
    );
}

#[test]
fn the_cli_sends_no_direct_message_to_the_original_server() {
    let original = Original::start();
    let started = Instant::now();
    let (status, out, err) = support::cli::run_with_input(
        support::cli::relay(original.addr, &["pub", "--to-user", "alice", "hi"]),
        b"",
    );
    let took = started.elapsed();
    // Refused up front: the original would answer "Room name required",
    // and never the HEARTBEAT that the count waits for.
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("does not relay direct messages"), "{err}");
    assert!(took < PROMPTLY, "took {took:?}");
    // Every frame the CLI sent, up to the end of its connection.
    let mut kinds = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        match original.received.recv_deadline(deadline) {
            Ok(frame) => kinds.push(frame.kind),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                panic!("the connection did not end; frames so far: {kinds:?}")
            }
        }
    }
    assert_eq!(kinds, [HELLO], "only the login reached the original");
}

/// Every frame the CLI sent, up to the end of its connection, HEARTBEATs
/// (keepalives, which the original notes and never answers) left out.
fn frames_until_closed(original: &Original) -> Vec<Received> {
    let mut frames = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        match original.received.recv_deadline(deadline) {
            Ok(frame) if frame.kind == HEARTBEAT => {}
            Ok(frame) => frames.push(frame),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return frames,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let kinds: Vec<u8> = frames.iter().map(|f| f.kind).collect();
                panic!("the connection did not end; frames so far: {kinds:?}")
            }
        }
    }
}

/// Runs `relay pub ARGS` against a fresh stand-in with `input` on standard
/// input: the exit status, standard output, standard error, how long it
/// took, and the frames the stand-in received.
fn publish(args: &[&str], input: &[u8]) -> (Option<i32>, String, String, Duration, Vec<Received>) {
    let original = Original::start();
    let mut command_args = vec!["pub"];
    command_args.extend_from_slice(args);
    let started = Instant::now();
    let (status, out, err) =
        support::cli::run_with_input(support::cli::relay(original.addr, &command_args), input);
    let took = started.elapsed();
    let frames = frames_until_closed(&original);
    (status.code(), out, err, took, frames)
}

/// The JOIN, the MESSAGEs' payloads and the LEAVE, in the order sent, after
/// the HELLO.
fn published(frames: &[Received], room: &str) -> Vec<Value> {
    let kinds: Vec<u8> = frames.iter().map(|f| f.kind).collect();
    assert_eq!(kinds.first(), Some(&HELLO), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&JOIN_ROOM), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&LEAVE_ROOM), "{kinds:?}");
    assert_eq!(frames[1].json()["room"], room);
    assert_eq!(frames[frames.len() - 1].json()["room"], room);
    let middle = &frames[2..frames.len() - 1];
    assert!(
        middle.iter().all(|f| f.kind == MESSAGE),
        "only MESSAGEs between the JOIN and the LEAVE: {kinds:?}"
    );
    middle
        .iter()
        .map(|f| {
            let mut payload = f.json();
            assert_eq!(payload["room"], room, "{payload}");
            // The message's number, which the original ignores.
            payload.as_object_mut().map(|o| o.remove("id"));
            payload["content"].take()
        })
        .collect()
}

#[test]
fn the_cli_publishes_a_message_to_the_original_server_promptly() {
    let (code, out, err, took, frames) = publish(&["r", "hello"], b"");
    // The original never echoes the HEARTBEAT the count usually waits for:
    // its LEAVE_ROOM answer, which comes after any ERROR for a message,
    // ends the wait.
    assert_eq!(code, Some(0), "{err}");
    assert!(took < PROMPTLY, "took {took:?}");
    assert_eq!(out, "");
    assert!(
        err.starts_with("1 of 1 message accepted by relay://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("room r"), "{err}");
    // No ack from this server: the summary says what "accepted" rests on.
    assert!(err.contains("no ERROR"), "{err}");
    assert_eq!(published(&frames, "r"), [Value::from("hello")]);
}

#[test]
fn the_cli_publishes_standard_input_to_the_original_server_promptly() {
    let (code, _, err, took, frames) = publish(&["r", "-"], b"one\ntwo\r\n\nthree\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(took < PROMPTLY, "took {took:?}");
    assert!(err.starts_with("3 of 3 messages accepted by "), "{err}");
    assert_eq!(
        published(&frames, "r"),
        [Value::from("one"), Value::from("two"), Value::from("three")]
    );
}

#[test]
fn the_cli_publishes_json_to_the_original_server_promptly() {
    let (code, out, err, took, frames) = publish(&["r", "--json", r#"{"t":21.5}"#], b"");
    assert_eq!(code, Some(0), "{err}");
    assert!(took < PROMPTLY, "took {took:?}");
    let summary: Value = serde_json::from_str(out.trim()).expect("a JSON summary");
    assert_eq!(
        summary,
        serde_json::json!({"room": "r", "messages": 1, "accepted": 1, "refused": 0})
    );
    assert_eq!(published(&frames, "r"), [serde_json::json!({"t": 21.5})]);
}

#[test]
fn the_cli_counts_what_the_original_server_refuses() {
    // The original takes a payload that is not JSON for one without a room
    // and answers `{"error":"Room name required"}`, without the message's
    // number: a refusal all the same.
    let (code, _, err, took, frames) = publish(&["r", "--binary", "-"], b"one\ntwo\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(took < PROMPTLY, "took {took:?}");
    assert_eq!(
        err.matches("refused: Room name required").count(),
        2,
        "{err}"
    );
    assert!(err.contains("0 of 2 messages accepted by "), "{err}");
    let kinds: Vec<u8> = frames.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [HELLO, JOIN_ROOM, MESSAGE, MESSAGE, LEAVE_ROOM]);
}

#[test]
fn the_cli_says_promptly_that_the_original_server_has_no_round_trip_time() {
    let original = Original::start();
    let started = Instant::now();
    let (status, out, err) =
        support::cli::run_with_input(support::cli::relay(original.addr, &["ping"]), b"");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(took < PROMPTLY, "took {took:?}");
    assert_eq!(out, "");
    assert!(err.contains("does not answer HEARTBEAT"), "{err}");
    assert!(err.contains("no round-trip time"), "{err}");
    let kinds: Vec<u8> = frames_until_closed(&original)
        .iter()
        .map(|f| f.kind)
        .collect();
    assert_eq!(kinds, [HELLO, HELLO]);
}

#[test]
fn the_cli_says_promptly_that_the_original_server_has_no_stats() {
    let original = Original::start();
    let started = Instant::now();
    let (status, out, err) =
        support::cli::run_with_input(support::cli::relay(original.addr, &["stats"]), b"");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(took < PROMPTLY, "took {took:?}");
    assert_eq!(out, "");
    assert!(err.contains("sends no counters"), "{err}");
    let kinds: Vec<u8> = frames_until_closed(&original)
        .iter()
        .map(|f| f.kind)
        .collect();
    assert_eq!(kinds, [HELLO]);
}

#[test]
fn the_cli_subscribes_through_the_original_server() {
    let original = Original::start();
    let mut child = support::cli::relay(
        original.addr,
        &["sub", "r", "-n", "1", "--history", "5", "--json"],
    )
    .spawn()
    .expect("start the client binary");
    assert_eq!(original.expect(JOIN_ROOM).json()["room"], "r");
    original.send(MESSAGE, &member_event("userJoined", "r"));
    original.send(MESSAGE, &delivery("r", "hi", TIMESTAMP));
    let started = Instant::now();
    let (status, out, err) = support::cli::finish(&mut child);
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(took < PROMPTLY, "took {took:?}");
    assert!(err.contains("r: this server keeps no history"), "{err}");
    let line: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(line["room"], "r");
    assert_eq!(line["from"], "conn-2");
    assert_eq!(line["content"], "hi");
    assert_eq!(line["timestamp"], TIMESTAMP);
    assert!(line.get("seq").is_none(), "{line}");
}
