//! Every error case of SPEC.md: fatal ones end with the ERROR then the close,
//! non-fatal ones leave the connection serving.

#![allow(clippy::unwrap_used)]

use protocol::{Flags, MessageType};
use serde_json::json;
use testkit::{Raw, json_frame, raw_frame, start_server, start_server_with, wait_until};

fn hello_frame() -> Vec<u8> {
    json_frame(MessageType::Hello, &json!({}))
}

/// Sends `bytes` on a fresh connection (after HELLO if `hello`) and expects
/// the fatal `code`.
fn fatal_case(bytes: &[u8], hello: bool, code: &str) {
    let server = start_server_with(server::Config {
        max_frame: 1024,
        ..Default::default()
    });
    let mut client = Raw::connect(server.local_addr());
    if hello {
        client.send_raw(&hello_frame());
        client.expect(MessageType::Hello);
    }
    client.send_raw(bytes);
    client.expect_fatal(code);
    drop(client);
    wait_until("the connection to be closed", || {
        server.counters().connections() == 0
    });
    assert_eq!(
        server
            .counters()
            .errors_sent(protocol::ErrorCode::from_wire(code)),
        1
    );
}

#[test]
fn framing_errors_are_fatal_before_and_after_hello() {
    for hello in [false, true] {
        fatal_case(&[0, 0, 0, 2, 1, 1], hello, "INVALID_FRAME");
        fatal_case(&[0, 0, 0, 0], hello, "INVALID_FRAME");
        // Over the maximum: judged from the length alone, no body sent.
        fatal_case(&1025u32.to_be_bytes(), hello, "INVALID_FRAME");
        fatal_case(&[0, 0, 0, 3, 1, 5, 0x04], hello, "INVALID_FRAME");
        fatal_case(&[0, 0, 0, 3, 1, 5, 0x80], hello, "INVALID_FRAME");
        fatal_case(&[0, 0, 0, 3, 1, 5, 0x03], hello, "INVALID_FRAME");
        fatal_case(&[0, 0, 0, 3, 2, 1, 0], hello, "UNSUPPORTED_VERSION");
        fatal_case(&[0, 0, 0, 3, 1, 8, 0], hello, "UNKNOWN_MESSAGE_TYPE");
        fatal_case(&[0, 0, 0, 3, 1, 0, 0], hello, "UNKNOWN_MESSAGE_TYPE");
        fatal_case(
            &raw_frame(MessageType::JoinRoom, Flags::JSON, b"{\"room\":"),
            hello,
            "PARSE_ERROR",
        );
        fatal_case(
            &raw_frame(MessageType::Hello, Flags::JSON, b"not json"),
            hello,
            "PARSE_ERROR",
        );
    }
}

#[test]
fn anything_but_hello_first_is_hello_required() {
    for frame in [
        json_frame(MessageType::JoinRoom, &json!({"room": "r"})),
        json_frame(MessageType::Message, &json!({"room": "r", "content": 1})),
        raw_frame(MessageType::Heartbeat, Flags::NONE, b""),
        json_frame(MessageType::LeaveRoom, &json!({"room": "r"})),
        json_frame(MessageType::JoinRoom, &json!({"wrong": "shape"})),
    ] {
        fatal_case(&frame, false, "HELLO_REQUIRED");
    }
}

#[test]
fn a_bad_hello_shape_is_non_fatal_and_a_good_one_still_works() {
    let server = start_server();
    let mut client = Raw::connect(server.local_addr());
    client.send_json(MessageType::Hello, &json!({"userId": 42}));
    assert!(!client.expect_error("INVALID_PAYLOAD").fatal);
    client.send_json(MessageType::Hello, &json!({"userId": "ok"}));
    client.expect(MessageType::Hello);
}

