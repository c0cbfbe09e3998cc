//! The server-wide bounds (SPEC.md 11.4): the caps on rooms and memberships,
//! counted exactly however connections come and go, and the memory budget:
//! past it the heaviest connections are cut with OVERLOADED, new ones are
//! refused until usage is back under the low-water mark, and a client that
//! reads keeps being served throughout.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use protocol::{Flags, MessageType};
use serde_json::json;
use testkit::{Raw, json_frame, raw_frame, start_server_with, wait_until};

fn capped(max_rooms: usize, max_memberships: usize) -> server::Config {
    server::Config {
        budget: server::Budget {
            max_rooms,
            max_memberships,
            memory: None,
        },
        ..Default::default()
    }
}

fn closes(counters: &server::Counters, kind: &str) -> u64 {
    counters
        .closes()
        .into_iter()
        .find(|&(name, _)| name == kind)
        .map_or(0, |(_, count)| count)
}

#[test]
fn a_join_past_the_room_cap_is_refused_until_a_room_goes() {
    let server = start_server_with(capped(3, 100));
    let addr = server.local_addr();
    let (mut first, _) = Raw::hello(addr, json!({}));
    for room in ["a", "b", "c"] {
        first.join(room);
    }
    let (mut second, _) = Raw::hello(addr, json!({}));
    second.send_json(MessageType::JoinRoom, &json!({"room": "d", "id": 7}));
    let error = second.expect_error("INVALID_ROOM");
    assert!(!error.fatal);
    assert_eq!(error.room.as_deref(), Some("d"));
    assert_eq!(error.id, Some(protocol::RequestId::Number(7)));
    assert!(
        error.message.contains("limit of 3 rooms"),
        "{}",
        error.message
    );
    // A room that exists is not a new one.
    assert_eq!(second.join("a")["members"], 2);
    // The first client goes: "b" and "c" go with it, "a" stays.
    drop(first);
    let counters = server.counters();
    wait_until("the first client's rooms to go", || counters.rooms() == 1);
    assert_eq!(counters.memberships(), 1);
    assert_eq!(second.join("d")["status"], "joined");
    assert_eq!(second.join("e")["status"], "joined");
    second.send_json(MessageType::JoinRoom, &json!({"room": "f"}));
    assert!(!second.expect_error("INVALID_ROOM").fatal);
}

#[test]
fn a_join_past_the_membership_cap_is_refused_until_a_member_leaves() {
    let server = start_server_with(capped(100, 4));
    let addr = server.local_addr();
    let (mut first, _) = Raw::hello(addr, json!({}));
    let (mut second, _) = Raw::hello(addr, json!({}));
    first.join("a");
    first.join("b");
    second.join("a");
    second.join("b");
    second.send_json(MessageType::JoinRoom, &json!({"room": "a"}));
    assert_eq!(second.expect(MessageType::JoinRoom).json()["members"], 2);
    first.send_json(MessageType::JoinRoom, &json!({"room": "c"}));
    let error = first
        .expect_skipping_messages(MessageType::Error)
        .expect_error();
    assert_eq!(error.code.as_str(), "INVALID_ROOM");
    assert!(
        error.message.contains("limit of 4 room memberships"),
        "{}",
        error.message
    );
    first.leave("a");
    assert_eq!(first.join("c")["status"], "joined");
    second.reset();
    let counters = server.counters();
    wait_until("the reset client's memberships to go", || {
        counters.memberships() == 2
    });
    assert_eq!(first.join("d")["status"], "joined");
    assert_eq!(counters.rooms(), 3);
    // A client sees the same counts in a HELLO answer.
    let stats = first.stats();
    assert_eq!((stats.rooms, stats.memberships), (3, 3));
    assert!(stats.memory_used > 0 && stats.memory_used < stats.memory_budget);
}

