//! The server keeps SPEC.md to the byte: no frame it sends is longer than the
//! `maxFrameSize` it announced, JSON is judged by one rule wherever it is,
//! request ids come back, and the ERROR examples in SPEC.md are what it
//! really sends. A strict client (one that drops the connection on any frame
//! over the maximum) never loses a connection the server meant to keep.

#![allow(clippy::unwrap_used)]

use protocol::{Flags, MessageType};
use serde_json::{Value, json};
use testkit::*;

/// Receives the next frame as a strict client would: one longer than the
/// announced maximum fails the test.
fn strict(client: &mut Raw, max: u32) -> OwnedFrame {
    let frame = client.recv();
    let length = frame.payload.len() + 3;
    assert!(
        length <= max as usize,
        "a {:?} frame of {length} bytes, over the announced maximum of {max}: {}",
        frame.kind,
        frame.text().chars().take(200).collect::<String>()
    );
    frame
}

fn server_with_max(max: u32) -> ::server::RunningServer {
    start_server_with(::server::Config {
        max_frame: max,
        ..Default::default()
    })
}

/// A payload of exactly `length - 3` bytes: a HELLO whose one string makes
/// the frame `length` long.
fn hello_of_length(length: usize, key: &str) -> Vec<u8> {
    let overhead = format!(r#"{{"{key}":""}}"#).len() + 3;
    let text = format!(r#"{{"{key}":"{}"}}"#, "x".repeat(length - overhead));
    raw_frame(MessageType::Hello, Flags::JSON, text.as_bytes())
}

#[test]
fn a_maximum_size_request_is_refused_in_a_frame_within_the_maximum() {
    for max in [1024u32, 2048, protocol::DEFAULT_MAX_FRAME] {
        let server = server_with_max(max);
        let mut client = Raw::connect(server.local_addr());
        // A userId far over its 128 bytes, and an unknown key's long value
        // given twice: both refused with quotes of what was sent.
        client.send_raw(&hello_of_length(max as usize, "userId"));
        let error = strict(&mut client, max).expect_error();
        assert_eq!(error.code.as_str(), "INVALID_PAYLOAD");
        assert!(!error.fatal);
        client.send_raw(&hello_of_length(max as usize, "echo"));
        let error = strict(&mut client, max).expect_error();
        assert_eq!(error.code.as_str(), "INVALID_PAYLOAD");
        assert!(error.message.len() <= protocol::MAX_ERROR_MESSAGE);
        // Still in INIT, still connected: a valid HELLO is answered.
        client.send_json(MessageType::Hello, &json!({}));
        assert_eq!(strict(&mut client, max).kind, MessageType::Hello);
        let long_room = "r".repeat((max as usize - 20).min(5000));
        client.send_raw(&room_frame(MessageType::JoinRoom, &long_room));
        let error = strict(&mut client, max).expect_error();
        assert_eq!(error.code.as_str(), "INVALID_ROOM");
        assert!(error.message.contains('…'), "{}", error.message);
    }
}

#[test]
fn at_the_smallest_maximum_the_largest_answers_and_events_still_fit() {
    let max = ::server::MIN_MAX_FRAME;
    let server = server_with_max(max);
    // The names and ids that escape to the most bytes.
    let user = "\\".repeat(protocol::MAX_USER_ID_LEN);
    let room = "\"".repeat(protocol::MAX_ROOM_LEN);
    let id = "\"".repeat(protocol::MAX_REQUEST_ID_LEN);
    let mut watcher = Raw::connect(server.local_addr());
    watcher.send_json(MessageType::Hello, &json!({"userId": user, "id": id}));
    assert_eq!(strict(&mut watcher, max).json()["id"], id.as_str());
    watcher.send_json(MessageType::JoinRoom, &json!({"room": room, "id": id}));
    let answer = strict(&mut watcher, max).json();
    assert_eq!(
        (answer["room"].as_str(), answer["id"].as_str()),
        (Some(&*room), Some(&*id))
    );

    let mut joiner = Raw::connect(server.local_addr());
    joiner.send_json(MessageType::Hello, &json!({"userId": user}));
    strict(&mut joiner, max);
    joiner.send_json(MessageType::JoinRoom, &json!({"room": room}));
    strict(&mut joiner, max);
    let event = strict(&mut watcher, max).json();
    assert_eq!(event["type"], "userJoined");
    assert_eq!(event["user"], user.as_str());

    // An ERROR with a room, an id and a long message.
    watcher.send_json(
        MessageType::Message,
        &json!({"room": "elsewhere", "id": id, "content": 1}),
    );
    let error = strict(&mut watcher, max).expect_error();
    assert_eq!(error.code.as_str(), "NOT_IN_ROOM");
    // A delivery that would pass the maximum is refused, in a frame that
    // fits. The request is exactly the maximum: the delivery drops the id
    // but adds the publisher and the time, and is longer.
    let request = |content: &str| json!({"room": room, "id": id, "content": content});
    let bare = json_frame(MessageType::Message, &request("")).len() - 4;
    let content = "y".repeat(max as usize - bare);
    let frame = json_frame(MessageType::Message, &request(&content));
    assert_eq!(frame.len() - 4, max as usize);
    watcher.send_raw(&frame);
    let error = strict(&mut watcher, max).expect_error();
    assert_eq!(error.code.as_str(), "INVALID_PAYLOAD");
    assert_eq!(error.room.as_deref(), Some(&*room));
    // The HELLO answer, counters and all, fits too.
    watcher.send_json(MessageType::Hello, &json!({"id": id}));
    assert_eq!(strict(&mut watcher, max).kind, MessageType::Hello);
}

#[test]
fn the_server_refuses_to_start_with_a_maximum_below_the_floor() {
    let config = ::server::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        max_frame: ::server::MIN_MAX_FRAME - 1,
        ..Default::default()
    };
    let error = ::server::Server::bind(config).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("--max-frame"), "{error}");
}

