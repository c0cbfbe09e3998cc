//! Rooms, messages, acks, echo, membership events and order, against a real
//! server on an ephemeral port.

#![allow(clippy::unwrap_used)]

use protocol::{Flags, MessageType};
use serde_json::{Value, json};
use testkit::{Raw, json_frame, raw_frame, start_server, start_server_with};

#[test]
fn hello_answer_announces_limits_and_identity() {
    let server = start_server();
    let (_client, reply) = Raw::hello(
        server.local_addr(),
        json!({"userId": "ann", "clientVersion": "1.0.0"}),
    );
    assert_eq!(reply.status, "connected");
    assert!(reply.connection_id.starts_with('c'));
    assert_eq!(reply.max_frame_size, 1024 * 1024);
    assert_eq!(reply.idle_timeout_ms, 60_000);
    assert_eq!(reply.stats.unwrap().connections, 1);
}

/// A JOIN answer without the keys rooms with an order added (SPEC.md 3.3),
/// after checking they are there: the room's epoch, its last `seq`, and the
/// member list, as long as `members` says (the rooms here are small).
fn positioned(mut answer: Value) -> Value {
    let epoch = answer["epoch"].as_str().map(str::to_owned);
    assert!(
        epoch.as_deref().is_some_and(protocol::valid_epoch),
        "{answer}"
    );
    assert!(answer["seq"].is_u64(), "{answer}");
    let listed = answer["memberList"].as_array().map(Vec::len);
    assert_eq!(
        listed.map(|n| n as u64),
        answer["members"].as_u64(),
        "{answer}"
    );
    for key in ["epoch", "seq", "memberList"] {
        answer.as_object_mut().map(|object| object.remove(key));
    }
    answer
}

#[test]
fn two_clients_chat_and_the_sender_gets_no_copy_without_echo() {
    let server = start_server();
    let (mut ann, ann_hello) = Raw::hello(server.local_addr(), json!({"userId": "ann"}));
    let (mut bob, _) = Raw::hello(server.local_addr(), json!({"userId": "bob"}));
    assert_eq!(
        positioned(ann.join("physics")),
        json!({"status": "joined", "room": "physics", "members": 1})
    );
    assert_eq!(
        positioned(bob.join("physics")),
        json!({"status": "joined", "room": "physics", "members": 2})
    );
    let joined = ann.expect(MessageType::Message).json();
    assert_eq!(joined["type"], "userJoined");
    assert_eq!(joined["user"], "bob");

    ann.publish("physics", json!({"text": "hi bob", "n": [1, 2.5, null]}));
    let delivery = bob.expect(MessageType::Message);
    assert_eq!(delivery.flags, Flags::JSON);
    let value = delivery.json();
    assert_eq!(value["room"], "physics");
    assert_eq!(value["from"], ann_hello.connection_id.as_str());
    assert_eq!(value["user"], "ann");
    assert_eq!(
        value["content"],
        json!({"text": "hi bob", "n": [1, 2.5, null]})
    );
    assert!(value["timestamp"].as_u64().unwrap() > 1_700_000_000_000);

    // Ann got no copy: her next frame is the answer to this heartbeat.
    ann.send_raw(&raw_frame(MessageType::Heartbeat, Flags::NONE, b""));
    ann.expect(MessageType::Heartbeat);
}

#[test]
fn content_is_relayed_byte_exact_including_null_zero_and_empty_string() {
    let server = start_server();
    let (mut ann, _) = Raw::hello(server.local_addr(), json!({"echo": true}));
    ann.join("r");
    for content in [
        "null",
        "0",
        "\"\"",
        "{ \"spaced\" : [ 1 ,2 ] }",
        "\"\\u00e9\"",
    ] {
        let payload = format!("{{\"room\":\"r\",\"content\":{content}}}");
        ann.send_raw(&raw_frame(
            MessageType::Message,
            Flags::JSON,
            payload.as_bytes(),
        ));
        let delivery = ann.expect(MessageType::Message);
        let text = String::from_utf8(delivery.payload).unwrap();
        assert!(text.contains(&format!("\"content\":{content},")), "{text}");
        assert!(!text.contains("\"user\""), "no userId was given: {text}");
    }
}

#[test]
fn echo_delivers_the_senders_own_copy() {
    let server = start_server();
    let (mut ann, hello) = Raw::hello(server.local_addr(), json!({"echo": true, "userId": "ann"}));
    ann.join("r");
    ann.publish("r", json!("me too"));
    let value = ann.expect(MessageType::Message).json();
    assert_eq!(value["from"], hello.connection_id.as_str());
    assert_eq!(value["content"], "me too");
}

#[test]
fn acks_trim_rooms_and_leaving_is_idempotent() {
    let server = start_server();
    let (mut ann, _) = Raw::hello(server.local_addr(), json!({}));
    assert_eq!(
        positioned(ann.join("  lobby \t")),
        json!({"status": "joined", "room": "lobby", "members": 1})
    );
    assert_eq!(
        positioned(ann.join("lobby")),
        json!({"status": "joined", "room": "lobby", "members": 1})
    );
    assert_eq!(
        ann.leave("lobby"),
        json!({"status": "left", "room": "lobby", "members": 0})
    );
    assert_eq!(
        ann.leave("lobby"),
        json!({"status": "left", "room": "lobby", "members": 0})
    );
    assert_eq!(
        ann.leave("never"),
        json!({"status": "left", "room": "never", "members": 0})
    );
    assert_eq!(ann.stats().rooms, 0);
}

