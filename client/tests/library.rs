//! The client library against a real, in-process server (and, for what a real
//! server never does, against a scripted fake one).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use client::{
    Body, Client, ClientError, DisconnectReason, ErrorCode, Event, MemberChange, Options,
    ServerError,
};
use protocol::{Flags, MessageType};
use serde_json::value::RawValue;

use support::{expect_event, login, login_with};
use testkit::{WAIT, raw_frame, start_server};

#[test]
fn hello_returns_the_connection_id_and_limits() {
    let server = start_server();
    let client = Client::connect(server.local_addr()).expect("connect");
    let reply = client.hello_as(Some("alice"), false, WAIT).expect("hello");
    assert_eq!(reply.status, "connected");
    assert!(reply.connection_id.starts_with('c'), "{reply:?}");
    assert_eq!(reply.max_frame_size, protocol::DEFAULT_MAX_FRAME);
    assert!(reply.idle_timeout_ms > 0);
    // A second HELLO is answered the same way, with the same id.
    let again = client.hello_as(None, false, WAIT).expect("second hello");
    assert_eq!(again.connection_id, reply.connection_id);
}

#[test]
fn two_clients_chat_in_a_room() {
    let server = start_server();
    let alice = login(server.local_addr(), "alice");
    let bob = login(server.local_addr(), "bob");
    let bob_id = bob.connection_id().expect("known after HELLO");

    let ack = alice.join_and_wait("physics", WAIT).expect("alice joins");
    assert_eq!((ack.room.as_str(), ack.members), ("physics", Some(1)));
    let ack = bob.join_and_wait("  physics ", WAIT).expect("bob joins");
    assert_eq!((ack.room.as_str(), ack.members), ("physics", Some(2)));

    let joined = expect_event(&alice, "bob joined", |event| match event {
        Event::Member(member) => Some(member.clone()),
        _ => None,
    });
    assert_eq!(joined.change, MemberChange::Joined);
    assert_eq!(joined.room, "physics");
    assert_eq!(joined.who(), "bob");
    assert_eq!(joined.connection_id, bob_id);

    bob.send_text("physics", "hello, alice").expect("send");
    let message = expect_event(&alice, "bob's message", |event| match event {
        Event::Message(message) => Some(message.clone()),
        _ => None,
    });
    assert_eq!(message.room, "physics");
    assert_eq!(message.from, bob_id);
    assert_eq!(message.sender(), "bob");
    assert_eq!(message.body.as_text().as_deref(), Some("hello, alice"));
    assert!(message.timestamp.is_some_and(|t| t > 1_600_000_000_000));

    let left = bob.leave_and_wait("physics", WAIT).expect("bob leaves");
    assert_eq!((left.room.as_str(), left.members), ("physics", Some(1)));
    let gone = expect_event(&alice, "bob left", |event| match event {
        Event::Member(member) => Some(member.clone()),
        _ => None,
    });
    assert_eq!((gone.change, gone.who()), (MemberChange::Left, "bob"));
}

#[test]
fn echo_is_only_for_clients_that_ask() {
    let server = start_server();
    let quiet = login_with(server.local_addr(), Some("quiet"), false);
    let loud = login_with(server.local_addr(), Some("loud"), true);
    for client in [&quiet, &loud] {
        client.join_and_wait("r", WAIT).expect("join");
    }
    loud.send_text("r", "mine").expect("send");
    let echoed = expect_event(&loud, "own message", |event| match event {
        Event::Message(message) => Some(message.clone()),
        _ => None,
    });
    assert_eq!(echoed.sender(), "loud");

    quiet.send_text("r", "not for me").expect("send");
    // The heartbeat answer comes after the server handled the message, so any
    // echo would already be queued before it.
    quiet.heartbeat_and_wait(WAIT).expect("heartbeat");
    while let Some(event) = quiet.try_recv() {
        assert!(
            !matches!(&event, Event::Message(m) if m.sender() == "quiet"),
            "own message echoed without echo: {event:?}"
        );
    }
}

