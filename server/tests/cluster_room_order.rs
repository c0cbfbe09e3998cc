//! The cluster's `room` order mode (`--cluster-order room`, SPEC.md
//! 14.2), against a real `redis-server` and real nodes: publishers on
//! three nodes at once, and every member on every node sees one order
//! with the same `seq`s and epoch; recovery with `since` on another node
//! is exact; with Redis down a MESSAGE gets an ERROR, and when Redis is
//! back the room goes on with exact gap notices; a lost subscription is
//! caught up from the room's stream.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use protocol::MessageType;
use serde_json::{Value, json};
use testkit::{Raw, start_server_with, wait_until};

mod cluster_support;

use cluster_support::{Inbox, Redis, metric, node_config, redis_available};

const TTL: Duration = Duration::from_secs(2);

/// A node in the `room` order mode, keeping `history` messages a room.
fn room_node(redis: &Redis, name: &str, history: usize) -> server::RunningServer {
    let mut config = node_config(&redis.url(), name, TTL);
    if let Some(cluster) = &mut config.cluster {
        cluster.order = server::ClusterOrder::Room;
    }
    config.history = server::HistoryLimits {
        messages: history,
        bytes: 1 << 20,
        max_age: None,
    };
    let node = start_server_with(config);
    let http = node.http_addr().unwrap();
    wait_until("the node's links to Redis", || {
        metric(http, "relay_cluster_outlink_up") == 1.0
            && metric(http, "relay_cluster_inlink_up") == 1.0
    });
    node
}

/// A delivery's content, if `frame` is one (no `type`).
fn delivery(frame: &Value) -> Option<&Value> {
    frame.get("type").is_none().then(|| frame.get("content"))?
}

fn is_gap(frame: &Value) -> bool {
    frame["type"] == "gap"
}

/// The deliveries among `frames` as (seq, epoch, content).
fn deliveries(frames: &[Value]) -> Vec<(u64, String, Value)> {
    frames
        .iter()
        .filter_map(|f| {
            let content = delivery(f)?;
            Some((
                f["seq"].as_u64().unwrap(),
                f["epoch"].as_str().unwrap().to_owned(),
                content.clone(),
            ))
        })
        .collect()
}

fn count_of(inbox: &Inbox, key: &str) -> usize {
    inbox
        .frames()
        .iter()
        .filter(|f| delivery(f).is_some_and(|c| c.get(key).is_some()))
        .count()
}

/// One command to the Redis on `port`, RESP written by hand; the first
/// line of the answer.
fn redis_command(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        answer.push(byte[0]);
    }
    String::from_utf8_lossy(&answer).trim().to_owned()
}

