//! A node that goes, and direct messages, across the nodes of a cluster
//! (SPEC.md 14.1, 14.3), against a real `redis-server` and real nodes: a
//! node killed with SIGKILL has its members leave on every other node,
//! once each, within its TTL; one that stops cleanly, at once; one that
//! was declared gone while alive announces its members again; direct
//! messages by user and by connection id reach other nodes, checked
//! against the recipient's user, and a recipient on no node is NOT_FOUND;
//! what does not parse from Redis is dropped and counted.

#![allow(clippy::unwrap_used)]

use std::io::BufReader;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protocol::MessageType;
use serde_json::{Value, json};
use testkit::{Raw, start_server_with, wait_until};

mod cluster_support;
mod support;

use cluster_support::{Inbox, Redis, command, metric, node_config, redis_available};

fn who(client: &mut Raw, room: &str) -> Value {
    client.send_json(MessageType::Who, &json!({ "room": room }));
    client.expect_skipping_messages(MessageType::Who).json()
}

/// How many `kind` events about `id` in `room` an inbox holds.
fn events(inbox: &Inbox, kind: &str, room: &str, id: &str) -> usize {
    inbox
        .frames()
        .iter()
        .filter(|f| f["type"] == kind && f["room"] == room && f["connectionId"] == id)
        .count()
}

fn member_events(inbox: &Inbox) -> usize {
    inbox
        .frames()
        .iter()
        .filter(|f| f["type"] == "userJoined" || f["type"] == "userLeft")
        .count()
}

/// Publishes a probe from `from` in `room` and waits until every inbox
/// has it: whatever the nodes sent before it has arrived.
fn probe(from: &mut Raw, room: &str, tag: &str, inboxes: &[&Inbox]) {
    from.publish(room, json!({ "probe": tag }));
    for inbox in inboxes {
        inbox.wait_for("the probe", |f| f["content"]["probe"] == tag);
    }
}

