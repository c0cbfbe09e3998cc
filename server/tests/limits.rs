//! Limits against abuse (SPEC.md 11.4): rate limits per connection, the
//! per-address connection cap, and reaping clients that stop reading (over
//! plain TCP and over TLS).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::{ErrorCode, Flags, MessageType, RequestId};
use serde_json::json;
use server::{Config, RateLimits, RunningServer, TlsConfig};
use testkit::tls::{TempDir, TestCa, TlsClient, client_config};
use testkit::{Raw, json_frame, raw_frame, start_server_with, wait_until};

fn heartbeat(len: usize) -> Vec<u8> {
    raw_frame(MessageType::Heartbeat, Flags::BINARY, &vec![7u8; len])
}

fn join(id: i64) -> Vec<u8> {
    json_frame(MessageType::JoinRoom, &json!({"room": "r", "id": id}))
}

fn closes(server: &RunningServer, name: &str) -> u64 {
    server
        .counters()
        .closes()
        .into_iter()
        .find(|(kind, _)| *kind == name)
        .map_or(0, |(_, n)| n)
}

#[test]
fn a_client_within_its_rate_is_never_limited() {
    let server = start_server_with(Config {
        rates: RateLimits::new(200, 200_000, Duration::from_secs(1)),
        ..Default::default()
    });
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    // The burst: 150 frames at once.
    let burst: Vec<u8> = (0..150).flat_map(|_| heartbeat(100)).collect();
    client.send_raw(&burst);
    for _ in 0..150 {
        client.expect(MessageType::Heartbeat);
    }
    // Then well within the rate: 100 frames a second (the pacing is the
    // client's rate, not a wait for the server).
    for _ in 0..100 {
        client.send_raw(&heartbeat(100));
        client.expect(MessageType::Heartbeat);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.counters().errors_sent(ErrorCode::RateLimited), 0);
}

#[test]
fn over_the_frame_rate_a_request_is_refused_with_its_id_and_the_connection_carries_on() {
    let server = start_server_with(Config {
        rates: RateLimits::new(10, 0, Duration::from_secs(1)),
        ..Default::default()
    });
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    // The HELLO took one of 10 frames; 12 JOINs at once: 9 fit.
    let joins: Vec<u8> = (1..=12).flat_map(join).collect();
    client.send_raw(&joins);
    let mut answered = Vec::new();
    let mut refused = Vec::new();
    let mut longest_wait = 0;
    while answered.len() + refused.len() < 12 {
        let frame = client.recv();
        if frame.kind == MessageType::JoinRoom {
            answered.push(frame.json()["id"].as_i64().unwrap());
            continue;
        }
        let error = frame.expect_error();
        assert_eq!(error.code, ErrorCode::RateLimited, "{error:?}");
        assert!(!error.fatal, "{error:?}");
        assert_eq!(error.room.as_deref(), Some("r"), "{error:?}");
        let wait = error.retry_after_ms.expect("retryAfterMs");
        assert!((1..=100).contains(&wait), "retryAfterMs {wait}");
        longest_wait = longest_wait.max(wait);
        let Some(RequestId::Number(id)) = error.id else {
            panic!("the refused request's id: {error:?}");
        };
        refused.push(id);
    }
    assert_eq!(
        answered[..9],
        (1..=9).collect::<Vec<_>>(),
        "the first 9 fit"
    );
    assert_eq!(refused[0], 10, "the first refusal is the 10th JOIN");
    // Every request got exactly one answer, in order.
    let mut all: Vec<_> = answered.iter().chain(&refused).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=12).collect::<Vec<_>>());
    assert_eq!(
        server.counters().errors_sent(ErrorCode::RateLimited),
        refused.len() as u64
    );
    // Waiting as told, the connection works again.
    std::thread::sleep(Duration::from_millis(longest_wait));
    client.send_raw(&join(99));
    let answer = client.expect(MessageType::JoinRoom).json();
    assert_eq!(answer["id"], 99);
}