#[test]
fn room_payload_and_membership_errors_are_non_fatal() {
    let server = start_server();
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    let cases = [
        (
            json_frame(MessageType::JoinRoom, &json!({"room": ""})),
            "INVALID_ROOM",
        ),
        (
            json_frame(MessageType::JoinRoom, &json!({"room": "   "})),
            "INVALID_ROOM",
        ),
        (
            json_frame(MessageType::JoinRoom, &json!({"room": "x".repeat(65)})),
            "INVALID_ROOM",
        ),
        (
            json_frame(MessageType::JoinRoom, &json!({"room": "bad\u{7}bell"})),
            "INVALID_ROOM",
        ),
        (
            json_frame(MessageType::LeaveRoom, &json!({"room": "del\u{7f}"})),
            "INVALID_ROOM",
        ),
        (
            json_frame(MessageType::JoinRoom, &json!({})),
            "INVALID_PAYLOAD",
        ),
        (
            json_frame(MessageType::JoinRoom, &json!({"room": 7})),
            "INVALID_PAYLOAD",
        ),
        (
            json_frame(MessageType::JoinRoom, &json!(["room"])),
            "INVALID_PAYLOAD",
        ),
        (
            json_frame(MessageType::Message, &json!({"room": "r"})),
            "INVALID_PAYLOAD",
        ),
        (
            json_frame(MessageType::Message, &json!({"content": 1})),
            "INVALID_PAYLOAD",
        ),
        (
            json_frame(MessageType::Message, &json!("just a string")),
            "INVALID_PAYLOAD",
        ),
        (
            raw_frame(MessageType::Message, Flags::NONE, b"{}"),
            "INVALID_PAYLOAD",
        ),
        (
            raw_frame(MessageType::Message, Flags::BINARY, &[9, b'r']),
            "INVALID_PAYLOAD",
        ),
        (
            json_frame(
                MessageType::Message,
                &json!({"room": "nowhere", "content": 1}),
            ),
            "NOT_IN_ROOM",
        ),
    ];
    for (frame, code) in cases {
        client.send_raw(&frame);
        let error = client.expect_error(code);
        assert!(!error.fatal, "{code} must not be fatal");
        assert!(!error.message.is_empty());
    }
    // Still serving.
    assert_eq!(client.join("fine")["status"], "joined");
}

#[test]
fn a_message_too_large_once_relayed_is_refused_not_truncated() {
    let server = start_server_with(server::Config {
        max_frame: 1024,
        ..Default::default()
    });
    let (mut client, _) = Raw::hello(server.local_addr(), json!({"echo": true}));
    client.join("r");
    // Fits as a request (about 1,010 bytes), not once `from` and `timestamp`
    // are added.
    let content = "y".repeat(980);
    client.publish("r", json!(content));
    assert!(!client.expect_error("INVALID_PAYLOAD").fatal);
    client.publish("r", json!("small"));
    assert_eq!(
        client.expect(MessageType::Message).json()["content"],
        "small"
    );
}

#[test]
fn the_room_limit_per_connection_is_enforced() {
    let server = start_server_with(server::Config {
        max_rooms_per_connection: 3,
        ..Default::default()
    });
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    for room in ["a", "b", "c"] {
        client.join(room);
    }
    client.send_json(MessageType::JoinRoom, &json!({"room": "d"}));
    assert!(!client.expect_error("INVALID_ROOM").fatal);
    assert_eq!(
        client.join("a")["members"],
        1,
        "rejoining a room already joined is fine"
    );
    client.leave("a");
    assert_eq!(client.join("d")["status"], "joined");
}

#[test]
fn replies_before_a_fatal_error_are_delivered_first() {
    let server = start_server();
    let mut client = Raw::connect(server.local_addr());
    let mut bytes = hello_frame();
    bytes.extend(raw_frame(MessageType::Heartbeat, Flags::BINARY, b"first"));
    bytes.extend([0, 0, 0, 3, 9, 1, 0]);
    bytes.extend(raw_frame(MessageType::Heartbeat, Flags::BINARY, b"never"));
    client.send_raw(&bytes);
    client.expect(MessageType::Hello);
    assert_eq!(client.expect(MessageType::Heartbeat).payload, b"first");
    client.expect_fatal("UNSUPPORTED_VERSION");
}

