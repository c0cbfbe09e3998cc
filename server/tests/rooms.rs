//! Rooms with an order (SPEC.md 5.11 and 3.13 to 3.16), against a real
//! server: one order for every member, recovery after a reconnect with no
//! gap and no duplicate, exact gap notices (history too short, a restart),
//! a slow consumer coming back, history within the memory budget, acks,
//! WHO, direct messages and membership events turned off.

#![allow(clippy::unwrap_used)]

use std::io::BufReader;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use protocol::{Flags, MessageType};
use serde_json::{Value, json};
use testkit::{Raw, json_frame, raw_frame, start_server, start_server_with, wait_until};

mod support;

fn with_history(messages: usize) -> ::server::Config {
    ::server::Config {
        history: ::server::HistoryLimits {
            messages,
            bytes: 16 << 20,
            max_age: None,
        },
        ..Default::default()
    }
}

/// Returns once the server has handled everything `client` sent before.
fn handled(client: &mut Raw) {
    client.send_raw(&raw_frame(MessageType::Heartbeat, Flags::NONE, b""));
    client.expect_skipping_messages(MessageType::Heartbeat);
}

/// The next delivery (a MESSAGE without `type`), skipping membership events.
fn next_delivery(client: &mut Raw) -> Value {
    loop {
        let value = client.expect(MessageType::Message).json();
        match value.get("type").and_then(Value::as_str) {
            None => return value,
            Some("userJoined" | "userLeft") => {}
            Some(other) => panic!("expected a delivery, got a {other} notice: {value}"),
        }
    }
}

/// Publishes `from..=to` as numbers, in frames written in one go.
fn publish_range(client: &mut Raw, room: &str, range: std::ops::RangeInclusive<u64>) {
    let mut bytes = Vec::new();
    for n in range {
        bytes.extend(json_frame(
            MessageType::Message,
            &json!({"room": room, "content": n}),
        ));
    }
    client.send_raw(&bytes);
}

