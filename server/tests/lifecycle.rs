//! Connection lifecycle: idle timeout, connection limit, abrupt disconnects
//! and room cleanup, graceful shutdown.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use protocol::{Flags, MessageType};
use serde_json::json;
use testkit::{Raw, json_frame, raw_frame, start_server, start_server_with, wait_until};

#[test]
fn a_silent_connection_gets_idle_timeout_even_before_hello() {
    let server = start_server_with(server::Config {
        idle_timeout: Duration::from_millis(500),
        ..Default::default()
    });
    let mut client = Raw::connect(server.local_addr());
    client.expect_fatal("IDLE_TIMEOUT");
}

#[test]
fn a_partial_frame_trickling_in_does_not_reset_the_idle_clock() {
    let server = start_server_with(server::Config {
        idle_timeout: Duration::from_millis(600),
        ..Default::default()
    });
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    let mut writer = client.stream().try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        use std::io::Write;
        // A frame announcing 1000 bytes, sent one byte every 100 ms: without
        // the rule, it would stay connected for 100 s.
        let mut bytes = vec![0, 0, 3, 232, 1, 4, 1];
        bytes.extend(std::iter::repeat_n(b' ', 993));
        for byte in bytes {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    client.expect_fatal("IDLE_TIMEOUT");
    drop(client);
    trickle.join().unwrap();
}

#[test]
fn heartbeats_keep_a_connection_alive() {
    let server = start_server_with(server::Config {
        idle_timeout: Duration::from_millis(1500),
        ..Default::default()
    });
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    for _ in 0..8 {
        // Pace the client's own sending; the server is never waited on by time.
        std::thread::sleep(Duration::from_millis(300));
        client.send_raw(&raw_frame(MessageType::Heartbeat, Flags::NONE, b""));
        client.expect(MessageType::Heartbeat);
    }
}

#[test]
fn connections_over_the_limit_get_server_full_and_room_frees_up() {
    let server = start_server_with(server::Config {
        max_connections: 2,
        ..Default::default()
    });
    let addr = server.local_addr();
    let (first, _) = Raw::hello(addr, json!({}));
    let (_second, _) = Raw::hello(addr, json!({}));
    let mut third = Raw::connect(addr);
    third.expect_fatal("SERVER_FULL");
    drop(first);
    wait_until("a slot to free", || server.counters().connections() < 2);
    let (mut fourth, _) = Raw::hello(addr, json!({}));
    assert_eq!(fourth.join("r")["status"], "joined");
}

#[test]
fn abrupt_disconnects_leave_rooms_exactly_once() {
    let server = start_server();
    let addr = server.local_addr();
    let (mut observer, _) = Raw::hello(addr, json!({}));
    observer.join("busy");
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    publisher.join("busy");
    assert_eq!(
        observer.expect(MessageType::Message).json()["type"],
        "userJoined"
    );
    const CLIENTS: usize = 20;
    // The observer reads throughout, as a healthy member does.
    let watcher = std::thread::spawn(move || {
        let mut left = Vec::new();
        let mut joined = 0;
        while left.len() < CLIENTS {
            let value = observer.expect(MessageType::Message).json();
            match value["type"].as_str() {
                Some("userLeft") => left.push(value["connectionId"].as_str().unwrap().to_owned()),
                Some("userJoined") => joined += 1,
                _ => {}
            }
        }
        (observer, left, joined)
    });
    let mut ids = Vec::new();
    for i in 0..CLIENTS {
        let (mut client, hello) = Raw::hello(addr, json!({}));
        client.join("busy");
        ids.push(hello.connection_id);
        // Keep the room busy so the writer is writing when the reset lands,
        // and its reader fails at the same moment.
        for n in 0..200 {
            publisher.publish("busy", json!({"i": i, "n": n, "pad": "x".repeat(256)}));
        }
        if i % 2 == 0 {
            client.reset();
        } else {
            // A FIN in the middle of a frame.
            client.send_raw(&[0, 0, 0, 50, 1, 4]);
            drop(client);
        }
    }
    let (mut observer, mut left, joined) = watcher.join().unwrap();
    assert_eq!(joined, CLIENTS);
    left.sort();
    ids.sort();
    assert_eq!(left, ids, "each disconnect is announced exactly once");
    drop(publisher);
    wait_until("only the observer to remain", || {
        server.counters().connections() == 1
    });
    let (mut probe, hello) = Raw::hello(addr, json!({}));
    let stats = hello.stats.unwrap();
    assert_eq!((stats.connections, stats.rooms), (2, 1));
    observer.send_json(MessageType::LeaveRoom, &json!({"room": "busy"}));
    let left = observer
        .expect_skipping_messages(MessageType::LeaveRoom)
        .json();
    assert_eq!(left["members"], 0);
    assert_eq!(probe.stats().rooms, 0);
}

#[test]
fn shutdown_tells_everyone_and_closes_every_connection() {
    let server = start_server();
    let addr = server.local_addr();
    let mut fresh = Raw::connect(addr);
    let (mut member, _) = Raw::hello(addr, json!({}));
    member.join("r");
    let (mut other, _) = Raw::hello(addr, json!({}));
    other.join("r");
    let counters = server.counters();
    let stopper = std::thread::spawn(move || server.shutdown());
    for client in [&mut fresh, &mut member, &mut other] {
        loop {
            let frame = client.recv();
            if frame.kind == MessageType::Error {
                let error = frame.expect_error();
                assert_eq!(error.code.as_str(), "SHUTTING_DOWN");
                assert!(error.fatal);
                break;
            }
        }
        client.expect_close();
    }
    stopper.join().unwrap();
    assert_eq!(counters.connections(), 0);
    assert_eq!(counters.rooms(), 0);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer listening"
    );
}