#[test]
fn json_and_binary_content_arrive_byte_exact() {
    let server = start_server();
    let sender = login(server.local_addr(), "s");
    let receiver = login(server.local_addr(), "r");
    let sender_id = sender
        .hello_as(None, false, WAIT)
        .expect("hello")
        .connection_id;
    sender.join_and_wait("data", WAIT).expect("join");
    receiver.join_and_wait("data", WAIT).expect("join");

    let raw = r#"{"b": [1, 2.50, "x\u00e9"],   "n":null}"#;
    let content = RawValue::from_string(raw.to_owned()).expect("valid JSON");
    sender.send_raw_json("data", &content).expect("send json");
    sender
        .send_json("data", &serde_json::json!({"k": [true, 0]}))
        .expect("send value");
    let body: Vec<u8> = (0..=255).collect();
    sender.send_binary("data", &body).expect("send binary");

    let mut bodies = Vec::new();
    while bodies.len() < 3 {
        bodies.push(expect_event(&receiver, "a message", |event| match event {
            Event::Message(message) => Some(message.clone()),
            _ => None,
        }));
    }
    assert_eq!(bodies[0].body.as_json(), Some(raw));
    assert_eq!(bodies[1].body.as_json(), Some(r#"{"k":[true,0]}"#));
    assert_eq!(bodies[2].body.as_bytes(), Some(&body[..]));
    assert_eq!(bodies[2].from, sender_id);
    assert!(matches!(bodies[2].body, Body::Binary(_)));
}

#[test]
fn a_non_fatal_server_error_is_typed_and_the_connection_stays_usable() {
    let server = start_server();
    let client = login(server.local_addr(), "lost");
    client.send_text("nowhere", "hello?").expect("send");
    let error = client
        .heartbeat_and_wait(WAIT)
        .expect_err("NOT_IN_ROOM comes before the heartbeat answer");
    match &error {
        ClientError::Server(ServerError { code, fatal, .. }) => {
            assert_eq!(*code, ErrorCode::NotInRoom);
            assert!(!fatal);
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert_eq!(error.code(), Some(ErrorCode::NotInRoom));
    assert!(error.to_string().contains("NOT_IN_ROOM"), "{error}");
    // The heartbeat answer was kept, and the connection still works.
    let rtt = client.heartbeat_and_wait(WAIT).expect("heartbeat");
    assert!(rtt < WAIT);
    assert!(client.is_connected());
}

#[test]
fn heartbeat_reports_a_round_trip_time_with_its_sequence_number() {
    let server = start_server();
    let client = login(server.local_addr(), "hb");
    let first = client.heartbeat().expect("heartbeat");
    let second = client.heartbeat().expect("heartbeat");
    assert_ne!(first, second);
    for expected in [first, second] {
        let reply = expect_event(&client, "heartbeat", |event| match event {
            Event::Heartbeat(reply) => Some(*reply),
            _ => None,
        });
        assert_eq!(reply.seq, Some(expected));
        assert!(reply.rtt.is_some_and(|rtt| rtt < WAIT));
    }
}

#[test]
fn stats_come_from_a_second_hello() {
    let server = start_server();
    let client = login(server.local_addr(), "stats");
    client.join_and_wait("one", WAIT).expect("join");
    client.join_and_wait("two", WAIT).expect("join");
    let stats = client.stats(WAIT).expect("stats");
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.rooms, 2);
    assert!(stats.frames_in >= 3, "{stats:?}");
    client.leave_and_wait("one", WAIT).expect("leave");
    assert_eq!(client.stats(WAIT).expect("stats").rooms, 1);
}

#[test]
fn a_disconnected_member_is_reported_as_leaving() {
    let server = start_server();
    let stays = login(server.local_addr(), "stays");
    let goes = login(server.local_addr(), "goes");
    stays.join_and_wait("room", WAIT).expect("join");
    goes.join_and_wait("room", WAIT).expect("join");
    goes.close();
    let event = expect_event(&stays, "userLeft", |event| match event {
        Event::Member(m) if m.change == MemberChange::Left => Some(m.clone()),
        _ => None,
    });
    assert_eq!(event.who(), "goes");
}

#[test]
fn one_thread_sends_while_another_receives() {
    let server = start_server();
    let client = login_with(server.local_addr(), Some("self"), true);
    client.join_and_wait("loop", WAIT).expect("join");
    const COUNT: usize = 200;
    let received = thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut texts = Vec::new();
            while texts.len() < COUNT {
                match client.recv_timeout(WAIT) {
                    Ok(Event::Message(message)) => texts.push(message.body.as_text()),
                    Ok(_) => {}
                    Err(error) => panic!("after {} messages: {error}", texts.len()),
                }
            }
            texts
        });
        for i in 0..COUNT {
            client.send_text("loop", &format!("m{i}")).expect("send");
        }
        reader.join().expect("reader thread")
    });
    let expected: Vec<Option<String>> = (0..COUNT).map(|i| Some(format!("m{i}"))).collect();
    assert_eq!(received, expected);
}