#[test]
fn publishers_on_three_nodes_at_once_give_every_member_one_order() {
    if !redis_available() {
        return;
    }
    const EACH: u64 = 200;
    let redis = Redis::start();
    let nodes: Vec<_> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|name| room_node(&redis, name, 0))
        .collect();
    let mut inboxes = Vec::new();
    let mut publishers = Vec::new();
    for node in &nodes {
        let (mut member, _) = Raw::hello(node.local_addr(), json!({ "memberEvents": false }));
        let joined = member.join("one");
        assert_eq!(joined["seq"], 0, "{joined}");
        inboxes.push(Inbox::follow(member));
        let (mut publisher, _) = Raw::hello(node.local_addr(), json!({ "memberEvents": false }));
        publisher.join("one");
        publishers.push(publisher);
    }
    // Three publishers at once, one on each node; the first asks for acks.
    let threads: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(i, mut publisher)| {
            std::thread::spawn(move || {
                let mut acks = HashMap::new();
                for n in 0..EACH {
                    if i == 0 {
                        publisher.send_json(
                            MessageType::Message,
                            &json!({ "room": "one", "content": { "p": i, "n": n }, "id": n, "ack": true }),
                        );
                    } else {
                        publisher.publish("one", json!({ "p": i, "n": n }));
                    }
                }
                if i == 0 {
                    while acks.len() < EACH as usize {
                        // The other publishers' messages come too.
                        let ack = publisher.expect(MessageType::Message).json();
                        if delivery(&ack).is_some() {
                            continue;
                        }
                        assert_eq!(ack["type"], "ack", "{ack}");
                        acks.insert(
                            ack["id"].as_u64().unwrap(),
                            (ack["seq"].as_u64().unwrap(), ack["epoch"].as_str().unwrap().to_owned()),
                        );
                    }
                }
                (publisher, acks)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for inbox in &inboxes {
        wait_until("every message at every node", || {
            count_of(inbox, "n") as u64 >= 3 * EACH
        });
    }
    let first = deliveries(&inboxes[0].frames());
    assert_eq!(first.len() as u64, 3 * EACH);
    for (at, inbox) in inboxes.iter().enumerate() {
        let frames = inbox.frames();
        assert!(
            !frames.iter().any(is_gap),
            "node {at}: a gap with nothing lost"
        );
        let seen = deliveries(&frames);
        assert_eq!(seen, first, "node {at} saw another order than node 0");
    }
    // One epoch, seqs 1, 2, 3, … with no hole, each publisher in order.
    let epoch = &first[0].1;
    let mut per_publisher: HashMap<u64, Vec<u64>> = HashMap::new();
    for (i, (seq, e, content)) in first.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(e, epoch);
        per_publisher
            .entry(content["p"].as_u64().unwrap())
            .or_default()
            .push(content["n"].as_u64().unwrap());
    }
    for p in 0..3 {
        assert_eq!(
            per_publisher[&p],
            (0..EACH).collect::<Vec<_>>(),
            "publisher {p}"
        );
    }
    // Acks give the cluster-wide seq each message got.
    let acks = &results[0].1;
    for (seq, e, content) in &first {
        if content["p"] == 0 {
            let n = content["n"].as_u64().unwrap();
            assert_eq!(acks[&n], (*seq, e.clone()), "ack of message {n}");
        }
    }
}

#[test]
fn recovery_with_since_on_another_node_is_exact() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = room_node(&redis, "a", 100);
    let b = room_node(&redis, "b", 100);
    let c = room_node(&redis, "c", 100);
    let (mut publisher, _) = Raw::hello(a.local_addr(), json!({ "memberEvents": false }));
    publisher.join("rec");
    let (mut watcher, _) = Raw::hello(b.local_addr(), json!({ "memberEvents": false }));
    watcher.join("rec");
    let watcher = Inbox::follow(watcher);
    for n in 1..=20 {
        publisher.publish("rec", json!({ "n": n }));
    }
    wait_until("20 messages on b", || count_of(&watcher, "n") >= 20);
    let seen = deliveries(&watcher.frames());
    let (seq10, epoch, _) = seen[9].clone();
    // A client that had up to the 10th comes back on b (the room is
    // here) and on c (new there: read from Redis's stream).
    for node in [&b, &c] {
        let (mut back, _) = Raw::hello(node.local_addr(), json!({ "memberEvents": false }));
        back.send_json(
            MessageType::JoinRoom,
            &json!({ "room": "rec", "since": { "epoch": epoch, "seq": seq10 } }),
        );
        let answer = back.expect(MessageType::JoinRoom).json();
        assert_eq!(answer["epoch"], epoch.as_str(), "{answer}");
        let at = answer["seq"].as_u64().unwrap();
        assert!(at >= seq10 + 10, "{answer}");
        let replayed: Vec<(u64, Value)> = (seq10 + 1..=at)
            .map(|_| {
                let frame = back.expect(MessageType::Message).json();
                assert!(!is_gap(&frame), "{frame}");
                (frame["seq"].as_u64().unwrap(), frame["content"].clone())
            })
            .collect();
        let seqs: Vec<u64> = replayed.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (seq10 + 1..=at).collect::<Vec<_>>());
        let first_ten: Vec<Value> = replayed[..10].iter().map(|(_, c)| c["n"].clone()).collect();
        assert_eq!(first_ten, (11..=20).map(|n| json!(n)).collect::<Vec<_>>());
        // Then the live messages, none twice, none missed.
        let port = node.local_addr().port();
        publisher.publish("rec", json!({ "live": port }));
        let live = back.expect(MessageType::Message).json();
        assert_eq!(live["content"]["live"], port, "{live}");
        assert_eq!(live["seq"].as_u64(), Some(at + 1), "{live}");
    }
    // Asking for more than is kept gives the exact gap, then the rest.
    let (mut old, _) = Raw::hello(c.local_addr(), json!({ "memberEvents": false }));
    old.send_json(
        MessageType::JoinRoom,
        &json!({ "room": "rec", "since": { "epoch": "0000000000000000", "seq": 3 } }),
    );
    old.expect(MessageType::JoinRoom);
    let gap = old.expect(MessageType::Message).json();
    assert!(is_gap(&gap), "{gap}");
    assert_eq!(gap["previousEpoch"], "0000000000000000", "{gap}");
    let first = old.expect(MessageType::Message).json();
    assert_eq!(first["seq"], 1, "{first}");
}