#[test]
fn a_killed_nodes_members_leave_on_every_other_node_once_within_its_ttl() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    // Long enough that a survivor slowed by a loaded machine is not
    // declared gone itself; they scan every third of it.
    let ttl = Duration::from_secs(5);
    let b = start_server_with(node_config(&redis.url(), "b", ttl));
    let c = start_server_with(node_config(&redis.url(), "c", ttl));
    // Watchers on the survivors first, so they hear the doomed node's
    // members join.
    let (mut on_b, _) = Raw::hello(b.local_addr(), json!({}));
    on_b.join("k");
    let (mut quiet, _) = Raw::hello(b.local_addr(), json!({ "memberEvents": false }));
    quiet.join("k");
    let (mut on_c, _) = Raw::hello(c.local_addr(), json!({}));
    on_c.join("k");
    on_c.join("k2");
    let on_b = Inbox::follow(on_b);
    let quiet = Inbox::follow(quiet);
    let mut prober = Raw::hello(c.local_addr(), json!({})).0;
    prober.join("k");

    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--cluster", &redis.url()])
        .args(["--node-id", "doomed", "--cluster-presence-ttl", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let doomed = support::listening_on(&mut BufReader::new(child.stdout.take().unwrap()));
    let mut theirs = Vec::new();
    let mut ids = Vec::new();
    for user in [json!("dora"), Value::Null] {
        let (mut client, hello) = Raw::hello(doomed, json!({ "userId": user }));
        client.join("k");
        ids.push(hello.connection_id);
        theirs.push(client);
    }
    theirs[0].join("k2");
    let on_c = Inbox::follow(on_c);
    for id in &ids {
        on_b.wait_for("the doomed node's joins on b", |f| {
            f["type"] == "userJoined" && f["connectionId"] == id.as_str()
        });
        on_c.wait_for("the doomed node's joins on c", |f| {
            f["type"] == "userJoined" && f["room"] == "k" && f["connectionId"] == id.as_str()
        });
    }
    on_c.wait_for("dora's join of k2 on c", |f| {
        f["type"] == "userJoined" && f["room"] == "k2" && f["connectionId"] == ids[0].as_str()
    });

    support::signal(&child, libc::SIGKILL);
    let killed = Instant::now();
    child.wait().unwrap();
    for id in &ids {
        for inbox in [&on_b, &on_c] {
            inbox.wait_for("userLeft for the dead node's member", |f| {
                f["type"] == "userLeft" && f["room"] == "k" && f["connectionId"] == id.as_str()
            });
        }
    }
    on_c.wait_for("dora's leave of k2 on c", |f| {
        f["type"] == "userLeft" && f["room"] == "k2" && f["connectionId"] == ids[0].as_str()
    });
    let took = killed.elapsed();
    // The TTL is 1 s and the survivors scan every third of theirs; the
    // bound is generous for a loaded machine, and still far below what a
    // member that never left would take.
    assert!(took < Duration::from_secs(10), "the leaves took {took:?}");
    let left = on_b
        .frames()
        .into_iter()
        .find(|f| f["type"] == "userLeft" && f["connectionId"] == ids[0].as_str())
        .unwrap();
    assert_eq!(left["user"], "dora", "{left}");
    assert!(left["timestamp"].as_u64().unwrap() > 0, "{left}");

    // Once each, on each node: nothing more after a probe, and after the
    // survivors' next scans.
    wait_until("the survivors to have scanned again", || {
        metric(b.http_addr().unwrap(), "relay_cluster_nodes_gone_total")
            + metric(c.http_addr().unwrap(), "relay_cluster_nodes_gone_total")
            >= 1.0
            && command(redis.port, &["LLEN", "relay:mourning"]) == ":0"
    });
    probe(&mut prober, "k", "after", &[&on_b, &on_c]);
    for id in &ids {
        assert_eq!(events(&on_b, "userLeft", "k", id), 1, "{:?}", on_b.frames());
        assert_eq!(events(&on_c, "userLeft", "k", id), 1, "{:?}", on_c.frames());
    }
    assert_eq!(events(&on_c, "userLeft", "k2", &ids[0]), 1);
    assert_eq!(member_events(&quiet), 0, "{:?}", quiet.frames());
    let mut asker = Raw::hello(b.local_addr(), json!({})).0;
    // Two watchers on b, one and the prober on c; never the dead node's two.
    // A presence read slower than its bound (SPEC.md 14.1) answers with
    // b's members alone, so a loaded machine may need a second WHO.
    wait_until("WHO on b to count both survivors' members only", || {
        who(&mut asker, "k")["members"] == 4
    });
    drop(theirs);
}

#[test]
fn a_node_that_stops_cleanly_has_its_members_leave_everywhere_at_once() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    // A TTL far above the test's waits: only the stop itself can make its
    // members leave in time.
    let ttl = Duration::from_secs(60);
    let a = start_server_with(node_config(&redis.url(), "a", ttl));
    let b = start_server_with(node_config(&redis.url(), "b", ttl));
    let (mut watcher, _) = Raw::hello(b.local_addr(), json!({}));
    watcher.join("k");
    let watcher = Inbox::follow(watcher);
    let mut prober = Raw::hello(b.local_addr(), json!({})).0;
    prober.join("k");
    let mut theirs = Vec::new();
    let mut ids = Vec::new();
    for user in ["ann", "al", "abe"] {
        let (mut client, hello) = Raw::hello(a.local_addr(), json!({ "userId": user }));
        client.join("k");
        ids.push(hello.connection_id);
        theirs.push(client);
    }
    for id in &ids {
        watcher.wait_for("a's joins on b", |f| {
            f["type"] == "userJoined" && f["connectionId"] == id.as_str()
        });
    }
    let stopped = Instant::now();
    a.shutdown();
    for id in &ids {
        watcher.wait_for("userLeft for the stopped node's member", |f| {
            f["type"] == "userLeft" && f["connectionId"] == id.as_str()
        });
    }
    assert!(stopped.elapsed() < ttl);
    probe(&mut prober, "k", "after", &[&watcher]);
    for id in &ids {
        assert_eq!(
            events(&watcher, "userLeft", "k", id),
            1,
            "{:?}",
            watcher.frames()
        );
    }
    let mut asker = Raw::hello(b.local_addr(), json!({})).0;
    wait_until("presence without the stopped node", || {
        who(&mut asker, "k")["members"] == 2
    });
    drop(theirs);
}

