//! The CLI's side of rooms with an order (SPEC.md 3.13–3.16, 5.11):
//! `sub --history`, gap lines, `seq`/`epoch` in `--json`, `/who` by WHO,
//! `/join --history` and `/msg`, against a real in-process server.

mod support;

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use client::{Event, Recipient};
use support::cli::{Live, STDERR, relay, run_script, wait_exit};
use support::{expect_event, login};
use testkit::{WAIT, start_server_with, with_history};

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

/// The next line of standard output, as JSON. Standard error's lines come
/// through another pipe, in no fixed order with these, and are skipped.
fn next_json(live: &mut Live) -> serde_json::Value {
    loop {
        let line = live.next_line();
        if !line.starts_with(STDERR) {
            return json(&line);
        }
    }
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
    let first = next_json(&mut sub);
    let second = next_json(&mut sub);
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
    let live = next_json(&mut sub);
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
    let first = next_json(&mut machine);
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

/// A TCP proxy in front of a server that the test can cut: `cut` ends the
/// connections through it and refuses new ones until `open`, so messages
/// published meanwhile can only reach a client by recovery.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let open = Arc::new(AtomicBool::new(true));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (gate, kept) = (Arc::clone(&open), Arc::clone(&streams));
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if !gate.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                for pair in pairs {
                    if let (Ok(mut from), Ok(mut to)) = pair {
                        thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                kept.push(client);
                kept.push(server);
            }
        });
        Proxy {
            addr,
            open,
            streams,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for stream in streams.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_reconnect_recovers_what_was_missed_with_no_gap_and_no_duplicate() {
    let server = start_server_with(with_history(100));
    let proxy = Proxy::start(server.local_addr());
    let publisher = publish(server.local_addr(), "feed", 1..=2);
    let mut sub = Live::spawn(relay(
        proxy.addr,
        &[
            "--reconnect",
            "sub",
            "feed",
            "--history",
            "2",
            "-n",
            "5",
            "--json",
        ],
    ));
    let mut seqs = Vec::new();
    for _ in 0..2 {
        seqs.push(next_json(&mut sub)["seq"].as_u64());
    }
    proxy.cut();
    sub.expect("; reconnecting");
    for n in 3..=4u64 {
        publisher
            .send_and_wait_ack("feed", &n, WAIT)
            .expect("the server accepts it");
    }
    proxy.open();
    publisher
        .send_and_wait_ack("feed", &5, WAIT)
        .expect("the server accepts it");
    while seqs.len() < 5 {
        let line = next_json(&mut sub);
        assert_ne!(line["type"], "gap", "nothing was lost: {line}");
        seqs.push(line["seq"].as_u64());
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5].map(Some));
    assert_eq!(wait_exit(&mut sub.child).code(), Some(0));
}

#[test]
fn a_restarted_server_is_said_to_have_lost_the_earlier_messages() {
    let first = start_server_with(with_history(100));
    let addr = first.local_addr();
    let publisher = publish(addr, "feed", 1..=1);
    let mut sub = Live::spawn(relay(addr, &["--reconnect", "sub", "feed", "-n", "2"]));
    sub.expect("subscribed to");
    publisher
        .send_and_wait_ack("feed", &2, WAIT)
        .expect("the server accepts it");
    sub.expect(": 2");
    drop(publisher);
    first.shutdown();
    let second = server::Server::bind(server::Config {
        addr,
        ..with_history(100)
    })
    .expect("bind the same port again")
    .spawn()
    .expect("start the second server");
    sub.expect("[feed] history restarted: earlier messages are gone");
    let publisher = login(addr, "pub");
    publisher.join_and_wait("feed", WAIT).expect("join");
    publisher.send_text("feed", "after").expect("send");
    sub.expect(": after");
    assert_eq!(wait_exit(&mut sub.child).code(), Some(0));
    drop(second);
}

#[test]
fn pub_counts_acks_and_the_json_summary_gives_their_seqs_and_members() {
    let server = start_server_with(with_history(0));
    let addr = server.local_addr();
    let watcher = login(addr, "watcher");
    watcher.join_and_wait("r", WAIT).expect("join");
    let (status, out, err) = support::cli::run_with_input(
        relay(addr, &["pub", "r", "-", "--json"]),
        b"\"one\"\n2\n{\"three\": 3}\n",
    );
    assert_eq!(status.code(), Some(0), "{err}");
    let summary = json(out.trim());
    assert_eq!(summary["accepted"], 3, "{summary}");
    assert_eq!(summary["acked"], 3, "{summary}");
    assert_eq!(summary["firstSeq"], 1, "{summary}");
    assert_eq!(summary["lastSeq"], 3, "{summary}");
    // Queued for the watcher; the publisher, without --echo, gets none.
    assert_eq!(summary["members"], 1, "{summary}");
}
