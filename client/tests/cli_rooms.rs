//! The CLI's side of rooms with an order (SPEC.md 3.13–3.16, 5.11):
//! `sub --history`, gap lines, `seq`/`epoch` in `--json`, `/who` by WHO,
//! `/join --history` and `/msg`, against a real in-process server.

mod support;

use std::net::SocketAddr;

use client::{Event, Recipient};
use support::cli::{Live, relay, run_script, wait_exit};
use support::{expect_event, login};
use testkit::{WAIT, start_server_with};

fn with_history(messages: usize) -> server::Config {
    server::Config {
        history: server::HistoryLimits {
            messages,
            bytes: 1 << 20,
            max_age: None,
        },
        ..Default::default()
    }
}

/// Publishes `range` to `room` and waits until the server has relayed them
/// (the acks say so), so a later join finds them kept. The publisher is
/// returned to stay a member: a room, and what it kept, ends with its last
/// member (SPEC.md 5.11).
fn publish(addr: SocketAddr, room: &str, range: std::ops::RangeInclusive<u64>) -> client::Client {
    let publisher = login(addr, "pub");
    publisher.join_and_wait(room, WAIT).expect("join");
    for n in range {
        publisher
            .send_and_wait_ack(room, &n, WAIT)
            .expect("the server accepts it");
    }
    publisher
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
}

#[test]
fn sub_history_prints_the_kept_ones_then_the_live_ones_with_seq_and_epoch() {
    let server = start_server_with(with_history(100));
    let addr = server.local_addr();
    let publisher = publish(addr, "feed", 1..=3);
    let mut sub = Live::spawn(relay(
        addr,
        &["sub", "feed", "--history", "2", "-n", "3", "--json"],
    ));
    sub.expect("subscribed to");
    let first = json(&sub.next_line());
    let second = json(&sub.next_line());
    assert_eq!(
        (first["content"].as_u64(), first["seq"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (second["content"].as_u64(), second["seq"].as_u64()),
        (Some(3), Some(3))
    );
    let epoch = first["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(second["epoch"], epoch.as_str());
    publisher
        .send_and_wait_ack("feed", &4, WAIT)
        .expect("the server accepts it");
    let live = json(&sub.next_line());
    assert_eq!(
        (live["content"].as_u64(), live["seq"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(live["epoch"], epoch.as_str());
    assert_eq!(wait_exit(&mut sub.child).code(), Some(0));
}

#[test]
fn a_gap_line_says_which_messages_history_no_longer_has() {
    let server = start_server_with(with_history(3));
    let addr = server.local_addr();
    let _publisher = publish(addr, "feed", 1..=5);
    let mut human = Live::spawn(relay(addr, &["sub", "feed", "--history", "5", "-n", "3"]));
    human.expect("[feed] 2 messages missed (seq 1\u{2013}2)");
    // The gap comes before the first message after it, and counts for -n
    // no message.
    human.expect(": 3");
    human.expect(": 4");
    human.expect(": 5");
    assert_eq!(wait_exit(&mut human.child).code(), Some(0));

    let mut machine = Live::spawn(relay(
        addr,
        &["sub", "feed", "--history", "5", "-n", "3", "--json"],
    ));
    let gap = json(&machine.expect("\"gap\""));
    assert_eq!(gap["type"], "gap");
    assert_eq!(gap["room"], "feed");
    assert_eq!(
        (gap["from"].as_u64(), gap["to"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(gap["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    let first = json(&machine.next_line());
    assert_eq!(first["seq"].as_u64(), Some(3));
    assert_eq!(wait_exit(&mut machine.child).code(), Some(0));
}

#[test]
fn who_lists_the_members_the_server_names() {
    let server = start_server_with(with_history(0));
    let addr = server.local_addr();
    let ann = login(addr, "ann");
    ann.join_and_wait("lab", WAIT).expect("join");
    let (status, out, err) = run_script(addr, &["--name", "bob"], "/join lab\n/who\n/who empty\n");
    assert_eq!(status.code(), Some(0), "{out}{err}");
    let all = format!("{out}{err}");
    let line = all
        .lines()
        .find(|l| l.contains("lab: 2 members"))
        .unwrap_or_else(|| panic!("no /who line: {all}"));
    let ann_id = ann.connection_id().expect("an id");
    assert!(line.contains(&format!("ann ({ann_id})")), "{line}");
    assert!(line.contains("bob (c") && line.ends_with("(you)"), "{line}");
    assert!(
        all.lines().any(|l| l.contains("empty: no members")),
        "{all}"
    );
}

#[test]
fn join_with_history_shows_the_kept_messages_first() {
    let server = start_server_with(with_history(10));
    let addr = server.local_addr();
    let _publisher = publish(addr, "notes", 1..=4);
    let (status, out, err) = run_script(addr, &["--json"], "/join notes --history 2\n");
    assert_eq!(status.code(), Some(0), "{out}{err}");
    let seqs: Vec<u64> = out
        .lines()
        .map(json)
        .filter_map(|line| line["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [3, 4], "{out}");
}

#[test]
fn msg_reaches_the_user_and_an_unknown_one_fails_the_script() {
    let server = start_server_with(with_history(0));
    let addr = server.local_addr();
    let ann = login(addr, "ann");
    let (status, out, err) = run_script(addr, &["--name", "bob"], "/msg ann psst\n");
    assert_eq!(status.code(), Some(0), "{out}{err}");
    let direct = expect_event(&ann, "a direct message", |event| match event {
        Event::Direct(direct) => Some(direct.clone()),
        _ => None,
    });
    assert_eq!(direct.user.as_deref(), Some("bob"));
    assert_eq!(direct.body.as_text().as_deref(), Some("psst"));

    let (status, _, err) = run_script(addr, &["--name", "bob"], "/msg nobody hello\n");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("NOT_FOUND"), "{err}");
}

#[test]
fn a_direct_message_is_shown_apart_from_room_messages() {
    let server = start_server_with(with_history(0));
    let addr = server.local_addr();
    let mut bob = Live::start(addr, &["--name", "bob"]);
    bob.type_line("/join lab");
    bob.expect("joined lab");
    let ann = login(addr, "ann");
    ann.send_direct(&Recipient::User("bob".into()), &"psst")
        .expect("send");
    let line = bob.expect("psst");
    assert!(line.starts_with("[direct] ann ("), "{line}");
}