#[test]
fn a_node_declared_gone_while_alive_announces_its_members_again() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    // a beats every 3 s; b scans every 667 ms. Deleting a's key makes b
    // declare it gone before a's next beat, which then finds out.
    let a = start_server_with(node_config(&redis.url(), "a", Duration::from_secs(9)));
    let b = start_server_with(node_config(&redis.url(), "b", Duration::from_secs(2)));
    let (mut watcher, _) = Raw::hello(b.local_addr(), json!({}));
    watcher.join("k");
    let watcher = Inbox::follow(watcher);
    let mut prober = Raw::hello(b.local_addr(), json!({})).0;
    prober.join("k");
    let (mut ann, hello) = Raw::hello(a.local_addr(), json!({ "userId": "ann" }));
    ann.join("k");
    let id = hello.connection_id;
    watcher.wait_for("ann's join", |f| {
        f["type"] == "userJoined" && f["connectionId"] == id.as_str()
    });
    // Until b's scan finds a's key missing (a's own beat may put it back
    // first: then again).
    wait_until("b to declare a gone", || {
        command(redis.port, &["DEL", "relay:node:a"]);
        std::thread::sleep(Duration::from_millis(50));
        events(&watcher, "userLeft", "k", &id) > 0
    });
    wait_until("ann announced again", || {
        events(&watcher, "userJoined", "k", &id) == 2
    });
    probe(&mut prober, "k", "after", &[&watcher]);
    assert_eq!(events(&watcher, "userLeft", "k", &id), 1);
    assert_eq!(events(&watcher, "userJoined", "k", &id), 2);
    // From here on it is a member like any other: its leave is heard once.
    ann.send_json(MessageType::LeaveRoom, &json!({ "room": "k" }));
    ann.expect_skipping_messages(MessageType::LeaveRoom);
    wait_until("ann's leave", || {
        events(&watcher, "userLeft", "k", &id) == 2
    });
    probe(&mut prober, "k", "last", &[&watcher]);
    assert_eq!(events(&watcher, "userLeft", "k", &id), 2);
    assert!(metric(a.http_addr().unwrap(), "relay_cluster_outlink_up") == 1.0);
}

/// Sends a direct message and a HEARTBEAT: `Ok` if the HEARTBEAT's echo
/// came first (the message was taken), or the ERROR that came instead.
fn direct(sender: &mut Raw, to: Value, content: Value) -> Result<(), Value> {
    let mut request = to;
    request["content"] = content;
    sender.send_json(MessageType::Message, &request);
    sender.send_json(MessageType::Heartbeat, &json!({}));
    let frame = sender.recv();
    match frame.kind {
        MessageType::Heartbeat => Ok(()),
        _ => {
            let error = frame.json();
            sender.expect(MessageType::Heartbeat);
            Err(error)
        }
    }
}

fn directs(inbox: &Inbox, tag: &str) -> Vec<Value> {
    inbox
        .frames()
        .into_iter()
        .filter(|f| f["type"] == "direct" && f["content"] == tag)
        .collect()
}

