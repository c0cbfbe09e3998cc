//! The client library's side of rooms with an order (SPEC.md 5.11): the
//! position of each message, recovery after a reconnect, gap notices, acks,
//! WHO and direct messages, against a real in-process server.

mod support;

use std::net::SocketAddr;

use client::{
    Body, Client, ErrorCode, Event, Hello, MemberChange, MemberEvents, Options, Recipient, Recovery,
};
use support::{expect_event, login};
use testkit::{WAIT, start_server, start_server_with, with_history};

fn sequenced(addr: SocketAddr, hello: &Hello) -> Client {
    let client = Client::connect_with(addr, &Options::default()).expect("connect");
    client.hello(hello, WAIT).expect("HELLO answer");
    client
}

#[test]
fn messages_carry_their_place_and_a_reconnect_recovers_from_it() {
    let server = start_server_with(with_history(100));
    let addr = server.local_addr();
    let publisher = login(addr, "pub");
    publisher.join_and_wait("feed", WAIT).expect("join");
    let reader = sequenced(addr, &Hello::default());
    let joined = reader.join_and_wait("feed", WAIT).expect("join");
    let start = joined.position.expect("the server numbers messages");
    assert_eq!(start.seq, 0);
    for n in 1..=5 {
        publisher.send_json("feed", &n).expect("send");
    }
    for n in 1..=5u64 {
        let (message, position) =
            expect_event(&reader, "a numbered message", |event| match event {
                Event::Message(message) => Some((message.clone(), message.position.clone()?)),
                _ => None,
            });
        assert_eq!(message.body.as_json(), Some(&*n.to_string()));
        assert_eq!(
            (position.epoch.as_str(), position.seq),
            (start.epoch.as_str(), n)
        );
    }
    // The position is the last one read.
    let position = reader.position("feed").expect("a position");
    assert_eq!(position.seq, 5);

    // A new connection picks up after seq 3, as if 4 and 5 had been lost.
    drop(reader);
    publisher.send_json("feed", &6).expect("send");
    let back = sequenced(addr, &Hello::default());
    let since = client::Since { seq: 3, ..position };
    back.join_with("feed", &Recovery::Since(since))
        .expect("join");
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        match back.recv_timeout(WAIT).expect("an event") {
            Event::Message(message) => seqs.push(message.position.expect("a position").seq),
            // The first reader's userLeft may race this join.
            Event::Joined(_) | Event::Member(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs, [4, 5, 6]);
}

#[test]
fn gaps_acks_who_and_direct_messages_arrive_as_events() {
    let server = start_server_with(with_history(2));
    let addr = server.local_addr();
    let ann = login(addr, "ann");
    ann.join_and_wait("news", WAIT).expect("join");
    for n in 1..=4 {
        let ack = ann.send_and_wait_ack("news", &n, WAIT).expect("an ack");
        assert_eq!((ack.room.as_str(), ack.seq, ack.members), ("news", n, 0));
    }
    let bob = login(addr, "bob");
    bob.join_with("news", &Recovery::Last(4)).expect("join");
    let gap = expect_event(&bob, "a gap", |event| match event {
        Event::Gap(gap) => Some(gap.clone()),
        _ => None,
    });
    assert_eq!((gap.from, gap.to), (Some(1), Some(2)));
    // Kept messages are messages like live ones.
    let kept: Vec<String> = (0..2)
        .map(|_| {
            expect_event(&bob, "a kept message", |event| match event {
                Event::Message(message) => message.body.as_json().map(str::to_owned),
                _ => None,
            })
        })
        .collect();
    assert_eq!(kept, ["3", "4"]);
    // The position is the last one read (the reader thread notes it as it
    // reads: only once message 4 is out is it sure to be there).
    assert_eq!(bob.position("news").map(|p| p.seq), Some(4));

    let who = bob.who_and_wait("news", WAIT).expect("WHO answer");
    assert_eq!(who.members, 2);
    let users: Vec<_> = who.member_list.iter().map(|m| m.user.clone()).collect();
    assert_eq!(users, [Some("ann".to_owned()), Some("bob".to_owned())]);

    ann.send_direct(&Recipient::User("bob".into()), "psst")
        .expect("direct");
    let direct = expect_event(&bob, "a direct message", |event| match event {
        Event::Direct(direct) => Some(direct.clone()),
        _ => None,
    });
    assert_eq!(direct.user.as_deref(), Some("ann"));
    assert!(matches!(direct.body, Body::Json(ref raw) if raw.get() == "\"psst\""));
    ann.send_direct(&Recipient::Connection("c999".into()), "nobody")
        .expect("direct");
    let error = expect_event(&ann, "NOT_FOUND", |event| match event {
        Event::Error(error) => Some(error.clone()),
        _ => None,
    });
    assert_eq!(error.code, ErrorCode::NotFound);
    assert!(!error.fatal);
}

#[test]
fn binary_messages_carry_their_place_when_the_hello_asks() {
    let server = start_server();
    let addr = server.local_addr();
    let publisher = login(addr, "pub");
    publisher.join_and_wait("bin", WAIT).expect("join");
    let hello = Hello {
        binary_seq: true,
        ..Hello::default()
    };
    let reader = sequenced(addr, &hello);
    reader.join_and_wait("bin", WAIT).expect("join");
    publisher.send_json("bin", "first").expect("send");
    publisher.send_binary("bin", &[0, 1, 2]).expect("send");
    let (message, position) = expect_event(&reader, "the binary message", |event| match event {
        Event::Message(message) if message.body.as_bytes().is_some() => {
            Some((message.clone(), message.position.clone()?))
        }
        _ => None,
    });
    assert_eq!(message.body.as_bytes(), Some(&[0, 1, 2][..]));
    assert_eq!(position.seq, 2);
}

#[test]
fn batched_member_events_arrive_as_notices_and_who_all_pages_through_a_room() {
    let server = start_server_with(server::Config {
        member_batching: server::MemberBatching {
            above: 2,
            interval: std::time::Duration::from_millis(20),
        },
        ..Default::default()
    });
    let addr = server.local_addr();
    let watcher = Client::connect(addr).expect("connect");
    let hello = Hello {
        member_events: Some(MemberEvents::Batched),
        ..Hello::default()
    };
    watcher.hello(&hello, WAIT).expect("HELLO answer");
    let joined = watcher.join_and_wait("big", WAIT).expect("join");
    assert_eq!(joined.members, Some(1));
    let others: Vec<Client> = (0..120)
        .map(|n| {
            let other = login(addr, &format!("u{n}"));
            other.join_and_wait("big", WAIT).expect("join");
            other
        })
        .collect();
    // One userJoined (the room had 2 members), then notices for the rest,
    // counted exactly: 120 joins in all.
    let mut count = 1;
    let mut joins = 0;
    while count < 121 {
        match watcher.recv_timeout(WAIT) {
            Ok(Event::Member(event)) => {
                assert_eq!(event.change, MemberChange::Joined);
                count += 1;
                joins += 1;
            }
            Ok(Event::Members(notice)) => {
                assert_eq!(notice.leaves, 0);
                assert!(notice.complete() || notice.changes.len() == 100);
                count += notice.joins;
                joins += notice.joins;
                assert_eq!(notice.count, count);
            }
            other => panic!("expected membership news, got {other:?}"),
        }
    }
    assert_eq!(joins, 120);

    let (members, list) = watcher.who_all("big", 10, WAIT).expect("WHO pages");
    assert_eq!(members, 121);
    assert_eq!(list.len(), 121);
    let users: std::collections::BTreeSet<_> = list.iter().filter_map(|m| m.user.clone()).collect();
    assert_eq!(users.len(), 120);
    drop(others);
}
