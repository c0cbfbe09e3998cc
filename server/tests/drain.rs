//! The lame-duck drain as clients see it (SPEC.md 5.9): the server stops
//! accepting at once, every client gets SHUTTING_DOWN with a
//! `retryAfterMs`, and the closes are spread over the drain timeout.

#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protocol::{ErrorPayload, MessageType};
use serde_json::json;
use server::Config;
use server::auth::{AuthConfig, TokenTable};
use testkit::{Raw, WAIT, start_server_with, wait_until};

/// `count` clients, each in a room, each on its own thread that sends back
/// the SHUTTING_DOWN it gets and when, after checking the close follows.
fn clients(addr: std::net::SocketAddr, count: usize) -> mpsc::Receiver<(Instant, ErrorPayload)> {
    let (tx, rx) = mpsc::channel();
    for i in 0..count {
        let (mut client, _) = Raw::hello(addr, json!({"userId": format!("u{i}")}));
        client.join("lobby");
        let tx = tx.clone();
        std::thread::spawn(move || {
            let error = client
                .expect_skipping_messages(MessageType::Error)
                .expect_error();
            let at = Instant::now();
            client.expect_close();
            let _ = tx.send((at, error));
        });
    }
    rx
}

fn shutting_down_hints(
    rx: &mpsc::Receiver<(Instant, ErrorPayload)>,
    count: usize,
) -> Vec<(Instant, ErrorPayload)> {
    (0..count)
        .map(|_| rx.recv_timeout(WAIT).expect("a client was never told"))
        .inspect(|(_, error)| {
            assert_eq!(error.code.as_str(), "SHUTTING_DOWN", "{error:?}");
            assert!(error.fatal, "{error:?}");
        })
        .collect()
}

#[test]
fn a_drain_stops_accepting_at_once_and_spreads_the_closes_over_its_timeout() {
    const CLIENTS: usize = 20;
    let window = Duration::from_secs(2);
    let server = start_server_with(Config {
        drain_timeout: window,
        ..Default::default()
    });
    let addr = server.local_addr();
    let rx = clients(addr, CLIENTS);
    assert!(server.accepting());

    let start = Instant::now();
    server.shutdown_handle().drain();
    assert!(
        !server.accepting(),
        "readiness must fail as the drain begins"
    );
    wait_until("the listening socket to close", || {
        TcpStream::connect(addr).is_err()
    });

    let told = shutting_down_hints(&rx, CLIENTS);
    let after: Vec<Duration> = told.iter().map(|(at, _)| *at - start).collect();
    // The i-th close is due at window·i/n and never sent early, so half
    // the clients are told after 0.9 s whatever the machine's load.
    let late = after
        .iter()
        .filter(|d| **d >= window / 2 - window / 20)
        .count();
    assert!(late >= CLIENTS / 2, "the closes were not spread: {after:?}");
    assert!(
        after.iter().all(|d| *d < window + Duration::from_secs(10)),
        "a close came long after the drain timeout: {after:?}"
    );
    let hints: Vec<u64> = told
        .iter()
        .map(|(_, error)| {
            error
                .retry_after_ms
                .expect("SHUTTING_DOWN without retryAfterMs")
        })
        .collect();
    assert!(
        hints.iter().all(|&ms| (1000..3000).contains(&ms)),
        "hints outside [1000, 1000 + drain timeout): {hints:?}"
    );
    let mut distinct = hints.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > 1, "every hint the same: {hints:?}");
    server.shutdown();
}

#[test]
fn a_stop_during_a_drain_tells_everyone_left_at_once() {
    const CLIENTS: usize = 5;
    let server = start_server_with(Config {
        // Far longer than the test waits: only the hurry ends it in time.
        drain_timeout: Duration::from_secs(3600),
        ..Default::default()
    });
    let rx = clients(server.local_addr(), CLIENTS);
    let handle = server.shutdown_handle();
    handle.drain();
    // The first is told at once; the rest are due much later.
    let (_, first) = rx
        .recv_timeout(WAIT)
        .expect("the first client was not told");
    assert_eq!(first.code.as_str(), "SHUTTING_DOWN");
    handle.shutdown();
    let rest = shutting_down_hints(&rx, CLIENTS - 1);
    assert_eq!(rest.len(), CLIENTS - 1);
    server.shutdown();
}

#[test]
fn a_drain_of_zero_tells_everyone_together_with_the_least_hint() {
    let server = start_server_with(Config {
        drain_timeout: Duration::ZERO,
        ..Default::default()
    });
    let rx = clients(server.local_addr(), 3);
    server.shutdown_handle().drain();
    for (_, error) in shutting_down_hints(&rx, 3) {
        assert_eq!(error.retry_after_ms, Some(1000), "{error:?}");
    }
}

#[test]
fn replacing_the_tokens_reaches_the_server_for_new_hellos() {
    let table = TokenTable::parse("drain-test-token-old-0123456789 old\n", "tokens").unwrap();
    let server = start_server_with(Config {
        auth: AuthConfig {
            tokens: Some(table.clone()),
            jwt: None,
        },
        ..Default::default()
    });
    let addr = server.local_addr();
    let (mut kept, _) = Raw::hello(addr, json!({"token": "drain-test-token-old-0123456789"}));

    let new = TokenTable::parse("drain-test-token-new-0123456789 new\n", "tokens").unwrap();
    table.replace(&new);

    let (mut fresh, _) = Raw::hello(addr, json!({"token": "drain-test-token-new-0123456789"}));
    assert_eq!(fresh.join("r")["status"], "joined");
    let mut removed = Raw::connect(addr);
    removed.send_json(
        MessageType::Hello,
        &json!({"token": "drain-test-token-old-0123456789"}),
    );
    removed.expect_fatal("AUTH_FAILED");
    // An open connection keeps who it is.
    assert_eq!(kept.join("r")["status"], "joined");
}