#[test]
fn direct_messages_reach_users_and_connections_on_other_nodes() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let ttl = Duration::from_secs(2);
    let a = start_server_with(node_config(&redis.url(), "a", ttl));
    let b = start_server_with(node_config(&redis.url(), "b", ttl));
    let (mut ann, ann_hello) = Raw::hello(a.local_addr(), json!({ "userId": "ann" }));
    let (bob_a, _) = Raw::hello(a.local_addr(), json!({ "userId": "bob" }));
    let (bob_b, _) = Raw::hello(b.local_addr(), json!({ "userId": "bob" }));
    let (carl, carl_hello) = Raw::hello(b.local_addr(), json!({ "userId": "carl" }));
    let (anon, anon_hello) = Raw::hello(b.local_addr(), json!({}));
    let bob_a = Inbox::follow(bob_a);
    let bob_b = Inbox::follow(bob_b);
    let carl = Inbox::follow(carl);
    let anon = Inbox::follow(anon);

    // b's directory reaches Redis within ~50 ms of the HELLOs.
    wait_until("carl to be found from a", || {
        direct(&mut ann, json!({ "toUser": "carl" }), json!("hi carl")).is_ok()
    });
    carl.wait_for("the message on b", |f| f["content"] == "hi carl");
    let got = &directs(&carl, "hi carl")[0];
    assert_eq!(got["from"], ann_hello.connection_id.as_str(), "{got}");
    assert_eq!(got["user"], "ann", "{got}");

    // A user on both nodes: each connection once.
    wait_until("bob on b to be found", || {
        direct(&mut ann, json!({ "toUser": "bob" }), json!("probe")).unwrap();
        !directs(&bob_b, "probe").is_empty()
    });
    direct(&mut ann, json!({ "toUser": "bob" }), json!("hi bob")).unwrap();
    for inbox in [&bob_a, &bob_b] {
        inbox.wait_for("bob's message", |f| f["content"] == "hi bob");
    }

    // By connection id, one with a user and one without.
    direct(
        &mut ann,
        json!({ "toConnection": carl_hello.connection_id }),
        json!("to the connection"),
    )
    .unwrap();
    carl.wait_for("carl's connection's message", |f| {
        f["content"] == "to the connection"
    });
    wait_until("the anonymous connection to be found", || {
        direct(
            &mut ann,
            json!({ "toConnection": anon_hello.connection_id }),
            json!("anon"),
        )
        .is_ok()
    });
    anon.wait_for("the anonymous connection's message", |f| {
        f["content"] == "anon"
    });

    // In order, as sent.
    for n in 0..20 {
        direct(
            &mut ann,
            json!({ "toUser": "carl" }),
            json!(format!("n{n}")),
        )
        .unwrap();
    }
    carl.wait_for("the last", |f| f["content"] == "n19");
    let order: Vec<Value> = carl
        .frames()
        .into_iter()
        .filter(|f| {
            f["type"] == "direct" && f["content"].as_str().is_some_and(|c| c.starts_with('n'))
        })
        .map(|f| f["content"].clone())
        .collect();
    let sent: Vec<Value> = (0..20).map(|n| json!(format!("n{n}"))).collect();
    assert_eq!(order, sent);
    assert_eq!(directs(&bob_b, "hi bob").len(), 1);
    assert_eq!(directs(&bob_a, "hi bob").len(), 1);
    assert_eq!(directs(&carl, "hi carl").len(), 1);

    // Nobody of that user on any node; a connection no node has.
    let error = direct(&mut ann, json!({ "toUser": "nobody" }), json!(1)).unwrap_err();
    assert_eq!(error["code"], "NOT_FOUND", "{error}");
    assert_eq!(
        error["message"], "MESSAGE to user \"nobody\": no such user is connected",
        "{error}"
    );
    let error = direct(&mut ann, json!({ "toConnection": "c5" }), json!(1)).unwrap_err();
    assert_eq!(error["code"], "NOT_FOUND", "{error}");
    // A connection of b's block that is not open.
    let closed = format!(
        "c{}",
        carl_hello.connection_id[1..].parse::<u64>().unwrap() + 1000
    );
    let error = direct(&mut ann, json!({ "toConnection": closed }), json!(1)).unwrap_err();
    assert_eq!(error["code"], "NOT_FOUND", "{error}");
    let a_http = a.http_addr().unwrap();
    assert!(metric(a_http, "relay_cluster_directs_out_total") >= 24.0);
    assert!(metric(b.http_addr().unwrap(), "relay_cluster_directs_in_total") >= 24.0);
}