#[test]
fn with_redis_down_a_message_gets_an_error_and_the_room_goes_on_after() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let a = room_node(&redis, "a", 0);
    let b = room_node(&redis, "b", 0);
    let a_http = a.http_addr().unwrap();
    let (mut member, _) = Raw::hello(b.local_addr(), json!({ "memberEvents": false }));
    member.join("down");
    let member = Inbox::follow(member);
    let (mut publisher, _) = Raw::hello(a.local_addr(), json!({ "memberEvents": false }));
    publisher.join("down");
    publisher.publish("down", json!({ "n": 1 }));
    member.wait_for("the first message", |f| {
        delivery(f).is_some_and(|c| c["n"] == 1)
    });
    let epoch = deliveries(&member.frames())[0].1.clone();

    redis.kill();
    wait_until("a to see its link down", || {
        metric(a_http, "relay_cluster_outlink_up") == 0.0
    });
    publisher.send_json(
        MessageType::Message,
        &json!({ "room": "down", "content": { "n": 2 }, "id": "m2", "ack": true }),
    );
    let error = publisher.expect_error("RATE_LIMITED");
    assert!(!error.fatal, "{error:?}");
    assert_eq!(error.room.as_deref(), Some("down"));
    assert!(error.message.contains("Redis"), "{error:?}");

    // Back, empty: the room starts a new epoch, and the member is told.
    redis.restart();
    wait_until("a's link back", || {
        metric(a_http, "relay_cluster_outlink_up") == 1.0
            && metric(b.http_addr().unwrap(), "relay_cluster_inlink_up") == 1.0
    });
    publisher.send_json(
        MessageType::Message,
        &json!({ "room": "down", "content": { "n": 3 }, "id": "m3", "ack": true }),
    );
    // The publisher is a member too: told of the new epoch first.
    let told = publisher.expect(MessageType::Message).json();
    assert!(is_gap(&told), "{told}");
    let ack = publisher.expect(MessageType::Message).json();
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );
    member.wait_for("the message after", |f| {
        delivery(f).is_some_and(|c| c["n"] == 3)
    });
    let frames = member.frames();
    let gap = frames.iter().find(|f| is_gap(f)).expect("a gap notice");
    assert_eq!(gap["previousEpoch"], epoch.as_str(), "{gap}");
    assert_eq!(gap["epoch"], ack["epoch"], "{gap}");
    let ns: Vec<Value> = deliveries(&frames)
        .into_iter()
        .map(|(_, _, c)| c["n"].clone())
        .collect();
    assert_eq!(ns, [json!(1), json!(3)], "n 2 was refused, never delivered");
}

