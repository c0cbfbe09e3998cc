//! What TLS costs, plain TCP beside TLS in the same run, on one in-process
//! server: fan-out 1 → 100 (deliveries per second) and round-trip latency
//! (one publisher, one member, p50 and p99). A measurement, not a test:
//!
//! ```text
//! cargo run --release -p server --example tls_cost [-- MESSAGES]
//! ```

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use protocol::MessageType;
use serde_json::json;
use server::{Config, TlsConfig};
use testkit::tls::{TempDir, TestCa, TlsClient, client_config};
use testkit::{OwnedFrame, Raw, push_json};

const MEMBERS: usize = 100;

/// One client, over either transport.
enum Client {
    Plain(Raw),
    Tls(Box<TlsClient>),
}

impl Client {
    fn open(plain: bool, addr: SocketAddr, ca: &str) -> Client {
        if plain {
            Client::Plain(Raw::hello(addr, json!({})).0)
        } else {
            Client::Tls(Box::new(
                TlsClient::hello(addr, client_config(ca, None), json!({})).0,
            ))
        }
    }

    fn join(&mut self, room: &str) {
        match self {
            Client::Plain(c) => drop(c.join(room)),
            Client::Tls(c) => drop(c.join(room)),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Client::Plain(c) => c.send_raw(bytes),
            Client::Tls(c) => c.send_raw(bytes),
        }
    }

    fn recv(&mut self) -> OwnedFrame {
        match self {
            Client::Plain(c) => c.expect(MessageType::Message),
            Client::Tls(c) => c.expect(MessageType::Message),
        }
    }

    /// The next delivery, skipping membership events.
    fn delivery(&mut self) -> OwnedFrame {
        loop {
            let frame = self.recv();
            if !frame.payload.starts_with(b"{\"type\"") {
                return frame;
            }
        }
    }
}

fn fan_out(plain: bool, addr: SocketAddr, ca: &str, messages: usize) -> f64 {
    let room = if plain { "fan-plain" } else { "fan-tls" };
    let start = Arc::new(Barrier::new(MEMBERS + 1));
    let members: Vec<_> = (0..MEMBERS)
        .map(|_| {
            let mut member = Client::open(plain, addr, ca);
            member.join(room);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..messages {
                    member.delivery();
                }
                Instant::now()
            })
        })
        .collect();
    let mut publisher = Client::open(plain, addr, ca);
    publisher.join(room);
    start.wait();
    let began = Instant::now();
    let mut batch = Vec::new();
    for seq in 0..messages {
        push_json(
            &mut batch,
            MessageType::Message,
            &json!({"room": room, "content": {"seq": seq, "pad": "x".repeat(64)}}),
        );
        if batch.len() >= 16 * 1024 {
            publisher.send(&batch);
            batch.clear();
        }
    }
    publisher.send(&batch);
    let ended = members
        .into_iter()
        .map(|m| m.join().unwrap())
        .max()
        .unwrap();
    (messages * MEMBERS) as f64 / (ended - began).as_secs_f64()
}

fn latency(plain: bool, addr: SocketAddr, ca: &str, rounds: usize) -> (Duration, Duration) {
    let room = if plain { "ping-plain" } else { "ping-tls" };
    let mut member = Client::open(plain, addr, ca);
    member.join(room);
    let mut publisher = Client::open(plain, addr, ca);
    publisher.join(room);
    member.recv(); // publisher joined
    let mut times = Vec::with_capacity(rounds);
    let mut frame = Vec::new();
    for seq in 0..rounds {
        frame.clear();
        push_json(
            &mut frame,
            MessageType::Message,
            &json!({"room": room, "content": {"seq": seq}}),
        );
        let sent = Instant::now();
        publisher.send(&frame);
        member.delivery();
        times.push(sent.elapsed());
    }
    times.sort();
    (times[rounds / 2], times[rounds * 99 / 100])
}

fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let dir = TempDir::new("tls-cost");
    let ca = TestCa::new("bench CA");
    let issued = ca.server("bench");
    let server = testkit::start_server_with(Config {
        tls: Some(Box::new(TlsConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: dir.write("cert.pem", &issued.cert_pem),
            key: dir.write("key.pem", &issued.key_pem),
            client_ca: None,
            handshake_timeout: Duration::from_secs(10),
        })),
        ..Config::default()
    });
    let ca = ca.pem();
    let (plain_addr, tls_addr) = (server.local_addr(), server.tls_addr().unwrap());
    for round in 0..2 {
        let plain = fan_out(true, plain_addr, &ca, messages);
        let tls = fan_out(false, tls_addr, &ca, messages);
        println!(
            "round {round}: fan-out 1→{MEMBERS}, {messages} messages: plain {:.0} deliveries/s, TLS {:.0} deliveries/s (TLS/plain {:.2})",
            plain,
            tls,
            tls / plain
        );
    }
    let (p50, p99) = latency(true, plain_addr, &ca, 5000);
    println!("latency plain: p50 {p50:?}, p99 {p99:?}");
    let (p50, p99) = latency(false, tls_addr, &ca, 5000);
    println!("latency TLS:   p50 {p50:?}, p99 {p99:?}");
}