#[test]
fn members_hear_of_joins_leaves_and_disconnects_but_not_their_own() {
    let server = start_server();
    let (mut ann, _) = Raw::hello(server.local_addr(), json!({"userId": "ann"}));
    let (mut bob, bob_hello) = Raw::hello(server.local_addr(), json!({}));
    ann.join("r");
    bob.join("r");
    let event = ann.expect(MessageType::Message).json();
    assert_eq!(event["type"], "userJoined");
    assert_eq!(event["room"], "r");
    assert_eq!(event["connectionId"], bob_hello.connection_id.as_str());
    assert!(event.get("user").is_none());
    bob.join("r"); // a second join tells nobody
    bob.leave("r");
    let event = ann.expect(MessageType::Message).json();
    assert_eq!(event["type"], "userLeft");
    bob.join("r");
    assert_eq!(
        ann.expect(MessageType::Message).json()["type"],
        "userJoined"
    );
    drop(bob);
    let event = ann.expect(MessageType::Message).json();
    assert_eq!(event["type"], "userLeft");
    assert_eq!(event["connectionId"], bob_hello.connection_id.as_str());
    // Bob never heard about himself, and Ann has nothing else pending.
    ann.send_raw(&raw_frame(MessageType::Heartbeat, Flags::NONE, b""));
    ann.expect(MessageType::Heartbeat);
}

#[test]
fn ten_thousand_messages_arrive_complete_and_in_order_at_every_member() {
    const N: u64 = 10_000;
    let server = start_server();
    let addr = server.local_addr();
    let members: Vec<Raw> = (0..3)
        .map(|_| {
            let (mut member, _) = Raw::hello(addr, json!({}));
            member.join("order");
            member
        })
        .collect();
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    publisher.join("order");
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut member| {
            std::thread::spawn(move || {
                let mut next = 0;
                while next < N {
                    let value = member.expect(MessageType::Message).json();
                    if value.get("type").is_some() {
                        continue; // userJoined of later members
                    }
                    assert_eq!(value["content"], next, "out of order");
                    next += 1;
                }
                next
            })
        })
        .collect();
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend(json_frame(
            MessageType::Message,
            &json!({"room": "order", "content": i}),
        ));
        if batch.len() > 16 * 1024 {
            publisher.send_raw(&batch);
            batch.clear();
        }
    }
    publisher.send_raw(&batch);
    for reader in readers {
        assert_eq!(reader.join().unwrap(), N);
    }
}

#[test]
fn binary_messages_are_relayed_byte_exact() {
    let server = start_server();
    let (mut ann, ann_hello) = Raw::hello(server.local_addr(), json!({}));
    let (mut bob, _) = Raw::hello(server.local_addr(), json!({}));
    ann.join("bin");
    bob.join("bin");
    ann.expect(MessageType::Message);
    let body: Vec<u8> = (0..=255).collect();
    let mut payload = vec![3];
    payload.extend_from_slice(b"bin");
    payload.extend_from_slice(&body);
    ann.send_raw(&raw_frame(MessageType::Message, Flags::BINARY, &payload));
    let delivery = bob.expect(MessageType::Message);
    assert_eq!(delivery.flags, Flags::BINARY);
    let parsed = protocol::BinaryDelivery::parse(&delivery.payload).unwrap();
    assert_eq!(parsed.room, "bin");
    assert_eq!(parsed.from, ann_hello.connection_id);
    assert_eq!(parsed.body, &body[..]);
}

#[test]
fn heartbeat_is_answered_with_the_same_flags_and_payload() {
    let server = start_server();
    let (mut ann, _) = Raw::hello(server.local_addr(), json!({}));
    for (flags, payload) in [
        (Flags::NONE, &b""[..]),
        (Flags::JSON, b"{\"t\":1}"),
        (Flags::BINARY, &[0, 1, 255]),
    ] {
        ann.send_raw(&raw_frame(MessageType::Heartbeat, flags, payload));
        let answer = ann.expect(MessageType::Heartbeat);
        assert_eq!((answer.flags, &answer.payload[..]), (flags, payload));
    }
}

#[test]
fn a_frame_of_exactly_the_maximum_size_is_accepted() {
    let server = start_server_with(server::Config {
        max_frame: 4096,
        ..Default::default()
    });
    let (mut ann, _) = Raw::hello(server.local_addr(), json!({}));
    let payload = vec![b'x'; 4096 - 3];
    ann.send_raw(&raw_frame(MessageType::Heartbeat, Flags::BINARY, &payload));
    assert_eq!(ann.expect(MessageType::Heartbeat).payload.len(), 4093);
    let payload = vec![b'x'; 4096 - 2];
    ann.send_raw(&raw_frame(MessageType::Heartbeat, Flags::BINARY, &payload));
    ann.expect_fatal("INVALID_FRAME");
}

#[test]
fn a_client_sending_byte_by_byte_is_served() {
    let server = start_server();
    let mut ann = Raw::connect(server.local_addr());
    let mut stream = json_frame(MessageType::Hello, &json!({"userId": "slow"}));
    stream.extend(json_frame(MessageType::JoinRoom, &json!({"room": "bytes"})));
    stream.extend(raw_frame(MessageType::Heartbeat, Flags::NONE, b""));
    for byte in stream {
        ann.send_raw(&[byte]);
    }
    ann.expect(MessageType::Hello);
    assert_eq!(ann.expect(MessageType::JoinRoom).json()["room"], "bytes");
    ann.expect(MessageType::Heartbeat);
}