#[test]
fn json_is_judged_by_one_rule_wherever_it_is() {
    let server = start_server();
    let (mut ann, _) = Raw::hello(server.local_addr(), json!({"echo": true}));
    ann.join("r");
    // Valid JSON with odd values: relayed in content...
    for content in [r#""\ud800""#, "1e400", r#"{"k":1,"k":2}"#] {
        let payload = format!(r#"{{"room":"r","content":{content}}}"#);
        ann.send_raw(&raw_frame(
            MessageType::Message,
            Flags::JSON,
            payload.as_bytes(),
        ));
        let delivery = ann.expect(MessageType::Message).text();
        assert!(
            delivery.contains(&format!(r#""content":{content}"#)),
            "{delivery}"
        );
    }
    // ... and refused, without closing, where the server reads them.
    for (kind, payload, code) in [
        (
            MessageType::JoinRoom,
            r#"{"room":"\ud800"}"#,
            "INVALID_ROOM",
        ),
        (
            MessageType::JoinRoom,
            r#"{"room":1e400}"#,
            "INVALID_PAYLOAD",
        ),
        (MessageType::Hello, r#"{"echo":-1e400}"#, "INVALID_PAYLOAD"),
        (
            MessageType::JoinRoom,
            r#"{"room":"r","x":1,"x":2}"#,
            "INVALID_PAYLOAD",
        ),
        (
            MessageType::Hello,
            r#"{"userId":"\u001b[2J\r\nadmin: "}"#,
            "INVALID_PAYLOAD",
        ),
    ] {
        ann.send_raw(&raw_frame(kind, Flags::JSON, payload.as_bytes()));
        let error = ann.expect_error(code);
        assert!(!error.fatal, "{payload}");
    }
    assert_eq!(ann.join("still")["status"], "joined");
    // Bytes that are not UTF-8 are not JSON, even where nobody looks.
    ann.send_raw(&raw_frame(
        MessageType::JoinRoom,
        Flags::JSON,
        b"{\"room\":\"r\",\"x\":\"\xff\xfe\"}",
    ));
    ann.expect_fatal("PARSE_ERROR");
}

#[test]
fn ids_come_back_on_answers_and_errors() {
    let server = start_server();
    let mut client = Raw::connect(server.local_addr());
    client.send_json(MessageType::Hello, &json!({"id": 1}));
    assert_eq!(client.expect(MessageType::Hello).json()["id"], 1);
    client.send_json(MessageType::JoinRoom, &json!({"room": "r", "id": "j"}));
    assert_eq!(client.expect(MessageType::JoinRoom).json()["id"], "j");
    client.send_json(MessageType::LeaveRoom, &json!({"room": "r", "id": -5}));
    assert_eq!(client.expect(MessageType::LeaveRoom).json()["id"], -5);
    // Pipelined MESSAGEs: the ERROR says which one failed.
    for id in ["a", "b", "c"] {
        let room = if id == "b" { "nowhere" } else { "r" };
        client.send_json(MessageType::JoinRoom, &json!({"room": "r"}));
        client.send_json(
            MessageType::Message,
            &json!({"room": room, "id": id, "content": 1}),
        );
    }
    client.expect(MessageType::JoinRoom);
    client.expect(MessageType::JoinRoom);
    let error = client.expect_error("NOT_IN_ROOM");
    assert_eq!(error.id, Some(protocol::RequestId::Text("b".into())));
    assert_eq!(error.room.as_deref(), Some("nowhere"));
    client.expect(MessageType::JoinRoom);
    // An invalid id is refused, and the ERROR has none.
    client.send_json(MessageType::JoinRoom, &json!({"room": "r", "id": 1.5}));
    assert_eq!(client.expect_error("INVALID_PAYLOAD").id, None);
    // Fatal errors carry the id too.
    let mut early = Raw::connect(server.local_addr());
    early.send_json(MessageType::JoinRoom, &json!({"room": "r", "id": 9}));
    let error = early.expect(MessageType::Error).expect_error();
    assert_eq!(
        (error.code.as_str(), error.id),
        ("HELLO_REQUIRED", Some(protocol::RequestId::Number(9)))
    );
}

#[test]
fn requests_pipelined_after_a_refused_hello_get_hello_required() {
    let server = start_server();
    let mut client = Raw::connect(server.local_addr());
    client.send_json(MessageType::Hello, &json!({"echo": "yes"}));
    client.send_json(MessageType::JoinRoom, &json!({"room": "r"}));
    assert!(!client.expect_error("INVALID_PAYLOAD").fatal);
    client.expect_fatal("HELLO_REQUIRED");
}

/// The `payload:` lines of SPEC.md's ERROR examples, as JSON.
fn spec_error_examples() -> Vec<(String, Value)> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../SPEC.md")).unwrap();
    let mut examples = Vec::new();
    for block in spec.split("```hex").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        if !block.lines().any(|line| line.trim() == "server: ERROR") {
            continue;
        }
        let payload = block
            .lines()
            .find_map(|line| line.strip_prefix("payload: "))
            .unwrap();
        examples.push((payload.to_owned(), serde_json::from_str(payload).unwrap()));
    }
    examples
}

#[test]
fn the_error_examples_in_the_spec_are_what_the_server_sends() {
    let examples = spec_error_examples();
    assert!(examples.len() >= 4, "{examples:?}");
    for (text, example) in examples {
        let server = start_server();
        let addr = server.local_addr();
        let sent = match example["code"].as_str().unwrap() {
            "NOT_IN_ROOM" => {
                let (mut client, _) = Raw::hello(addr, json!({}));
                let mut request = json!({"room": example["room"], "content": "hi"});
                if let Some(id) = example.get("id") {
                    request["id"] = id.clone();
                }
                client.send_json(MessageType::Message, &request);
                client.expect(MessageType::Error)
            }
            "HELLO_REQUIRED" => {
                let mut client = Raw::connect(addr);
                client.send_json(MessageType::Message, &json!({"room": "test", "content": 1}));
                client.expect(MessageType::Error)
            }
            "SHUTTING_DOWN" => {
                let (mut client, _) = Raw::hello(addr, json!({}));
                let handle = server.shutdown_handle();
                handle.shutdown();
                client.expect(MessageType::Error)
            }
            "RATE_LIMITED" => {
                // 10 frames a second, a burst of 1 s: the HELLO and 9 JOINs
                // in one read take the 10 tokens, and the next JOIN needs
                // exactly 100 ms.
                drop(server);
                let server = start_server_with(::server::Config {
                    rates: ::server::RateLimits::new(10, 0, std::time::Duration::from_secs(1)),
                    ..Default::default()
                });
                let mut client = Raw::connect(server.local_addr());
                let mut burst = json_frame(MessageType::Hello, &json!({}));
                for id in 1..=9 {
                    burst.extend(json_frame(
                        MessageType::JoinRoom,
                        &json!({"room": "r", "id": id}),
                    ));
                }
                burst.extend(json_frame(
                    MessageType::JoinRoom,
                    &json!({"room": example["room"], "id": example["id"]}),
                ));
                client.send_raw(&burst);
                client.expect(MessageType::Hello);
                for _ in 1..=9 {
                    client.expect(MessageType::JoinRoom);
                }
                client.expect(MessageType::Error)
            }
            "AUTH_FAILED" | "FORBIDDEN" | "TOKEN_EXPIRED" => auth_error(&example),
            "NOT_FOUND" => {
                // A direct message to a user nobody is connected as.
                let (mut client, _) = Raw::hello(addr, json!({"userId": "ann"}));
                let message = &example["message"];
                let user = message.as_str().and_then(|m| m.split('"').nth(1)).unwrap();
                let mut request = json!({"toUser": user, "content": "psst"});
                if let Some(id) = example.get("id") {
                    request["id"] = id.clone();
                }
                client.send_json(MessageType::Message, &request);
                client.expect(MessageType::Error)
            }
            other => {
                panic!("SPEC.md has an ERROR example for {other}; teach this test to cause it")
            }
        };
        assert_eq!(sent.flags, Flags::JSON);
        assert_eq!(sent.text(), text, "the server's ERROR differs from SPEC.md");
    }
}

/// Causes the authentication ERROR of a SPEC.md example (11.1, 11.2) on a
/// server that requires a token, and returns it.
fn auth_error(example: &Value) -> OwnedFrame {
    use ::server::auth::{AuthConfig, JwtVerifier, TokenTable};
    use jsonwebtoken::{EncodingKey, Header, encode};
    let secret = b"a secret for this test run only, 32+ bytes";
    let tokens = "spec-token-0123456789abcdef spec join=lobby publish=\n";
    let server = start_server_with(::server::Config {
        auth: AuthConfig {
            tokens: Some(TokenTable::parse(tokens, "test").unwrap()),
            jwt: Some(JwtVerifier::hs256(secret, 0)),
        },
        ..Default::default()
    });
    let addr = server.local_addr();
    let code = example["code"].as_str().unwrap();
    let message = example["message"].as_str().unwrap();
    match code {
        "AUTH_FAILED" => {
            let mut client = Raw::connect(addr);
            client.send_json(MessageType::Hello, &json!({"token": "wrong"}));
            client.expect(MessageType::Error)
        }
        "FORBIDDEN" if message.starts_with("JOIN_ROOM") => {
            let (mut client, _) = Raw::hello(addr, json!({"token": "spec-token-0123456789abcdef"}));
            client.send_json(MessageType::JoinRoom, &json!({"room": example["room"]}));
            client.expect(MessageType::Error)
        }
        "FORBIDDEN" => {
            let (mut client, _) = Raw::hello(addr, json!({"token": "spec-token-0123456789abcdef"}));
            client.join(example["room"].as_str().unwrap());
            let request = json!({"room": example["room"], "content": 1, "id": example["id"]});
            client.send_json(MessageType::Message, &request);
            client.expect(MessageType::Error)
        }
        _ => {
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3;
            let claims = json!({"sub": "spec", "exp": exp});
            let token = encode(
                &Header::default(),
                &claims,
                &EncodingKey::from_secret(secret),
            )
            .unwrap();
            let (mut client, _) = Raw::hello(addr, json!({"token": token}));
            // Silent: the server cuts the connection on its own clock.
            client.expect(MessageType::Error)
        }
    }
}