#[test]
fn rooms_memberships_and_memory_are_counted_exactly_through_churn() {
    let server = start_server_with(capped(1000, 1000));
    let addr = server.local_addr();
    let counters = server.counters();
    let mut clients: Vec<Raw> = (0..12).map(|_| Raw::hello(addr, json!({})).0).collect();
    // Client i is in rooms r0 ..= r(i mod 9), and leaves every third one.
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    for (i, client) in clients.iter_mut().enumerate() {
        for room in 0..=i % 9 {
            let name = format!("r{room}");
            client.join(&name);
            client.join(&name);
            *expected.entry(name).or_default() += 1;
        }
        for room in (0..=i % 9).step_by(3) {
            let name = format!("r{room}");
            client.leave(&name);
            client.leave(&name);
            *expected.get_mut(&name).unwrap() -= 1;
        }
    }
    expected.retain(|_, members| *members > 0);
    assert_eq!(counters.rooms(), expected.len() as u64);
    assert_eq!(counters.memberships(), expected.values().sum::<u64>());
    assert!(counters.memory_used() > 0);
    // Every way out: a FIN, a reset, mid-frame, and the rest at shutdown.
    for (i, client) in clients.drain(..).enumerate() {
        match i % 3 {
            0 => drop(client),
            1 => client.reset(),
            _ => {
                let mut client = client;
                client.send_raw(&[0, 0, 0, 50, 1, 2, 1, b'{']);
                client.reset();
            }
        }
    }
    wait_until("every connection to close", || counters.connections() == 0);
    assert_eq!((counters.rooms(), counters.memberships()), (0, 0));
    wait_until("the memory budget to be all given back", || {
        counters.memory_used() == 0
    });
}

/// Joins rooms `prefix0`, `prefix1`, ... until the server's usage reaches
/// `target` bytes; returns how many it joined.
fn join_until(client: &mut Raw, counters: &server::Counters, prefix: &str, target: u64) -> usize {
    let mut joined = 0;
    while counters.memory_used() < target {
        let mut batch = Vec::new();
        for i in joined..joined + 50 {
            testkit::push_json(
                &mut batch,
                MessageType::JoinRoom,
                &json!({"room": format!("{prefix}{i}")}),
            );
        }
        client.send_raw(&batch);
        for _ in 0..50 {
            client.expect(MessageType::JoinRoom);
        }
        joined += 50;
    }
    joined
}

#[test]
fn past_the_budget_the_heaviest_is_cut_and_new_connections_wait_for_the_low_water_mark() {
    const BUDGET: u64 = 8 << 20;
    let server = start_server_with(server::Config {
        max_rooms_per_connection: 100_000,
        budget: server::Budget {
            memory: Some(BUDGET),
            ..server::Budget::default()
        },
        ..Default::default()
    });
    let addr = server.local_addr();
    let counters = server.counters();
    assert_eq!(counters.memory_budget(), BUDGET);
    // A reading client whose rooms take the server between the low-water
    // mark (7/8 of the budget) and the budget.
    let (mut reader, _) = Raw::hello(addr, json!({}));
    let rooms = join_until(&mut reader, &counters, "room", BUDGET / 100 * 93);
    assert!(!counters.memory_shedding());
    // Another starts a maximum frame and stops half way: its read buffer
    // takes the server over.
    let mut heavy = Raw::hello(addr, json!({})).0;
    let mut partial = 1_048_000u32.to_be_bytes().to_vec();
    partial.extend([1, MessageType::Heartbeat as u8, Flags::BINARY.bits()]);
    partial.extend(vec![b'x'; 700 * 1024]);
    heavy.send_raw(&partial);
    // Its socket had room: it is told why.
    heavy.expect_fatal("OVERLOADED");
    wait_until("the heavy connection to be counted closed", || {
        closes(&counters, "overloaded") == 1
    });
    // Still over the low-water mark: a new connection is refused.
    assert!(counters.memory_shedding());
    let mut refused = Raw::connect(addr);
    refused.expect_fatal("SERVER_FULL");
    // The reading client is served all along.
    reader.send_raw(&raw_frame(
        MessageType::Heartbeat,
        Flags::BINARY,
        b"still here",
    ));
    assert_eq!(reader.expect(MessageType::Heartbeat).payload, b"still here");
    // It leaves rooms until the server is under the low-water mark: new
    // connections are welcome again.
    let mut left = 0;
    while counters.memory_shedding() {
        assert!(left < rooms, "left every room and still shedding");
        reader.leave(&format!("room{left}"));
        left += 1;
    }
    let (mut welcome, _) = Raw::hello(addr, json!({}));
    assert_eq!(welcome.join("welcome")["status"], "joined");
}

/// A new client that says HELLO, if the server admits it; `None` if it is
/// turned away with SERVER_FULL.
fn admitted(addr: std::net::SocketAddr) -> Option<Raw> {
    let mut client = Raw::connect(addr);
    client.send_json(MessageType::Hello, &json!({}));
    let first = client.recv();
    if first.kind == MessageType::Hello {
        return Some(client);
    }
    assert_eq!(first.expect_error().code.as_str(), "SERVER_FULL");
    None
}