#[test]
fn over_the_byte_rate_a_heartbeat_is_refused_and_the_connection_carries_on() {
    let server = start_server_with(Config {
        max_frame: 4096,
        rates: RateLimits::new(0, 10_000, Duration::from_secs(1)),
        ..Default::default()
    });
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    // 3 frames of 3007 bytes fit in 10,000 with the HELLO; a fourth does not.
    let four: Vec<u8> = (0..4).flat_map(|_| heartbeat(3000)).collect();
    client.send_raw(&four);
    for _ in 0..3 {
        client.expect(MessageType::Heartbeat);
    }
    let error = client.expect_error("RATE_LIMITED");
    assert!(!error.fatal);
    assert_eq!(
        (error.room, error.id),
        (None, None),
        "a HEARTBEAT has neither"
    );
    let wait = error.retry_after_ms.expect("retryAfterMs");
    // About 2037 bytes short at 10,000 a second.
    assert!((150..=310).contains(&wait), "retryAfterMs {wait}");
    std::thread::sleep(Duration::from_millis(wait));
    client.send_raw(&heartbeat(3000));
    assert_eq!(client.expect(MessageType::Heartbeat).payload.len(), 3000);
}

#[test]
fn a_client_flooding_past_every_retry_is_cut_with_a_fatal_rate_limited() {
    let server = start_server_with(Config {
        rates: RateLimits::new(20, 0, Duration::from_millis(100)),
        ..Default::default()
    });
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let mut stream = client.stream().try_clone().unwrap();
        stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
        std::thread::spawn(move || {
            let chunk: Vec<u8> = (0..256).flat_map(|_| heartbeat(0)).collect();
            // Writes until the server closes, or the test is done.
            while !stop.load(Ordering::Relaxed) {
                match stream.write(&chunk) {
                    Ok(n) => {
                        sent.fetch_add((n / 7) as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        })
    };
    let started = Instant::now();
    let mut refusals = 0u64;
    let fatal = loop {
        let frame = client.recv();
        if frame.kind == MessageType::Heartbeat {
            continue;
        }
        let error = frame.expect_error();
        assert_eq!(error.code, ErrorCode::RateLimited, "{error:?}");
        if error.fatal {
            break error;
        }
        assert!(error.retry_after_ms.is_some());
        refusals += 1;
    };
    let streak = started.elapsed();
    assert!(fatal.retry_after_ms.is_none(), "{fatal:?}");
    client.expect_close();
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    assert!(
        streak >= Duration::from_secs(5),
        "fatal after only {streak:?}"
    );
    // Refusals come at most once a pause: the flood is not amplified.
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        refusals * 10 < sent,
        "{refusals} refusals for {sent} frames sent"
    );
    wait_until("the connection to close", || {
        server.counters().connections() == 0
    });
    assert_eq!(closes(&server, "protocol_error"), 1);
}

#[test]
fn the_per_address_cap_refuses_one_more_and_admits_again_after_a_close() {
    let server = start_server_with(Config {
        max_connections_per_ip: 2,
        ..Default::default()
    });
    let addr = server.local_addr();
    let (first, _) = Raw::hello(addr, json!({}));
    let (mut second, _) = Raw::hello(addr, json!({}));
    let mut third = Raw::connect(addr);
    let error = third.expect_error("SERVER_FULL");
    assert!(error.fatal);
    assert!(
        error.message.contains("at most 2 per address"),
        "{}",
        error.message
    );
    third.expect_close();
    assert_eq!(
        server.counters().connections(),
        2,
        "the third never counted"
    );
    drop(first);
    wait_until("the first connection to close", || {
        server.counters().connections() == 1
    });
    let (mut fourth, _) = Raw::hello(addr, json!({}));
    fourth.join("r");
    second.join("r");
    assert_eq!(server.counters().errors_sent(ErrorCode::ServerFull), 1);
}

#[test]
fn a_client_that_never_reads_is_reaped_within_the_write_timeout() {
    let write_timeout = Duration::from_secs(2);
    let server = start_server_with(Config {
        write_timeout,
        ..Default::default()
    });
    let (mut client, _) = Raw::hello(server.local_addr(), json!({}));
    // Three big HEARTBEATs whose echoes it never reads: less than its
    // queue holds, so it is never a slow consumer.
    let payload = 1024 * 1024 - 3;
    let started = Instant::now();
    for _ in 0..3 {
        client.send_raw(&heartbeat(payload));
    }
    let sent = Instant::now();
    wait_until("the non-reader to be cut", || {
        server.counters().connections() == 0
    });
    // It stopped taking bytes after it started sending, and no later than
    // its last frame: the cut is one write timeout after that, give or take
    // a check interval and a second of housekeeping.
    let (from_start, from_last) = (started.elapsed(), sent.elapsed());
    eprintln!("non-reader cut {from_last:?} after its last frame");
    assert!(
        from_start >= write_timeout && from_last <= write_timeout * 3,
        "cut {from_last:?} after its last frame, with a {write_timeout:?} write timeout"
    );
    assert_eq!(closes(&server, "write_timeout"), 1);
    assert_eq!(server.counters().slow_consumers(), 0);
    drop(client);
}

#[test]
fn a_trickling_reader_after_a_slow_consumer_cut_is_gone_within_the_write_timeout() {
    let write_timeout = Duration::from_secs(2);
    let server = start_server_with(Config {
        write_timeout,
        stall_timeout: Duration::from_millis(100),
        max_frame: 4096,
        queue_bytes: 16 * 1024,
        ..Default::default()
    });
    let addr = server.local_addr();
    let (mut trickler, _) = Raw::hello(addr, json!({}));
    trickler.join("r");
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    publisher.join("r");
    // Far more than the trickler's queue and socket buffers hold.
    let pad = "p".repeat(1000);
    let batch: Vec<u8> = (0..512)
        .flat_map(|seq| {
            json_frame(
                MessageType::Message,
                &json!({"room": "r", "content": {"seq": seq, "pad": pad}}),
            )
        })
        .collect();
    while server.counters().slow_consumers() == 0 {
        publisher.send_raw(&batch);
    }
    let cut = Instant::now();
    // Reads a little at a time, for as long as the server lets it.
    let mut stream: TcpStream = trickler.stream().try_clone().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut received = 0usize;
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
        assert!(
            cut.elapsed() < write_timeout * 3,
            "still connected {:?} after the cut, {received} bytes read",
            cut.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_until("the trickler's connection to close", || {
        server.counters().connections() == 1
    });
    eprintln!(
        "trickler gone {:?} after the cut, {received} bytes read",
        cut.elapsed()
    );
    assert!(
        cut.elapsed() < write_timeout * 3,
        "closed {:?} after the cut",
        cut.elapsed()
    );
    drop(trickler);
}

#[test]
fn a_tls_client_that_never_reads_is_reaped_within_the_write_timeout() {
    let write_timeout = Duration::from_secs(2);
    let dir = TempDir::new("limits-tls");
    let ca = TestCa::new("Relay test CA");
    let issued = ca.server("limits");
    let server = start_server_with(Config {
        write_timeout,
        tls: Some(Box::new(TlsConfig {
            addr: ([127, 0, 0, 1], 0).into(),
            cert: dir.write("cert.pem", &issued.cert_pem),
            key: dir.write("key.pem", &issued.key_pem),
            client_ca: None,
            handshake_timeout: Duration::from_secs(30),
        })),
        ..Default::default()
    });
    let addr = server.tls_addr().unwrap();
    let (mut client, _) = TlsClient::hello(addr, client_config(&ca.pem(), None), json!({}));
    let started = Instant::now();
    for _ in 0..3 {
        client.send_raw(&heartbeat(1024 * 1024 - 3));
    }
    let sent = Instant::now();
    wait_until("the TLS non-reader to be cut", || {
        server.counters().connections() == 0
    });
    let (from_start, from_last) = (started.elapsed(), sent.elapsed());
    eprintln!("TLS non-reader cut {from_last:?} after its last frame");
    assert!(
        from_start >= write_timeout && from_last <= write_timeout * 3,
        "cut {from_last:?} after its last frame, with a {write_timeout:?} write timeout"
    );
    assert_eq!(closes(&server, "write_timeout"), 1);
    drop(client);
}