#[test]
fn a_member_cut_off_while_quiet_leaves_its_rooms_at_once() {
    let server = start_server();
    let addr = server.local_addr();
    let (mut observer, _) = Raw::hello(addr, json!({}));
    observer.join("flood");
    let (mut stuck, stuck_hello) = Raw::hello(addr, json!({}));
    stuck.join("flood");
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    publisher.join("flood");
    // The stuck member goes quiet for a moment (its reader goes idle), says
    // one more thing, and then never reads again.
    std::thread::sleep(Duration::from_millis(400));
    stuck.send_raw(&raw_frame(MessageType::Heartbeat, Flags::NONE, b""));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut batch = Vec::new();
            while batch.len() < 64 * 1024 {
                batch.extend(json_frame(
                    MessageType::Message,
                    &json!({"room": "flood", "content": "x".repeat(1000)}),
                ));
            }
            // Bounded: 2 GB at most, far more than the queues and buffers hold.
            for _ in 0..30_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                publisher.send_raw(&batch);
            }
        })
    };
    loop {
        let value = observer.expect(MessageType::Message).json();
        if value["type"] == "userLeft" {
            assert_eq!(value["connectionId"], stuck_hello.connection_id.as_str());
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Keep reading so the publisher is never the one held up.
    let drain = std::thread::spawn(move || while observer.next().is_some() {});
    flood.join().unwrap();
    assert_eq!(server.counters().slow_consumers(), 1);
    drop(stuck);
    server.shutdown();
    drain.join().unwrap();
}

#[test]
fn a_slow_consumer_that_keeps_talking_still_gets_its_backlog_and_verdict() {
    use std::io::{Read, Write};
    let server = start_server_with(server::Config {
        stall_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let addr = server.local_addr();
    let (mut member, _) = Raw::hello(addr, json!({}));
    member.join("r");
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    publisher.join("r");
    let mut publisher_input = publisher.stream().try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sink = vec![0u8; 65536];
        while matches!(publisher_input.read(&mut sink), Ok(n) if n > 0) {}
    });
    let flood = std::thread::spawn(move || {
        let big = "x".repeat(32 * 1024);
        for n in 0..800 {
            let bytes = json_frame(
                MessageType::Message,
                &json!({"room": "r", "content": [n, big]}),
            );
            if publisher.stream().write_all(&bytes).is_err() {
                break;
            }
        }
        publisher
    });
    // The member falls behind until it is cut off...
    wait_until("the member to be cut off", || {
        server.counters().slow_consumers() == 1
    });
    // ...then reads its backlog slowly while sending HEARTBEATs, as a
    // client should: the server must not reset the connection on it.
    let mut talker = member.stream().try_clone().unwrap();
    let heartbeats = std::thread::spawn(move || {
        let frame = raw_frame(MessageType::Heartbeat, Flags::NONE, b"");
        while talker.write_all(&frame).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut next = 0u64;
    let verdict = loop {
        let frame = member.recv();
        match frame.kind {
            MessageType::Message => {
                let value = frame.json();
                if value.get("type").is_none() {
                    assert_eq!(value["content"][0], next, "gap in the backlog");
                    next += 1;
                    // About 3 MB/s: the backlog takes seconds to read, so
                    // much is still in flight when the server is done.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            MessageType::Heartbeat => {}
            _ => break frame.expect_error(),
        }
    };
    assert_eq!(verdict.code.as_str(), "SLOW_CONSUMER");
    member.expect_close();
    drop(member);
    heartbeats.join().unwrap();
    drop(flood.join().unwrap());
}