/// Publishes 400 messages from a node `a`, cutting every subscriber
/// connection after the first 100, and returns what a member on node `b`
/// got.
fn across_a_lost_subscription(history: usize) -> Vec<Value> {
    let redis = Redis::start();
    let a = room_node(&redis, "a", history);
    let b = room_node(&redis, "b", history);
    let b_http = b.http_addr().unwrap();
    let (mut member, _) = Raw::hello(b.local_addr(), json!({ "memberEvents": false }));
    member.join("cut");
    let member = Inbox::follow(member);
    let (mut publisher, _) = Raw::hello(a.local_addr(), json!({ "memberEvents": false }));
    publisher.join("cut");
    for n in 1..=100u64 {
        publisher.publish("cut", json!({ "n": n }));
    }
    wait_until("the first 100 on b", || count_of(&member, "n") >= 100);
    let reconnects = || metric(b_http, "relay_cluster_reconnects_total");
    let before = reconnects();
    // Every subscriber connection cut, as Redis does to one that falls
    // behind (client-output-buffer-limit pubsub); a node waits 100 ms
    // before it subscribes again, and these go by meanwhile.
    let killed = redis_command(redis.port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.starts_with(':'), "{killed}");
    for n in 101..=400u64 {
        publisher.publish("cut", json!({ "n": n }));
    }
    wait_until("b subscribed again", || reconnects() > before);
    publisher.publish("cut", json!({ "last": true }));
    wait_until("the last message on b", || count_of(&member, "last") == 1);
    member.frames()
}

#[test]
fn a_lost_subscription_is_caught_up_from_the_stream_with_nothing_missed() {
    if !redis_available() {
        return;
    }
    let frames = across_a_lost_subscription(1000);
    let gaps: Vec<&Value> = frames.iter().filter(|f| is_gap(f)).collect();
    assert!(
        gaps.is_empty(),
        "the stream holds what was missed: {gaps:?}"
    );
    let seen = deliveries(&frames);
    let ns: Vec<u64> = seen
        .iter()
        .filter_map(|(_, _, c)| c["n"].as_u64())
        .collect();
    assert_eq!(ns, (1..=400).collect::<Vec<_>>());
    for pair in seen.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1);
    }
}

#[test]
fn without_a_stream_a_lost_subscription_gives_exact_gap_notices() {
    if !redis_available() {
        return;
    }
    let frames = across_a_lost_subscription(0);
    // Every seq once: delivered, or inside exactly one gap notice; and a
    // message's seq is its number plus one fixed offset, so a gap covers
    // exactly the messages that are not there.
    let mut next = None::<u64>;
    let mut offset = None::<u64>;
    let mut delivered = 0;
    for frame in &frames {
        if is_gap(frame) {
            let (from, to) = (
                frame["from"].as_u64().unwrap(),
                frame["to"].as_u64().unwrap(),
            );
            assert_eq!(Some(from), next, "{frame}");
            next = Some(to + 1);
        } else if let Some(content) = delivery(frame) {
            let seq = frame["seq"].as_u64().unwrap();
            if let Some(next) = next {
                assert_eq!(seq, next, "{frame}");
            }
            next = Some(seq + 1);
            if let Some(n) = content["n"].as_u64() {
                let at = seq - n;
                assert_eq!(*offset.get_or_insert(at), at, "{frame}");
                delivered += 1;
            }
        }
    }
    assert!(
        delivered < 400,
        "the cut lost nothing; the test shows nothing"
    );
}

#[test]
fn a_node_of_the_other_order_mode_is_refused_at_start() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let _room = room_node(&redis, "r", 0);
    let config = node_config(&redis.url(), "p", TTL);
    let refused = server::Server::bind(config).expect_err("refused");
    assert!(refused.to_string().contains("--cluster-order"), "{refused}");
}
