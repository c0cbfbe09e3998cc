//! Big rooms' membership changes batched into `members` notices for the
//! clients that ask (SPEC.md 3.17), and WHO paging (3.15), against a real
//! server: every member's view, kept from its JOIN answer and what it is
//! told, stays exact through joins and leaves; clients that did not ask
//! see only `userJoined`/`userLeft`; paging lists every member once.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use protocol::MessageType;
use serde_json::{Value, json};
use server::{Config, MemberBatching};
use testkit::{Raw, start_server, start_server_with, wait_until};

/// Rooms of more than 5 batch, and notices go out every 20 ms, so a short
/// test crosses the bound both ways and has changes in many windows.
fn batching() -> Config {
    Config {
        member_batching: MemberBatching {
            above: 5,
            interval: Duration::from_millis(20),
        },
        ..Default::default()
    }
}

/// A member and what it believes the room holds.
struct Member {
    raw: Raw,
    id: String,
    batched: bool,
    view: BTreeSet<String>,
    /// Notices and events it was told, to show that both kinds were seen.
    notices: usize,
    events: usize,
}

impl Member {
    fn join(addr: std::net::SocketAddr, batched: bool) -> Member {
        let hello = if batched {
            json!({"memberEvents": "batched"})
        } else {
            json!({})
        };
        let (mut raw, reply) = Raw::hello(addr, hello);
        let answer = raw.join("big");
        let list = answer["memberList"].as_array().unwrap();
        assert_eq!(list.len() as u64, answer["members"].as_u64().unwrap());
        let view: BTreeSet<String> = list
            .iter()
            .map(|m| m["connectionId"].as_str().unwrap().to_owned())
            .collect();
        assert!(view.contains(&reply.connection_id));
        Member {
            raw,
            id: reply.connection_id,
            batched,
            view,
            notices: 0,
            events: 0,
        }
    }

    /// Applies one change, which must be news: a join of someone not yet
    /// in the view, a leave of someone in it.
    fn apply(&mut self, change: &str, id: &str) {
        match change {
            "userJoined" => assert!(
                self.view.insert(id.to_owned()),
                "{} heard {id} join again",
                self.id
            ),
            "userLeft" => assert!(
                self.view.remove(id),
                "{} heard {id} leave without having it",
                self.id
            ),
            other => panic!("unknown change {other}"),
        }
    }

    /// Reads what it was told until its view is `truth`; fails on any
    /// event that repeats what it knows or is missing (the view never
    /// matches, and the read times out).
    fn catch_up(&mut self, truth: &BTreeSet<String>) {
        while self.view != *truth {
            let frame: Value = self.raw.expect(MessageType::Message).json();
            match frame["type"].as_str() {
                Some(change @ ("userJoined" | "userLeft")) => {
                    self.events += 1;
                    self.apply(change, frame["connectionId"].as_str().unwrap());
                }
                Some("members") => {
                    assert!(self.batched, "{} did not ask for notices: {frame}", self.id);
                    self.notices += 1;
                    let changes = frame["changes"].as_array().unwrap();
                    let joins = frame["joins"].as_u64().unwrap();
                    let leaves = frame["leaves"].as_u64().unwrap();
                    assert_eq!(changes.len() as u64, joins + leaves, "{frame}");
                    let before = self.view.len() as u64;
                    for change in changes {
                        let id = change["connectionId"].as_str().unwrap();
                        self.apply(change["type"].as_str().unwrap(), id);
                    }
                    let count = frame["count"].as_u64().unwrap();
                    assert_eq!(count, self.view.len() as u64, "{frame}");
                    assert_eq!(count, before + joins - leaves, "{frame}");
                }
                other => panic!("{}: unexpected {other:?}: {frame}", self.id),
            }
        }
    }
}

/// Leaves "big", reading past what was queued before the answer.
fn leave(raw: &mut Raw) {
    raw.send_json(MessageType::LeaveRoom, &json!({"room": "big"}));
    raw.expect_skipping_messages(MessageType::LeaveRoom);
}

/// Returns once "big" has `n` members: the server has handled the closes
/// of connections dropped before.
fn settled(addr: std::net::SocketAddr, n: usize) {
    wait_until(&format!("{n} members"), || truth(addr).len() == n);
}

