//! Rooms across nodes (SPEC.md 14), against a real `redis-server` and
//! real nodes: a room spans three nodes and every message arrives once,
//! in each publisher's order; presence counts every node; Redis killed and
//! restarted during traffic shows as exact gap notices; a node killed
//! with SIGKILL leaves presence within its TTL.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::BufReader;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::MessageType;
use serde_json::{Value, json};
use testkit::{Raw, start_server_with, wait_until};

mod cluster_support;
mod support;

use cluster_support::{Inbox, Redis, metric, node_config, redis_available};

const TTL: Duration = Duration::from_secs(2);

fn who(client: &mut Raw, room: &str) -> Value {
    client.send_json(MessageType::Who, &json!({ "room": room }));
    client.expect_skipping_messages(MessageType::Who).json()
}

/// A delivery's content, if `frame` is one (no `type`).
fn delivery(frame: &Value) -> Option<&Value> {
    frame.get("type").is_none().then(|| frame.get("content"))?
}

fn is_gap(frame: &Value) -> bool {
    frame["type"] == "gap"
}

/// Publishes probes from `publisher` until every inbox has one of them:
/// from then on the subscriptions are in place and nothing is missed.
fn until_relayed(publisher: &mut Raw, room: &str, tag: &str, inboxes: &[&Inbox]) {
    let deadline = Instant::now() + testkit::WAIT;
    loop {
        publisher.publish(room, json!({ "probe": tag }));
        let all = inboxes.iter().all(|inbox| {
            inbox
                .frames()
                .iter()
                .any(|f| delivery(f).is_some_and(|c| c["probe"] == tag))
        });
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "probes from {tag} never reached every node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks a member's view of a room: `seq`s count up by one, gap notices
/// included, and returns the deliveries' contents (probes left out).
fn contents_in_seq_order(frames: &[Value]) -> Vec<(Value, u64)> {
    let mut next: Option<u64> = None;
    let mut out = Vec::new();
    for frame in frames {
        if is_gap(frame) {
            let (from, to) = (
                frame["from"].as_u64().unwrap(),
                frame["to"].as_u64().unwrap(),
            );
            if let Some(next) = next {
                assert_eq!(from, next, "gap {frame} does not follow seq {}", next - 1);
            }
            next = Some(to + 1);
        } else if let Some(content) = delivery(frame) {
            let seq = frame["seq"].as_u64().unwrap();
            if let Some(next) = next {
                assert_eq!(seq, next, "a delivery out of seq order: {frame}");
            }
            next = Some(seq + 1);
            if content.get("probe").is_none() {
                out.push((content.clone(), seq));
            }
        }
    }
    out
}

#[test]
fn a_room_spans_three_nodes_and_every_message_arrives_once_in_publisher_order() {
    if !redis_available() {
        return;
    }
    const EACH: u64 = 300;
    let redis = Redis::start();
    let nodes: Vec<_> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|name| start_server_with(node_config(&redis.url(), name, TTL)))
        .collect();
    let mut inboxes = Vec::new();
    let mut publishers = Vec::new();
    for node in &nodes {
        let (mut member, _) = Raw::hello(node.local_addr(), json!({}));
        member.join("span");
        inboxes.push(Inbox::follow(member));
        let (mut publisher, _) = Raw::hello(node.local_addr(), json!({ "memberEvents": false }));
        publisher.join("span");
        publishers.push(publisher);
    }
    let all: Vec<&Inbox> = inboxes.iter().collect();
    for (i, publisher) in publishers.iter_mut().enumerate() {
        until_relayed(publisher, "span", &format!("p{i}"), &all);
    }
    // Three publishers at once, one on each node.
    let threads: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(i, mut publisher)| {
            std::thread::spawn(move || {
                for n in 0..EACH {
                    publisher.publish("span", json!({ "p": i, "n": n }));
                }
                publisher
            })
        })
        .collect();
    let _publishers: Vec<Raw> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (at, inbox) in inboxes.iter().enumerate() {
        wait_until("every message at every node", || {
            let got = inbox
                .frames()
                .iter()
                .filter(|f| delivery(f).is_some_and(|c| c.get("n").is_some()))
                .count();
            got as u64 >= 3 * EACH
        });
        let frames = inbox.frames();
        assert!(
            !frames.iter().any(is_gap),
            "node {at}: a gap with nothing lost"
        );
        let mut per_publisher: HashMap<u64, Vec<u64>> = HashMap::new();
        for (content, _) in contents_in_seq_order(&frames) {
            per_publisher
                .entry(content["p"].as_u64().unwrap())
                .or_default()
                .push(content["n"].as_u64().unwrap());
        }
        for p in 0..3 {
            let expected: Vec<u64> = (0..EACH).collect();
            assert_eq!(
                per_publisher.get(&p),
                Some(&expected),
                "node {at}: publisher {p}'s messages once each, in its order"
            );
        }
    }
}