#[test]
fn a_direct_message_to_another_nodes_connection_is_checked_against_its_user() {
    if !redis_available() {
        return;
    }
    use server::auth::{AuthConfig, TokenTable};
    let tokens = "\
        ann-token-0123456789abcdef ann direct=support.*\n\
        bob-token-0123456789abcdef support.bob\n\
        eve-token-0123456789abcdef eve\n";
    let redis = Redis::start();
    let ttl = Duration::from_secs(2);
    let with_tokens = |node: &str| server::Config {
        auth: AuthConfig {
            tokens: Some(TokenTable::parse(tokens, "test").unwrap()),
            jwt: None,
        },
        ..node_config(&redis.url(), node, ttl)
    };
    let a = start_server_with(with_tokens("a"));
    let b = start_server_with(with_tokens("b"));
    let (mut ann, _) = Raw::hello(
        a.local_addr(),
        json!({"token": "ann-token-0123456789abcdef"}),
    );
    let (bob, bob_hello) = Raw::hello(
        b.local_addr(),
        json!({"token": "bob-token-0123456789abcdef"}),
    );
    let (eve, eve_hello) = Raw::hello(
        b.local_addr(),
        json!({"token": "eve-token-0123456789abcdef"}),
    );
    let bob = Inbox::follow(bob);
    let eve = Inbox::follow(eve);
    wait_until("bob's connection to be found from a", || {
        direct(
            &mut ann,
            json!({ "toConnection": bob_hello.connection_id }),
            json!("ok"),
        )
        .is_ok()
    });
    bob.wait_for("the permitted message", |f| f["content"] == "ok");
    wait_until(
        "eve's connection to be found, and refused",
        || match direct(
            &mut ann,
            json!({ "toConnection": eve_hello.connection_id }),
            json!("no"),
        ) {
            Err(error) if error["code"] == "FORBIDDEN" => true,
            Err(error) if error["code"] == "NOT_FOUND" => false,
            other => panic!("{other:?}"),
        },
    );
    let error = direct(&mut ann, json!({ "toUser": "eve" }), json!("no")).unwrap_err();
    assert_eq!(error["code"], "FORBIDDEN", "{error}");
    probe_direct(&mut ann, &bob_hello.connection_id, &bob);
    assert!(directs(&eve, "no").is_empty(), "{:?}", eve.frames());
}

/// A last direct message to `id`, waited for: what was sent before it
/// arrived, or never will.
fn probe_direct(sender: &mut Raw, id: &str, inbox: &Inbox) {
    direct(sender, json!({ "toConnection": id }), json!("last")).unwrap();
    inbox.wait_for("the last direct message", |f| f["content"] == "last");
}

#[test]
fn a_departure_or_direct_message_that_does_not_parse_is_dropped_and_counted() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let b = start_server_with(node_config(&redis.url(), "b", Duration::from_secs(2)));
    let b_http = b.http_addr().unwrap();
    wait_until("b's subscriber", || {
        metric(b_http, "relay_cluster_inlink_up") == 1.0
    });
    let (mut member, _) = Raw::hello(b.local_addr(), json!({}));
    member.join("k");
    let member = Inbox::follow(member);
    let malformed = "relay_cluster_dropped_total{reason=\"malformed\"}";
    let before = metric(b_http, malformed);
    // Not the layout; a room no client could join; a control character in
    // a user: each dropped whole.
    for payload in [
        &b"garbage"[..],
        br#"{"node":"x","room":"","left":[["c1",""]]}"#,
        br#"{"node":"x","room":"k","left":[["c1","="],["c2","=\u0001"]]}"#,
    ] {
        cluster_support::publish_raw(redis.port, "relay:departed", payload);
    }
    cluster_support::publish_raw(redis.port, "relay:direct:b", b"\x01\x00\x03bobnot a frame");
    wait_until("the four to be counted", || {
        metric(b_http, malformed) == before + 4.0
    });
    // A well-formed departure is told.
    cluster_support::publish_raw(
        redis.port,
        "relay:departed",
        br#"{"node":"x","room":"k","left":[["c1","=ann"]]}"#,
    );
    member.wait_for("the leave", |f| {
        f["type"] == "userLeft" && f["connectionId"] == "c1" && f["user"] == "ann"
    });
    assert_eq!(member_events(&member), 1, "{:?}", member.frames());
}