/// Who is in "big", from WHO: the truth each member's view must reach.
fn truth(addr: std::net::SocketAddr) -> BTreeSet<String> {
    let (mut asker, _) = Raw::hello(addr, json!({}));
    asker.send_json(MessageType::Who, &json!({"room": "big"}));
    let who = asker.expect(MessageType::Who).json();
    assert!(who.get("next").is_none(), "the room fits one page");
    who["memberList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["connectionId"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn batched_notices_and_single_events_keep_every_view_exact() {
    let server = start_server_with(batching());
    let addr = server.local_addr();
    let mut members: Vec<Member> = Vec::new();
    // Joins outnumber leaves two to one: the room grows past the bound
    // (5), and members leave both ways (LEAVE_ROOM and closing).
    for step in 0..45 {
        if step % 3 == 2 && members.len() > 2 {
            let mut gone = members.remove(step % members.len());
            if step % 2 == 0 {
                leave(&mut gone.raw);
            }
            drop(gone);
            settled(addr, members.len());
        } else {
            members.push(Member::join(addr, step % 2 == 0));
        }
        // Some members read now and then, so that notices reach members
        // whose view is partly from events and partly from notices.
        if step % 7 == 0 {
            let now = truth(addr);
            for member in &mut members {
                member.catch_up(&now);
            }
        }
    }
    // Then the room shrinks below the bound again.
    while members.len() > 3 {
        let mut gone = members.remove(1);
        leave(&mut gone.raw);
    }
    members.push(Member::join(addr, true));
    let now = truth(addr);
    assert_eq!(now.len(), members.len());
    for member in &mut members {
        member.catch_up(&now);
    }
    assert!(members.iter().any(|m| m.notices > 0), "no notice was sent");
    assert!(
        members
            .iter()
            .filter(|m| !m.batched)
            .all(|m| m.notices == 0),
        "a client that did not ask got a notice"
    );
}

#[test]
fn a_notice_goes_only_to_members_that_asked_and_counts_what_it_lists() {
    let server = start_server_with(batching());
    let addr = server.local_addr();
    let mut batched = Member::join(addr, true);
    let mut plain = Member::join(addr, false);
    let mut others: Vec<Member> = (0..6).map(|_| Member::join(addr, false)).collect();
    // Joins up to the fifth member are single events; from the sixth the
    // room has more than 5 and `batched` hears of them in notices.
    let late = Member::join(addr, false);
    for member in [&mut batched, &mut plain] {
        member.catch_up(&truth(addr));
    }
    // The plain member heard every join one by one, the batched one heard
    // the ninth in a notice.
    assert_eq!(plain.events, 7);
    assert_eq!(plain.notices, 0);
    assert!(batched.notices >= 1);
    assert_eq!(batched.events, 4);
    drop(late);
    others.truncate(2);
    settled(addr, 4);
    let now = truth(addr);
    batched.catch_up(&now);
    plain.catch_up(&now);
    assert_eq!(plain.notices, 0);
}

#[test]
fn hello_refuses_an_unknown_member_events_mode() {
    let server = start_server();
    let (mut raw, _) = Raw::hello(server.local_addr(), json!({}));
    raw.send_json(
        MessageType::Hello,
        &json!({"memberEvents": "sometimes", "id": 3}),
    );
    let error = raw.expect_error("INVALID_PAYLOAD");
    assert!(error.message.contains("\"batched\""), "{}", error.message);
}

/// Lists "big" with WHO pages of `limit`, running `between` after each
/// page; the connection ids in the order listed, and the pages' `members`.
fn list_in_pages(
    asker: &mut Raw,
    limit: u64,
    mut between: impl FnMut(usize),
) -> (Vec<String>, Vec<u64>) {
    let mut listed = Vec::new();
    let mut counts = Vec::new();
    let mut after: Option<u64> = None;
    for page in 0.. {
        let mut request = json!({"room": "big", "limit": limit});
        if let Some(after) = after {
            request["after"] = json!(after);
        }
        asker.send_json(MessageType::Who, &request);
        let who = asker.expect(MessageType::Who).json();
        let list = who["memberList"].as_array().unwrap();
        assert!(list.len() as u64 <= limit);
        listed.extend(
            list.iter()
                .map(|m| m["connectionId"].as_str().unwrap().to_owned()),
        );
        counts.push(who["members"].as_u64().unwrap());
        match who.get("next").and_then(Value::as_u64) {
            Some(next) => {
                assert!(Some(next) > after, "the cursor moves on");
                after = Some(next);
            }
            None => break,
        }
        between(page);
    }
    (listed, counts)
}

#[test]
fn who_pages_list_every_member_once_while_others_come_and_go() {
    let server = start_server();
    let addr = server.local_addr();
    let mut stayers: Vec<(Raw, String)> = Vec::new();
    let mut churn: Vec<Raw> = Vec::new();
    for n in 0..23 {
        let (mut raw, reply) = Raw::hello(addr, json!({"memberEvents": false}));
        raw.join("big");
        if n % 4 == 1 {
            churn.push(raw);
        } else {
            stayers.push((raw, reply.connection_id));
        }
    }
    let (mut asker, _) = Raw::hello(addr, json!({}));

    // Still: every member once, in join order, pages of 5 then the rest.
    let (listed, counts) = list_in_pages(&mut asker, 5, |_| {});
    assert_eq!(listed.len(), 23);
    assert_eq!(counts, vec![23; 5]);
    let unique: BTreeSet<_> = listed.iter().collect();
    assert_eq!(unique.len(), 23, "listed twice: {listed:?}");

    // Moving: between pages, a member listed or not leaves and a new one
    // joins; everyone there throughout is listed, once.
    let mut joined = Vec::new();
    let (listed, _) = list_in_pages(&mut asker, 4, |_| {
        if let Some(mut gone) = churn.pop() {
            gone.leave("big");
        }
        let (mut raw, _) = Raw::hello(addr, json!({"memberEvents": false}));
        raw.join("big");
        joined.push(raw);
    });
    let unique: BTreeSet<_> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "listed twice: {listed:?}");
    for (_, id) in &stayers {
        assert!(listed.contains(id), "{id} was there throughout, not listed");
    }
}

#[test]
fn who_refuses_a_page_it_cannot_give() {
    let server = start_server();
    let (mut raw, _) = Raw::hello(server.local_addr(), json!({}));
    for request in [
        json!({"room": "big", "limit": 0, "id": 1}),
        json!({"room": "big", "limit": 101, "id": 1}),
        json!({"room": "big", "after": -1, "id": 1}),
        json!({"room": "big", "after": "c4", "id": 1}),
    ] {
        raw.send_json(MessageType::Who, &request);
        let error = raw.expect_error("INVALID_PAYLOAD");
        assert!(!error.fatal, "{request}: {error:?}");
    }
    raw.send_json(MessageType::Who, &json!({"room": "big", "limit": 100}));
    assert_eq!(raw.expect(MessageType::Who).json()["members"], 0);
}