#[test]
fn every_member_sees_the_same_order_with_four_publishers() {
    const EACH: u64 = 500;
    // Small queues, so members are often full and deliveries wait in their
    // backlogs; a stall bound long enough that nobody is cut.
    let server = start_server_with(::server::Config {
        queue_items: 2,
        stall_timeout: Duration::from_secs(20),
        ..Default::default()
    });
    let addr = server.local_addr();
    let mut members: Vec<Raw> = (0..3).map(|_| Raw::hello(addr, json!({})).0).collect();
    for member in &mut members {
        member.join("order");
    }
    let mut publishers: Vec<Raw> = (0..4).map(|_| Raw::hello(addr, json!({})).0).collect();
    for publisher in &mut publishers {
        publisher.join("order");
    }
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut member| {
            std::thread::spawn(move || {
                (0..4 * EACH)
                    .map(|_| {
                        let delivery = next_delivery(&mut member);
                        (
                            delivery["seq"].as_u64().unwrap(),
                            delivery["from"].as_str().unwrap().to_owned(),
                            delivery["content"].as_u64().unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let writers: Vec<_> = publishers
        .into_iter()
        .map(|mut publisher| {
            std::thread::spawn(move || {
                // In several writes, so the publishers interleave.
                for chunk in 0..10 {
                    let first = chunk * EACH / 10;
                    publish_range(&mut publisher, "order", first..=first + EACH / 10 - 1);
                }
                handled(&mut publisher);
                publisher
            })
        })
        .collect();
    let seen: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let seqs: Vec<u64> = seen[0].iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=4 * EACH).collect::<Vec<_>>(),
        "seq counts 1, 2, 3…"
    );
    assert_eq!(seen[0], seen[1], "members 0 and 1 disagree on the order");
    assert_eq!(seen[0], seen[2], "members 0 and 2 disagree on the order");
    // Each publisher's own messages are in the order it sent them.
    for (_, from, _) in &seen[0] {
        let own: Vec<u64> = seen[0]
            .iter()
            .filter(|(_, f, _)| f == from)
            .map(|(_, _, n)| *n)
            .collect();
        assert_eq!(own, (0..EACH).collect::<Vec<_>>());
    }
}

#[test]
fn a_member_that_reconnects_recovers_with_no_gap_and_no_duplicate() {
    let server = start_server_with(with_history(10_000));
    let addr = server.local_addr();
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    publisher.join("feed");
    let (mut member, _) = Raw::hello(addr, json!({}));
    let answer = member.join("feed");
    let epoch = answer["epoch"].as_str().unwrap().to_owned();
    publish_range(&mut publisher, "feed", 1..=200);
    let mut last = 0;
    for _ in 0..100 {
        let delivery = next_delivery(&mut member);
        assert_eq!(delivery["epoch"], epoch.as_str());
        last = delivery["seq"].as_u64().unwrap();
    }
    assert_eq!(last, 100);
    // Gone, with 100 deliveries unread; the room goes on meanwhile, and
    // the publisher keeps publishing while the member joins again.
    member.reset();
    let more = std::thread::spawn(move || {
        for chunk in 0..40 {
            publish_range(&mut publisher, "feed", 201 + chunk * 10..=210 + chunk * 10);
        }
        handled(&mut publisher);
        publisher
    });
    let (mut member, _) = Raw::hello(addr, json!({}));
    member.send_json(
        MessageType::JoinRoom,
        &json!({"room": "feed", "since": {"epoch": epoch, "seq": last}}),
    );
    let answer = member.expect(MessageType::JoinRoom).json();
    assert_eq!(answer["epoch"], epoch.as_str());
    let mut contents = Vec::new();
    while contents.len() < 500 {
        // The old connection's userLeft may come in between, as its reset
        // and this join race; a gap may not.
        let value = next_delivery(&mut member);
        assert_eq!(value["seq"].as_u64().unwrap(), 101 + contents.len() as u64);
        contents.push(value["content"].as_u64().unwrap());
    }
    assert_eq!(contents, (101..=600).collect::<Vec<_>>());
    more.join().unwrap();
}

#[test]
fn a_gap_notice_says_what_a_short_history_lost() {
    let server = start_server_with(with_history(10));
    let addr = server.local_addr();
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    publisher.join("news");
    publish_range(&mut publisher, "news", 1..=50);
    let epoch = publisher.join("news")["epoch"].clone();

    let (mut late, _) = Raw::hello(addr, json!({}));
    late.send_json(
        MessageType::JoinRoom,
        &json!({"room": "news", "since": {"epoch": epoch, "seq": 5}}),
    );
    assert_eq!(late.expect(MessageType::JoinRoom).json()["seq"], 50);
    let gap = late.expect(MessageType::Message).json();
    assert_eq!(
        gap,
        json!({"type": "gap", "room": "news", "epoch": epoch, "from": 6, "to": 40})
    );
    for seq in 41..=50 {
        assert_eq!(late.expect(MessageType::Message).json()["seq"], seq);
    }

    // The last 25 asked for (26 to 50): 26 to 40 are gone.
    let (mut other, _) = Raw::hello(addr, json!({}));
    other.send_json(
        MessageType::JoinRoom,
        &json!({"room": "news", "history": 25}),
    );
    other.expect(MessageType::JoinRoom);
    let gap = other.expect(MessageType::Message).json();
    assert_eq!(
        (gap["from"].as_u64(), gap["to"].as_u64()),
        (Some(26), Some(40))
    );
    assert_eq!(other.expect(MessageType::Message).json()["seq"], 41);

    // Without history at all, every recovery is a gap.
    let server = start_server();
    let (mut publisher, _) = Raw::hello(server.local_addr(), json!({}));
    publisher.join("news");
    publish_range(&mut publisher, "news", 1..=3);
    handled(&mut publisher);
    let (mut late, _) = Raw::hello(server.local_addr(), json!({}));
    late.send_json(
        MessageType::JoinRoom,
        &json!({"room": "news", "history": 10}),
    );
    late.expect(MessageType::JoinRoom);
    let gap = late.expect(MessageType::Message).json();
    assert_eq!(
        (gap["from"].as_u64(), gap["to"].as_u64()),
        (Some(1), Some(3))
    );
    // And a JOIN that asked for nothing gets no notice: the next frame is
    // the heartbeat's answer.
    let (mut plain, _) = Raw::hello(server.local_addr(), json!({}));
    plain.join("news");
    handled(&mut plain);
}

/// Starts the server binary with `args`; its address and the process.
fn relay_binary(args: &[&str]) -> (SocketAddr, std::process::Child) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = support::listening_on(&mut stdout);
    (addr, child)
}

#[test]
fn a_restarted_server_reports_the_old_epoch_as_gone() {
    let history = ["--history-messages", "100"];
    let (addr, mut first) = relay_binary(&history);
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    let old_epoch = publisher.join("news")["epoch"].as_str().unwrap().to_owned();
    publish_range(&mut publisher, "news", 1..=5);
    handled(&mut publisher);
    first.kill().unwrap();
    first.wait().unwrap();

    let (addr, mut second) = relay_binary(&history);
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    let new_epoch = publisher.join("news")["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new_epoch, old_epoch, "a new run is a new epoch");
    publish_range(&mut publisher, "news", 1..=2);
    handled(&mut publisher);
    let (mut member, _) = Raw::hello(addr, json!({}));
    member.send_json(
        MessageType::JoinRoom,
        &json!({"room": "news", "since": {"epoch": old_epoch, "seq": 3}}),
    );
    member.expect(MessageType::JoinRoom);
    let gap = member.expect(MessageType::Message).json();
    assert_eq!(
        gap,
        json!({"type": "gap", "room": "news", "epoch": new_epoch, "previousEpoch": old_epoch})
    );
    // Everything of the new epoch is kept, so it follows in full.
    for seq in 1..=2 {
        let delivery = member.expect(MessageType::Message).json();
        assert_eq!(
            (delivery["seq"].as_u64(), delivery["epoch"].as_str()),
            (Some(seq), Some(&*new_epoch))
        );
    }
    second.kill().unwrap();
    second.wait().unwrap();
}

#[test]
fn a_slow_consumer_cut_off_recovers_from_the_last_seq_it_saw() {
    let server = start_server_with(::server::Config {
        queue_items: 4,
        queue_bytes: 64 * 1024,
        stall_timeout: Duration::from_millis(50),
        history: ::server::HistoryLimits {
            messages: 100_000,
            bytes: 64 << 20,
            max_age: None,
        },
        ..Default::default()
    });
    let addr = server.local_addr();
    let (mut slow, _) = Raw::hello(addr, json!({}));
    let epoch = slow.join("firehose")["epoch"].as_str().unwrap().to_owned();
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    publisher.join("firehose");
    // The slow member reads nothing while 20,000 messages of 1 KiB go by.
    let pad = "p".repeat(1024);
    let mut bytes = Vec::new();
    for n in 1..=20_000u64 {
        bytes.extend(json_frame(
            MessageType::Message,
            &json!({"room": "firehose", "content": {"n": n, "pad": pad}}),
        ));
    }
    publisher.send_raw(&bytes);
    handled(&mut publisher);
    wait_until("the slow member is cut off", || {
        server.counters().slow_consumers() == 1
    });
    // It reads what it was sent, then the fatal SLOW_CONSUMER.
    let mut last = 0;
    loop {
        let frame = slow.recv();
        if frame.kind == MessageType::Error {
            assert_eq!(frame.expect_error().code.as_str(), "SLOW_CONSUMER");
            break;
        }
        let value = frame.json();
        if value.get("type").is_none() {
            let seq = value["seq"].as_u64().unwrap();
            assert_eq!(seq, last + 1, "nothing is skipped before the cut");
            last = seq;
        }
    }
    assert!(last < 20_000, "it was cut off before the end");

    let (mut back, _) = Raw::hello(addr, json!({}));
    back.send_json(
        MessageType::JoinRoom,
        &json!({"room": "firehose", "since": {"epoch": epoch, "seq": last}}),
    );
    back.expect(MessageType::JoinRoom);
    for seq in last + 1..=20_000 {
        let value = next_delivery(&mut back);
        assert_eq!(value["seq"].as_u64(), Some(seq));
        assert_eq!(value["content"]["n"].as_u64(), Some(seq));
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn full_history_in_many_rooms_stays_within_the_memory_budget() {
    const BUDGET_MIB: u64 = 32;
    const ROOMS: usize = 800;
    // Each room may keep 128 KiB: 800 rooms would keep 100 MiB, three
    // times the 32 MiB budget, and history may hold half of that.
    let (addr, mut child) = relay_binary(&[
        "--memory-budget",
        "32M",
        "--history-messages",
        "1000",
        "--history-bytes",
        "128K",
    ]);
    let baseline = rss_kib(child.id());
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    let mut joins = Vec::new();
    for room in 0..ROOMS {
        joins.extend(json_frame(
            MessageType::JoinRoom,
            &json!({"room": format!("r{room}")}),
        ));
    }
    publisher.send_raw(&joins);
    for _ in 0..ROOMS {
        publisher.expect(MessageType::JoinRoom);
    }
    let pad = "h".repeat(1000);
    for round in 0..160 {
        let mut bytes = Vec::new();
        for room in 0..ROOMS {
            bytes.extend(json_frame(
                MessageType::Message,
                &json!({"room": format!("r{room}"), "content": {"round": round, "pad": pad}}),
            ));
        }
        publisher.send_raw(&bytes);
        handled(&mut publisher);
    }
    let stats = publisher.stats();
    assert!(
        stats.memory_used <= BUDGET_MIB << 20,
        "{} bytes counted, over the budget",
        stats.memory_used
    );
    // History filled its half of the budget, and stayed there.
    assert!(stats.memory_used >= (BUDGET_MIB << 20) * 3 / 8, "{stats:?}");
    let grown_mib = rss_kib(child.id()).saturating_sub(baseline) / 1024;
    eprintln!(
        "history in {ROOMS} rooms: {} bytes counted against the budget, the server grew by {grown_mib} MiB",
        stats.memory_used
    );
    assert!(
        grown_mib <= BUDGET_MIB + 24,
        "the server grew by {grown_mib} MiB with a {BUDGET_MIB} MiB budget"
    );
    // A room still recovers what it kept, and says what it did not.
    let (mut member, _) = Raw::hello(addr, json!({}));
    member.send_json(
        MessageType::JoinRoom,
        &json!({"room": "r0", "history": 160}),
    );
    member.expect(MessageType::JoinRoom);
    let first = member.expect(MessageType::Message).json();
    if first["type"] == "gap" {
        assert_eq!(first["from"], 1);
        let kept_from = first["to"].as_u64().unwrap() + 1;
        assert_eq!(member.expect(MessageType::Message).json()["seq"], kept_from);
    } else {
        assert_eq!(first["seq"], 1);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn acks_carry_the_seq_and_the_members_queued_for() {
    let server = start_server();
    let addr = server.local_addr();
    let (mut publisher, _) = Raw::hello(addr, json!({"echo": true}));
    publisher.join("r");
    let (mut a, _) = Raw::hello(addr, json!({}));
    a.join("r");
    let (mut b, _) = Raw::hello(addr, json!({}));
    b.join("r");
    publish_range(&mut publisher, "r", 1..=2);
    publisher.send_json(
        MessageType::Message,
        &json!({"room": "r", "content": "x", "id": "m3", "ack": true}),
    );
    // Its own copy (echo) first, then the ack.
    let mut own = Vec::new();
    let ack = loop {
        let value = publisher.expect(MessageType::Message).json();
        match value["type"].as_str() {
            Some("ack") => break value,
            Some(_) => {}
            None => own.push(value["seq"].as_u64().unwrap()),
        }
    };
    assert_eq!(own, [1, 2, 3]);
    assert_eq!(ack["id"], "m3");
    assert_eq!(ack["seq"], 3);
    assert_eq!(ack["members"], 3, "two others and, with echo, itself");
    assert_eq!(next_delivery(&mut a)["seq"], 1);
    // Without an id there is nothing to match an ack to.
    publisher.send_json(
        MessageType::Message,
        &json!({"room": "r", "content": "x", "ack": true}),
    );
    // (Past any membership event still on its way from the joins.)
    let error = publisher
        .expect_skipping_messages(MessageType::Error)
        .expect_error();
    assert_eq!(
        (error.code.as_str(), error.room.as_deref()),
        ("INVALID_PAYLOAD", Some("r"))
    );
}

#[test]
fn who_lists_the_members_and_the_join_answer_does_too() {
    let server = start_server();
    let addr = server.local_addr();
    let (mut ann, ann_hello) = Raw::hello(addr, json!({"userId": "ann"}));
    let (mut bob, bob_hello) = Raw::hello(addr, json!({}));
    ann.join("lobby");
    let answer = bob.join("lobby");
    assert_eq!(answer["members"], 2);
    assert_eq!(
        answer["memberList"],
        json!([{"connectionId": ann_hello.connection_id, "user": "ann"},
               {"connectionId": bob_hello.connection_id}])
    );
    let (mut outsider, _) = Raw::hello(addr, json!({}));
    outsider.send_json(MessageType::Who, &json!({"room": "lobby", "id": 1}));
    let who = outsider.expect(MessageType::Who).json();
    assert_eq!(who["members"], 2);
    assert_eq!(who["memberList"], answer["memberList"]);
    assert_eq!(who["id"], 1);
    outsider.send_json(MessageType::Who, &json!({"room": "nobody-here"}));
    let who = outsider.expect(MessageType::Who).json();
    assert_eq!(
        (who["members"].as_u64(), who["memberList"].clone()),
        (Some(0), json!([]))
    );
}

#[test]
fn membership_events_can_be_turned_off() {
    let server = start_server();
    let addr = server.local_addr();
    let (mut quiet, _) = Raw::hello(addr, json!({"memberEvents": false}));
    quiet.join("r");
    let (mut loud, _) = Raw::hello(addr, json!({}));
    loud.join("r");
    let (mut joiner, _) = Raw::hello(addr, json!({}));
    joiner.join("r");
    joiner.publish("r", json!("hi"));
    joiner.leave("r");
    // The quiet member's first frame is the message, not a userJoined.
    assert_eq!(quiet.expect(MessageType::Message).json()["content"], "hi");
    handled(&mut quiet);
    assert_eq!(
        loud.expect(MessageType::Message).json()["type"],
        "userJoined"
    );
    assert_eq!(loud.expect(MessageType::Message).json()["content"], "hi");
    assert_eq!(loud.expect(MessageType::Message).json()["type"], "userLeft");
}

#[test]
fn direct_messages_reach_a_user_or_a_connection_or_are_not_found() {
    let server = start_server();
    let addr = server.local_addr();
    let (mut ann, ann_hello) = Raw::hello(addr, json!({"userId": "ann"}));
    let (mut bob1, bob1_hello) = Raw::hello(addr, json!({"userId": "bob"}));
    let (mut bob2, _) = Raw::hello(addr, json!({"userId": "bob"}));
    ann.send_json(
        MessageType::Message,
        &json!({"toUser": "bob", "content": {"hi": 1}}),
    );
    for bob in [&mut bob1, &mut bob2] {
        let got = bob.expect(MessageType::Message).json();
        assert_eq!(got["type"], "direct");
        assert_eq!(got["from"], ann_hello.connection_id.as_str());
        assert_eq!(got["user"], "ann");
        assert_eq!(got["content"], json!({"hi": 1}));
    }
    ann.send_json(
        MessageType::Message,
        &json!({"toConnection": bob1_hello.connection_id, "content": 2}),
    );
    assert_eq!(bob1.expect(MessageType::Message).json()["content"], 2);
    handled(&mut bob2);
    ann.send_json(
        MessageType::Message,
        &json!({"toUser": "carol", "content": 3, "id": 9}),
    );
    let error = ann.expect_error("NOT_FOUND");
    assert!(!error.fatal);
    assert_eq!(error.id, Some(protocol::RequestId::Number(9)));
    ann.send_json(
        MessageType::Message,
        &json!({"toConnection": "c999", "content": 3}),
    );
    ann.expect_error("NOT_FOUND");
    // Still connected, and a connection is not its own recipient.
    ann.send_json(
        MessageType::Message,
        &json!({"toConnection": ann_hello.connection_id, "content": 4}),
    );
    ann.expect_error("NOT_FOUND");
}

#[test]
fn direct_messages_and_who_are_permission_checked() {
    use ::server::auth::{AuthConfig, TokenTable};
    let tokens = "\
        ann-token-0123456789abcdef ann join=lobby publish=lobby direct=support.*\n\
        bob-token-0123456789abcdef support.bob\n\
        eve-token-0123456789abcdef eve join=lobby\n";
    let server = start_server_with(::server::Config {
        auth: AuthConfig {
            tokens: Some(TokenTable::parse(tokens, "test").unwrap()),
            jwt: None,
        },
        ..Default::default()
    });
    let addr = server.local_addr();
    let (mut ann, _) = Raw::hello(addr, json!({"token": "ann-token-0123456789abcdef"}));
    let (mut bob, _) = Raw::hello(addr, json!({"token": "bob-token-0123456789abcdef"}));
    let (mut eve, _) = Raw::hello(addr, json!({"token": "eve-token-0123456789abcdef"}));
    ann.send_json(
        MessageType::Message,
        &json!({"toUser": "support.bob", "content": 1}),
    );
    assert_eq!(bob.expect(MessageType::Message).json()["user"], "ann");
    ann.send_json(
        MessageType::Message,
        &json!({"toUser": "eve", "content": 2}),
    );
    ann.expect_error("FORBIDDEN");
    // A token without direct= sends none: eve's names no direct patterns.
    eve.send_json(
        MessageType::Message,
        &json!({"toUser": "ann", "content": 3}),
    );
    eve.expect_error("FORBIDDEN");
    // WHO needs the join permission.
    ann.send_json(MessageType::Who, &json!({"room": "secret"}));
    let error = ann.expect_error("FORBIDDEN");
    assert_eq!(error.room.as_deref(), Some("secret"));
    ann.send_json(MessageType::Who, &json!({"room": "lobby"}));
    ann.expect(MessageType::Who);
    handled(&mut eve);
}