#[test]
fn requests_before_hello_are_refused_fatally() {
    let server = start_server();
    let client = Client::connect(server.local_addr()).expect("connect");
    let error = client
        .join_and_wait("early", WAIT)
        .expect_err("HELLO is required first");
    assert_eq!(error.code(), Some(ErrorCode::HelloRequired), "{error}");
    let last = expect_event(&client, "disconnect", |event| match event {
        Event::Disconnected(reason) => Some(reason.clone()),
        _ => None,
    });
    match last {
        DisconnectReason::ServerError(error) => assert_eq!(error.code, ErrorCode::HelloRequired),
        other => panic!("unexpected reason {other:?}"),
    }
    assert!(matches!(
        client.send_text("early", "x"),
        Err(ClientError::Disconnected(_))
    ));
}

#[test]
fn server_shutdown_is_reported_with_its_reason() {
    let server = start_server();
    let client = login(server.local_addr(), "bye");
    client.join_and_wait("room", WAIT).expect("join");
    server.shutdown();
    // The fatal error comes first, then the disconnect that carries it.
    match client.recv_timeout(WAIT) {
        Ok(Event::Error(error)) => {
            assert_eq!(error.code, ErrorCode::ShuttingDown);
            assert!(error.fatal);
        }
        other => panic!("expected SHUTTING_DOWN, got {other:?}"),
    }
    let reason = last_event(&client);
    assert!(
        matches!(&reason, DisconnectReason::ServerError(e) if e.code == ErrorCode::ShuttingDown),
        "{reason:?}"
    );
    assert!(reason.to_string().contains("SHUTTING_DOWN"), "{reason}");
    assert!(!client.is_connected());
    assert!(matches!(
        client.recv_timeout(WAIT),
        Err(ClientError::Disconnected(_))
    ));
}

#[test]
fn close_ends_the_reader_and_reports_a_local_close() {
    let server = start_server();
    let client = login(server.local_addr(), "closer");
    client.shutdown();
    let reason = expect_event(&client, "disconnect", |event| match event {
        Event::Disconnected(reason) => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, DisconnectReason::Closed);
    client.close();
}

// ---- without a server --------------------------------------------------

#[test]
fn invalid_room_names_are_refused_before_sending() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = Client::connect(listener.local_addr().expect("addr")).expect("connect");
    for room in ["", "   ", "a\u{7}b", &"x".repeat(65)] {
        match client.join(room) {
            Err(ClientError::InvalidRoom { .. }) => {}
            other => panic!("room {room:?}: {other:?}"),
        }
    }
    let error = client.send_binary("", b"x").expect_err("empty room");
    assert!(
        error.to_string().starts_with("invalid room name"),
        "{error}"
    );
}

#[test]
fn connection_refused_says_so() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    // The listener is dropped: nothing listens there any more.
    let error = Client::connect(addr).expect_err("nothing listens");
    assert!(
        matches!(error, ClientError::ConnectionRefused { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("connection refused") && text.contains(&addr.to_string()),
        "{text}"
    );
}

#[test]
fn waits_time_out_with_a_typed_error() {
    // A listener that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = Client::connect(listener.local_addr().expect("addr")).expect("connect");
    let error = client
        .hello_as(Some("x"), false, Duration::from_millis(100))
        .expect_err("no answer");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains("HELLO answer"), "{error}");
    assert!(matches!(
        client.recv_timeout(Duration::from_millis(10)),
        Err(ClientError::Timeout { .. })
    ));
}

/// A fake server: accepts one connection and runs `script` on it.
fn fake_server(script: impl FnOnce(TcpStream) + Send + 'static) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            script(stream);
        }
    });
    addr
}

fn last_event(client: &Client) -> DisconnectReason {
    loop {
        match client.recv_timeout(WAIT) {
            Ok(Event::Disconnected(reason)) => return reason,
            Ok(_) => {}
            Err(error) => panic!("no disconnect: {error}"),
        }
    }
}