#[test]
fn clients_that_never_read_cannot_take_the_server_past_its_budget() {
    const BUDGET: u64 = 24 << 20;
    const ATTACKERS: usize = 16;
    const MAX_FRAME: u64 = protocol::DEFAULT_MAX_FRAME as u64;
    let server = start_server_with(server::Config {
        budget: server::Budget {
            memory: Some(BUDGET),
            ..server::Budget::default()
        },
        ..Default::default()
    });
    let addr = server.local_addr();
    let counters = server.counters();

    // Watches the accounted usage for the whole test.
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (counters, peak, stop) = (Arc::clone(&counters), Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(counters.memory_used(), Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };

    // A normal pair chatting in a room.
    let (mut alice, _) = Raw::hello(addr, json!({}));
    let (mut bob, _) = Raw::hello(addr, json!({}));
    alice.join("chat");
    bob.join("chat");

    // Each attacker sends HEARTBEATs of almost 1 MiB, each echoed to it, and
    // never reads: the kernel's socket buffers take the first few echoes,
    // the server's queue (4 MiB) the next. Each writes from its own thread,
    // since the server stops reading from it when its queue is full.
    let heartbeat = raw_frame(
        MessageType::Heartbeat,
        Flags::BINARY,
        &vec![b'h'; MAX_FRAME as usize - 16],
    );
    let mut attack = json_frame(MessageType::Hello, &json!({}));
    for _ in 0..12 {
        attack.extend_from_slice(&heartbeat);
    }
    let attack = Arc::new(attack);
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let finished = Arc::new(std::sync::Mutex::new(finished));
    let sent = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            let (attack, finished) = (Arc::clone(&attack), Arc::clone(&finished));
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_write_timeout(Some(testkit::WAIT)).unwrap();
                // The server may cut it part way; that is the point.
                let _ = stream.write_all(&attack);
                sent.fetch_add(1, Ordering::Relaxed);
                // Holds the connection open, unread, until the test ends.
                let _ = finished.lock().unwrap().recv_timeout(testkit::WAIT);
                drop(stream);
            })
        })
        .collect();

    wait_until("the server to shed the heaviest", || {
        closes(&counters, "overloaded") > 0
    });
    for round in 0..5 {
        alice.publish("chat", json!(format!("round {round}")));
        let delivery = bob.expect(MessageType::Message).json();
        assert_eq!(delivery["content"], format!("round {round}"));
    }
    // Every attacker has sent all it could (the server read it all, or cut
    // it off as a slow consumer or OVERLOADED).
    wait_until("the attack to be over", || {
        sent.load(Ordering::Relaxed) == ATTACKERS as u64
    });
    wait_until("usage to be back under the budget", || {
        counters.memory_used() <= BUDGET && !counters.memory_shedding()
    });
    // New clients are welcome again (the last attackers' bytes may still
    // be arriving, and take the server over once more for a moment).
    // The same moment may refuse its JOIN (room state over the budget):
    // the client then tries again, as a real one would.
    let mut late = None;
    wait_until("a new client to be admitted and to join", || {
        let Some(mut client) = admitted(addr) else {
            return false;
        };
        client.send_json(MessageType::JoinRoom, &json!({ "room": "chat" }));
        let answer = client.recv();
        if answer.kind == MessageType::JoinRoom {
            late = Some((client, answer.json()));
            return true;
        }
        assert_eq!(answer.expect_error().code.as_str(), "INVALID_ROOM");
        false
    });
    let (_late, answer) = late.unwrap();
    assert_eq!(answer["members"], 3);

    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    // Over the budget, a queue that holds anything takes nothing more: the
    // excess is at most one batch queued and one frame being received per
    // connection.
    let connections = (ATTACKERS + 3) as u64;
    eprintln!(
        "peak usage {peak:?} of a {BUDGET}-byte budget",
        peak = peak.load(Ordering::Relaxed)
    );
    let bound = BUDGET + connections * 2 * (MAX_FRAME + 64 * 1024);
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= bound,
        "peak usage {peak} bytes, above {bound} (the budget, {BUDGET}, and two frames a connection)"
    );
    assert!(
        peak > BUDGET,
        "the attack never reached the budget ({peak} bytes)"
    );
    drop(done);
    for attacker in attackers {
        attacker.join().unwrap();
    }
    wait_until("the attackers to be gone", || counters.connections() == 3);
}

#[test]
fn a_budget_above_the_machines_memory_is_refused_at_start() {
    let config = server::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        budget: server::Budget {
            memory: Some(1 << 62),
            ..server::Budget::default()
        },
        ..Default::default()
    };
    let error = server::Server::bind(config).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    let message = error.to_string();
    assert!(
        message
            .starts_with("--memory-budget is 4611686018427387904 bytes, more than this machine's"),
        "{message}"
    );
}