#[test]
fn presence_counts_every_node_and_connection_ids_are_unique_across_them() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = start_server_with(node_config(&redis.url(), "a", TTL));
    let b = start_server_with(node_config(&redis.url(), "b", TTL));
    let mut clients = Vec::new();
    let mut ids = BTreeSet::new();
    for (addr, user) in [
        (a.local_addr(), "ann"),
        (a.local_addr(), "al"),
        (b.local_addr(), "bob"),
    ] {
        let (mut client, hello) =
            Raw::hello(addr, json!({ "userId": user, "memberEvents": false }));
        assert!(
            ids.insert(hello.connection_id.clone()),
            "{} twice",
            hello.connection_id
        );
        client.join("lobby");
        clients.push(client);
    }
    let (mut asker, _) = Raw::hello(b.local_addr(), json!({}));
    // A presence read slower than its bound (SPEC.md 14.1) answers with b's
    // members alone, so a loaded machine may need a second WHO.
    wait_until("WHO on b to count and list a's members", || {
        let answer = who(&mut asker, "lobby");
        let listed: BTreeSet<String> = answer["memberList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["connectionId"].as_str().unwrap().to_owned())
            .collect();
        answer["members"] == 3 && listed == ids
    });
    let joined = asker.join("lobby");
    assert_eq!(joined["members"], 4, "{joined}");
    // One leaves on a: b sees it.
    clients[0].leave("lobby");
    wait_until("WHO on b to see a's member leave", || {
        who(&mut asker, "lobby")["members"] == 3
    });
    // Membership events cross the nodes too, the last member on a's
    // leave included.
    let (mut watcher, _) = Raw::hello(b.local_addr(), json!({}));
    watcher.join("events");
    let watcher = Inbox::follow(watcher);
    let (mut newcomer, hello) = Raw::hello(a.local_addr(), json!({ "userId": "nia" }));
    newcomer.join("events");
    let id = hello.connection_id;
    watcher.wait_for("userJoined from a", |f| {
        f["type"] == "userJoined" && f["connectionId"] == id.as_str() && f["user"] == "nia"
    });
    newcomer.leave("events");
    watcher.wait_for("userLeft from a", |f| {
        f["type"] == "userLeft" && f["connectionId"] == id.as_str()
    });
}