#[test]
fn a_server_breaking_the_framing_is_a_protocol_violation() {
    let addr = fake_server(|mut stream| {
        // Version 9.
        let _ = stream.write_all(&[0, 0, 0, 3, 9, 1, 0]);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    let client = Client::connect(addr).expect("connect");
    let reason = last_event(&client);
    assert!(
        matches!(&reason, DisconnectReason::ProtocolViolation(what) if what.contains("version 9")),
        "{reason:?}"
    );
    assert!(
        reason
            .to_string()
            .starts_with("server violated the Relay v1 protocol")
    );
}

#[test]
fn a_server_sending_a_bad_payload_is_a_protocol_violation() {
    let addr = fake_server(|mut stream| {
        let _ = stream.write_all(&raw_frame(MessageType::JoinRoom, Flags::JSON, b"[1,2]"));
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    let client = Client::connect(addr).expect("connect");
    let reason = last_event(&client);
    assert!(
        matches!(&reason, DisconnectReason::ProtocolViolation(what) if what.contains("JOIN_ROOM")),
        "{reason:?}"
    );
}

#[test]
fn frames_split_anywhere_are_reassembled() {
    let addr = fake_server(|mut stream| {
        let mut bytes = raw_frame(
            MessageType::Message,
            Flags::JSON,
            br#"{"room":"r","from":"c1","user":"u","content":"split","timestamp":1}"#,
        );
        bytes.extend(raw_frame(
            MessageType::JoinRoom,
            Flags::JSON,
            br#"{"status":"joined","room":"r","members":2}"#,
        ));
        for byte in bytes {
            let _ = stream.write_all(&[byte]);
            let _ = stream.flush();
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    let client = Client::connect_with(addr, &Options::default()).expect("connect");
    match client.recv_timeout(WAIT) {
        Ok(Event::Message(m)) => assert_eq!(m.body.as_text().as_deref(), Some("split")),
        other => panic!("{other:?}"),
    }
    match client.recv_timeout(WAIT) {
        Ok(Event::Joined(ack)) => assert_eq!((ack.room.as_str(), ack.members), ("r", Some(2))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fatal_error_then_close_is_the_disconnect_reason() {
    let addr = fake_server(|mut stream| {
        let _ = stream.write_all(&raw_frame(
            MessageType::Error,
            Flags::JSON,
            br#"{"code":"IDLE_TIMEOUT","message":"idle for 60 s","fatal":true}"#,
        ));
        // Closing without reading what the client sent may reset the
        // connection; the reason must still be the error.
    });
    let client = Client::connect(addr).expect("connect");
    let reason = last_event(&client);
    match reason {
        DisconnectReason::ServerError(error) => {
            assert_eq!(error.code, ErrorCode::IdleTimeout);
            assert_eq!(error.message, "idle for 60 s");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn shutdown_unblocks_a_write_the_server_does_not_read() {
    let (release, hold) = crossbeam_channel::bounded::<()>(0);
    let addr = fake_server(move |stream| {
        // Keep the connection open without reading until the test is done.
        let _ = hold.recv();
        drop(stream);
    });
    let client = Client::connect(addr).expect("connect");
    let (progress, sent) = crossbeam_channel::unbounded::<usize>();
    let body = vec![0u8; 64 * 1024];
    thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for n in 0.. {
                if client.send_binary("r", &body).is_err() {
                    return n;
                }
                let _ = progress.send(n);
            }
            unreachable!()
        });
        // Wait until the writes stop making progress: the socket buffers are
        // full and the writer is blocked inside write_all, holding its lock.
        while sent.recv_timeout(Duration::from_millis(300)).is_ok() {}
        client.shutdown();
        let written = writer.join().expect("writer thread");
        assert!(written > 0, "{written}");
    });
    let _ = release.send(());
}

#[test]
fn tokens_are_sent_in_hello_and_auth_errors_keep_their_codes() {
    let server = testkit::start_server_with(server::Config {
        auth: server::auth::AuthConfig {
            tokens: Some(
                server::auth::TokenTable::parse(
                    "lib-test-token-0123456789 dan join=a publish=a\nlib-test-token-other-12345 dan join=a,b\n",
                    "test",
                )
                .expect("tokens"),
            ),
            jwt: None,
        },
        ..server::Config::default()
    });
    let refused = Client::connect(server.local_addr()).expect("connect");
    match refused.hello_with_token(None, "nope", false, WAIT) {
        Err(ClientError::Server(error)) => {
            assert_eq!(error.code, ErrorCode::AuthFailed);
            assert!(error.fatal);
        }
        other => panic!("expected AUTH_FAILED, got {other:?}"),
    }
    let client = Client::connect(server.local_addr()).expect("connect");
    client
        .hello_with_token(Some("dan"), "lib-test-token-0123456789", false, WAIT)
        .expect("hello");
    match client.join_and_wait("b", WAIT) {
        Err(ClientError::Server(error)) => {
            assert_eq!(error.code, ErrorCode::Forbidden);
            assert!(!error.fatal);
        }
        other => panic!("expected FORBIDDEN, got {other:?}"),
    }
    client
        .refresh_token("lib-test-token-other-12345", WAIT)
        .expect("refresh");
    client
        .join_and_wait("b", WAIT)
        .expect("allowed after the refresh");
}