#[test]
fn an_error_frame_from_a_client_is_ignored() {
    let server = start_server();
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    client.send_json(
        MessageType::Error,
        &json!({"code": "X", "message": "client side"}),
    );
    client.send_raw(&raw_frame(MessageType::Heartbeat, Flags::NONE, b""));
    client.expect(MessageType::Heartbeat);
}

#[test]
fn garbage_never_crashes_the_server() {
    let server = start_server();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..50 {
        let mut client = Raw::connect(server.local_addr());
        let mut bytes = hello_frame();
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        client.send_raw(&bytes);
        while client.next().is_some() {}
    }
    // Every garbage connection was closed properly, none by a crash.
    wait_until("the garbage connections to close", || {
        server.counters().connections() == 0
    });
    assert_eq!(server.counters().thread_panics(), 0);
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    assert_eq!(client.join("alive")["status"], "joined");
}

#[test]
fn deeply_nested_json_is_relayed_or_refused_without_crashing() {
    let server = start_server();
    let (mut client, _) = Raw::hello(server.local_addr(), json!({"echo": true}));
    client.join("deep");
    // Within serde_json's nesting limit: relayed as is.
    let content = format!("{}{}", "[".repeat(120), "]".repeat(120));
    let payload = format!("{{\"room\":\"deep\",\"content\":{content}}}");
    client.send_raw(&raw_frame(
        MessageType::Message,
        Flags::JSON,
        payload.as_bytes(),
    ));
    let delivery = String::from_utf8(client.expect(MessageType::Message).payload).unwrap();
    assert!(delivery.contains(&content));
    // Far beyond it: refused as unparseable, and the server lives on.
    let content = "[".repeat(100_000);
    let payload = format!("{{\"room\":\"deep\",\"content\":{content}}}");
    client.send_raw(&raw_frame(
        MessageType::Message,
        Flags::JSON,
        payload.as_bytes(),
    ));
    client.expect_fatal("PARSE_ERROR");
    let (mut other, _) = Raw::hello(server.local_addr(), json!({}));
    assert_eq!(other.join("deep")["members"], 1);
}

#[test]
fn a_fatal_error_is_the_last_frame_even_while_publishers_wait_on_the_queue() {
    // A member whose tiny queue is full, with publishers waiting on it, sends
    // a bad frame: nothing may be queued behind its ERROR.
    for _ in 0..3 {
        let server = start_server_with(server::Config {
            stall_timeout: std::time::Duration::from_secs(10),
            queue_items: 2,
            ..Default::default()
        });
        let addr = server.local_addr();
        let (mut member, _) = Raw::hello(addr, json!({}));
        member.join("r");
        let publishers: Vec<_> = (0..4)
            .map(|_| {
                let (mut publisher, _) = Raw::hello(addr, json!({}));
                publisher.join("r");
                let mut drain = publisher.stream().try_clone().unwrap();
                std::thread::spawn(move || {
                    let mut sink = vec![0u8; 65536];
                    while matches!(std::io::Read::read(&mut drain, &mut sink), Ok(n) if n > 0) {}
                });
                std::thread::spawn(move || {
                    let big = "x".repeat(32 * 1024);
                    for n in 0..200 {
                        let bytes = json_frame(
                            MessageType::Message,
                            &json!({"room": "r", "content": [n, big]}),
                        );
                        if std::io::Write::write_all(&mut publisher.stream(), &bytes).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        // Pace the member: let the publishers get going before it errs.
        std::thread::sleep(std::time::Duration::from_millis(300));
        member.send_raw(&[0, 0, 0, 3, 2, 5, 0]);
        let mut error = None;
        for frame in member.by_ref() {
            assert!(
                error.is_none(),
                "a {} frame came after the fatal ERROR",
                frame.kind
            );
            if frame.kind == MessageType::Error {
                error = Some(frame.expect_error());
            }
        }
        let error = error.expect("the member got its ERROR");
        assert_eq!(error.code.as_str(), "UNSUPPORTED_VERSION");
        drop(member);
        for publisher in publishers {
            publisher.join().unwrap();
        }
    }
}