#[test]
fn redis_killed_and_restarted_during_traffic_gives_exact_gap_notices() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let a = start_server_with(node_config(&redis.url(), "a", TTL));
    let b = start_server_with(node_config(&redis.url(), "b", TTL));
    let (a_http, b_http) = (a.http_addr().unwrap(), b.http_addr().unwrap());
    let (mut local, _) = Raw::hello(a.local_addr(), json!({ "memberEvents": false }));
    local.join("r");
    let local = Inbox::follow(local);
    let (mut remote, _) = Raw::hello(b.local_addr(), json!({ "memberEvents": false }));
    remote.join("r");
    let remote = Inbox::follow(remote);
    let (mut publisher, _) = Raw::hello(a.local_addr(), json!({ "memberEvents": false }));
    publisher.join("r");
    until_relayed(&mut publisher, "r", "ready", &[&remote]);

    // A steady publisher on a, numbering its messages from 1.
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let thread = {
        let (stop, last) = (Arc::clone(&stop), Arc::clone(&last));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                n += 1;
                publisher.publish("r", json!({ "n": n }));
                last.store(n, Ordering::Release);
                std::thread::sleep(Duration::from_millis(2));
            }
            publisher
        })
    };
    let received = |inbox: &Inbox| {
        inbox
            .frames()
            .iter()
            .filter(|f| delivery(f).is_some_and(|c| c.get("n").is_some()))
            .count()
    };
    wait_until("traffic across the nodes", || received(&remote) >= 30);
    redis.kill();
    wait_until("a to drop batches for its lost link", || {
        metric(a_http, "relay_cluster_dropped_total{reason=\"link_down\"}") >= 20.0
    });
    assert_eq!(metric(a_http, "relay_cluster_outlink_up"), 0.0);
    redis.restart();
    wait_until("both links back", || {
        metric(a_http, "relay_cluster_outlink_up") == 1.0
            && metric(b_http, "relay_cluster_inlink_up") == 1.0
    });
    wait_until("a gap notice on b", || remote.frames().iter().any(is_gap));
    let before = received(&remote);
    wait_until("traffic across the nodes again", || {
        received(&remote) >= before + 30
    });
    stop.store(true, Ordering::Release);
    let _publisher = thread.join().unwrap();
    let sent = last.load(Ordering::Acquire);
    let has_last = |inbox: &Inbox| {
        inbox
            .frames()
            .iter()
            .any(|f| delivery(f).is_some_and(|c| c["n"] == sent))
    };
    wait_until("the last message on both nodes", || {
        has_last(&local) && has_last(&remote)
    });

    // The local member lost nothing.
    let frames = local.frames();
    assert!(!frames.iter().any(is_gap));
    let ns: Vec<u64> = contents_in_seq_order(&frames)
        .iter()
        .map(|(c, _)| c["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (1..=sent).collect::<Vec<_>>());

    // The remote member: each gap is exactly the messages missing before
    // the delivery that follows it.
    let frames = remote.frames();
    contents_in_seq_order(&frames);
    let mut expected_n = None::<u64>;
    let mut pending_gap = 0;
    let mut gaps = 0;
    for frame in &frames {
        if is_gap(frame) {
            pending_gap += frame["to"].as_u64().unwrap() - frame["from"].as_u64().unwrap() + 1;
            gaps += 1;
        } else if let Some(n) = delivery(frame).and_then(|c| c["n"].as_u64()) {
            if let Some(expected) = expected_n {
                assert_eq!(
                    n - expected,
                    pending_gap,
                    "message {n} after {} (expected {expected}): the gap notices before it covered {pending_gap}",
                    expected - 1
                );
            }
            pending_gap = 0;
            expected_n = Some(n + 1);
        }
    }
    assert!(gaps >= 1);
    assert_eq!(expected_n, Some(sent + 1));
    assert!(metric(b_http, "relay_cluster_gap_messages_total") >= 20.0);
    assert!(metric(a_http, "relay_cluster_reconnects_total") >= 1.0);
}

#[test]
fn a_node_killed_leaves_presence_within_its_ttl() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--cluster", &redis.url()])
        .args(["--node-id", "doomed", "--cluster-presence-ttl", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let doomed = support::listening_on(&mut BufReader::new(child.stdout.take().unwrap()));
    let survivor = start_server_with(node_config(&redis.url(), "survivor", TTL));
    let mut theirs = Vec::new();
    for _ in 0..2 {
        let (mut client, _) = Raw::hello(doomed, json!({}));
        client.join("k");
        theirs.push(client);
    }
    let (mut ours, _) = Raw::hello(survivor.local_addr(), json!({}));
    ours.join("k");
    wait_until("the doomed node's members in presence", || {
        who(&mut ours, "k")["members"] == 3
    });
    support::signal(&child, libc::SIGKILL);
    let killed = Instant::now();
    child.wait().unwrap();
    wait_until("the dead node's members to leave presence", || {
        who(&mut ours, "k")["members"] == 1
    });
    let took = killed.elapsed();
    // The TTL is 1 s; the bound is generous for a loaded machine, and
    // still far below what a share that never expired would take.
    assert!(
        took < Duration::from_secs(10),
        "presence took {took:?} to expire"
    );
    drop(theirs);
}

#[test]
fn a_batch_that_does_not_parse_is_dropped_and_counted_and_the_room_goes_on() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = start_server_with(node_config(&redis.url(), "a", TTL));
    let b = start_server_with(node_config(&redis.url(), "b", TTL));
    // A JOIN waits for its room's subscription (at most a second); on a
    // loaded machine a node's first connection to Redis can take longer.
    wait_until("b's subscribing link", || {
        metric(b.http_addr().unwrap(), "relay_cluster_inlink_up") == 1.0
    });
    let (mut member, _) = Raw::hello(b.local_addr(), json!({ "memberEvents": false }));
    member.join("g");
    let member = Inbox::follow(member);
    // Garbage published straight into the room's channel, as anyone who
    // can reach Redis could: a wrong version, a cut header, offsets
    // past the end.
    for payload in [
        &b"\x09junk"[..],
        &b"\x01\x05ab"[..],
        &[
            1u8, 1, b'x', 1, b'e', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0xff, 0,
            0, 0, 0xff, 0, 0, 0, 0,
        ][..],
    ] {
        cluster_support::publish_raw(redis.port, "relay:room:g", payload);
    }
    wait_until("b to count the malformed batches", || {
        metric(
            b.http_addr().unwrap(),
            "relay_cluster_dropped_total{reason=\"malformed\"}",
        ) >= 3.0
    });
    // The room still works across the nodes.
    let (mut publisher, _) = Raw::hello(a.local_addr(), json!({ "memberEvents": false }));
    publisher.join("g");
    until_relayed(&mut publisher, "g", "after", &[&member]);
    assert!(!member.frames().iter().any(is_gap), "garbage is no gap");
}
