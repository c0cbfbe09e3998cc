//! The TLS port (SPEC.md 11.3) against a real server: clients chatting over
//! TLS and with plain clients, byte for byte; a plain client on the TLS
//! port; the handshake timeout; a certificate reloaded under live
//! connections; mutual TLS; large frames, a slow consumer and a shutdown
//! whose final ERROR arrives over TLS. Certificates are made in the test.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::MessageType;
use rustls::ClientConfig;
use serde_json::json;
use server::{Config, RunningServer, TlsConfig};
use testkit::tls::{Issued, TempDir, TestCa, TlsClient, client_config};
use testkit::{Raw, RecvError, WAIT, start_server_with, wait_until};

/// A server with a TLS port, its CA and its certificate files.
struct Tls {
    server: RunningServer,
    ca: TestCa,
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    fn start(client_ca: Option<&TestCa>, handshake_timeout: Duration, config: Config) -> Tls {
        let dir = TempDir::new("tls-test");
        let ca = TestCa::new("Relay test CA");
        let issued = ca.server("first");
        let cert = dir.write("cert.pem", &issued.cert_pem);
        let key = dir.write("key.pem", &issued.key_pem);
        let client_ca = client_ca.map(|ca| dir.write("client-ca.pem", ca.pem()));
        let server = start_server_with(Config {
            tls: Some(Box::new(TlsConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                cert: cert.clone(),
                key: key.clone(),
                client_ca,
                handshake_timeout,
            })),
            ..config
        });
        Tls {
            server,
            ca,
            dir,
            cert,
            key,
        }
    }

    fn plain() -> Tls {
        Tls::start(None, Duration::from_secs(30), Config::default())
    }

    fn addr(&self) -> SocketAddr {
        self.server.tls_addr().unwrap()
    }

    fn trust(&self) -> Arc<ClientConfig> {
        client_config(&self.ca.pem(), None)
    }

    fn hello(&self, user: &str) -> TlsClient {
        TlsClient::hello(self.addr(), self.trust(), json!({ "userId": user })).0
    }

    /// Replaces the certificate files (not yet reloaded).
    fn replace_files(&self, issued: &Issued) {
        std::fs::write(&self.cert, &issued.cert_pem).unwrap();
        std::fs::write(&self.key, &issued.key_pem).unwrap();
    }
}

/// Whether the server refuses a TLS client with `config`: the handshake
/// fails, or (TLS 1.3, where a client learns of a refused certificate
/// only at its first read) the HELLO gets no answer but the close.
fn refused(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    let Ok(mut client) = TlsClient::connect(addr, config) else {
        return true;
    };
    if client
        .try_send_raw(&testkit::json_frame(MessageType::Hello, &json!({})))
        .is_err()
    {
        return true;
    }
    match client.recv(WAIT) {
        Ok(frame) => panic!("a refused client got {} {}", frame.kind, frame.text()),
        Err(RecvError::Timeout) => panic!("a refused client was neither answered nor closed"),
        Err(_) => true,
    }
}

/// Reads raw bytes until the server closes; returns them and how long the
/// close took. Panics after [`WAIT`].
fn raw_until_close(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    (got, started.elapsed())
}

fn closes(server: &RunningServer, name: &str) -> u64 {
    server
        .counters()
        .closes()
        .into_iter()
        .find(|&(n, _)| n == name)
        .unwrap()
        .1
}

#[test]
fn two_tls_clients_chat() {
    let tls = Tls::plain();
    let mut ann = tls.hello("ann");
    let mut bob = tls.hello("bob");
    ann.join("lobby");
    bob.join("lobby");
    // Ann sees Bob arrive.
    let joined = ann.expect(MessageType::Message).json();
    assert_eq!(joined["type"], "userJoined");
    bob.publish("lobby", json!({"text": "hi ann"}));
    let delivery = ann.expect(MessageType::Message).json();
    assert_eq!(delivery["user"], "bob");
    assert_eq!(delivery["content"]["text"], "hi ann");
    ann.publish("lobby", json!({"text": "hi bob"}));
    assert_eq!(
        bob.expect(MessageType::Message).json()["content"]["text"],
        "hi bob"
    );
    assert_eq!(tls.server.counters().tls_handshake_failures(), 0);
}

#[test]
fn a_plain_and_a_tls_client_share_a_room_and_get_the_same_bytes() {
    let tls = Tls::plain();
    let plain_addr = tls.server.local_addr();
    let (mut pat, _) = Raw::hello(plain_addr, json!({"userId": "pat"}));
    let (mut wil, _) = Raw::hello(plain_addr, json!({"userId": "wil"}));
    let mut sam = tls.hello("sam");
    let mut wes = tls.hello("wes");
    pat.join("mixed");
    wil.join("mixed");
    sam.join("mixed");
    wes.join("mixed");

    // The same delivery, byte for byte, on both transports.
    sam.publish("mixed", json!({"text": "from TLS", "n": [1, 2, 3]}));
    let over_tcp = raw_delivery(&mut pat);
    let over_tls = tls_delivery(&mut wes);
    assert_eq!(over_tcp.flags, over_tls.flags);
    assert_eq!(over_tcp.payload, over_tls.payload);
    assert_eq!(over_tcp.json()["content"]["text"], "from TLS");
    assert_eq!(raw_delivery(&mut wil).payload, over_tls.payload);

    pat.publish("mixed", json!({"text": "from TCP"}));
    let over_tls = tls_delivery(&mut sam);
    let over_tcp = raw_delivery(&mut wil);
    assert_eq!(over_tcp.payload, over_tls.payload);
    assert_eq!(over_tls.json()["user"], "pat");
    assert_eq!(tls_delivery(&mut wes).payload, over_tcp.payload);
}

/// The next delivery, skipping membership events.
fn raw_delivery(client: &mut Raw) -> testkit::OwnedFrame {
    loop {
        let frame = client.expect(MessageType::Message);
        if frame.json().get("type").is_none() {
            return frame;
        }
    }
}

fn tls_delivery(client: &mut TlsClient) -> testkit::OwnedFrame {
    loop {
        let frame = client.expect(MessageType::Message);
        if frame.json().get("type").is_none() {
            return frame;
        }
    }
}

#[test]
fn a_plain_client_on_the_tls_port_is_closed_at_once() {
    // A handshake timeout far longer than the test may wait: the close must
    // come from rustls refusing the bytes, not from the timeout.
    let tls = Tls::start(None, Duration::from_secs(600), Config::default());
    let mut stream = TcpStream::connect(tls.addr()).unwrap();
    stream
        .write_all(&testkit::json_frame(
            MessageType::Hello,
            &json!({"userId": "x"}),
        ))
        .unwrap();
    let (got, _) = raw_until_close(&mut stream);
    // At most a TLS alert record (content type 21), never a frame.
    assert!(got.is_empty() || got[0] == 21, "got {got:?}");
    wait_until("the failure counted", || {
        tls.server.counters().tls_handshake_failures() == 1
    });
    wait_until("the close counted", || {
        closes(&tls.server, "tls_handshake") == 1
    });
    // The plain port is unaffected.
    let (_plain, reply) = Raw::hello(tls.server.local_addr(), json!({}));
    assert!(!reply.connection_id.is_empty());
}

#[test]
fn a_silent_or_trickling_client_is_cut_at_the_handshake_timeout() {
    let tls = Tls::start(None, Duration::from_secs(1), Config::default());
    // Says nothing at all.
    let mut silent = TcpStream::connect(tls.addr()).unwrap();
    // Sends half a ClientHello and stops.
    let mut hello = Vec::new();
    let mut client = rustls::ClientConnection::new(
        tls.trust(),
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    client.write_tls(&mut hello).unwrap();
    let mut trickler = TcpStream::connect(tls.addr()).unwrap();
    trickler.write_all(&hello[..hello.len() / 2]).unwrap();

    let (got, took) = raw_until_close(&mut silent);
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
    assert!(got.is_empty() || got[0] == 21, "got {got:?}");
    raw_until_close(&mut trickler);
    wait_until("both failures counted", || {
        tls.server.counters().tls_handshake_failures() == 2
    });
    wait_until("both closes counted", || {
        closes(&tls.server, "tls_handshake") == 2
    });
    assert_eq!(tls.server.counters().connections(), 0);
    // A real client still gets in.
    let mut ann = tls.hello("ann");
    ann.join("r");
}

#[test]
fn a_reloaded_certificate_serves_new_handshakes_while_old_connections_chat_on() {
    let tls = Tls::plain();
    let mut ann = tls.hello("ann");
    let mut bob = tls.hello("bob");
    ann.join("r");
    bob.join("r");
    ann.expect(MessageType::Message);

    let second_ca = TestCa::new("Second CA");
    tls.replace_files(&second_ca.server("second"));
    let reloader = tls.server.tls_reloader().unwrap();
    reloader.reload().unwrap();

    // Old connections keep their session and keep chatting.
    ann.publish("r", json!({"after": "reload"}));
    assert_eq!(
        bob.expect(MessageType::Message).json()["content"]["after"],
        "reload"
    );
    // New handshakes see the new certificate: trusted by the new CA only.
    let second = client_config(&second_ca.pem(), None);
    let (mut cid, _) = TlsClient::hello(tls.addr(), Arc::clone(&second), json!({"userId": "cid"}));
    assert!(
        refused(tls.addr(), tls.trust()),
        "the old certificate is still served"
    );
    cid.join("r");
    bob.publish("r", json!({"to": "everyone"}));
    assert_eq!(tls_delivery(&mut cid).json()["content"]["to"], "everyone");

    // A broken reload changes nothing: the error names the flag, and the
    // second certificate stays in force.
    std::fs::write(&tls.key, "not a key").unwrap();
    let error = reloader.reload().unwrap_err();
    assert_eq!(error.flag, "tls-key");
    assert!(error.to_string().contains("no private key"), "{error}");
    let (_dan, _) = TlsClient::hello(tls.addr(), second, json!({"userId": "dan"}));
    ann.publish("r", json!({"still": "here"}));
    assert_eq!(tls_delivery(&mut bob).json()["content"]["still"], "here");
    drop(tls.dir);
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_from_its_ca() {
    let clients = TestCa::new("Client CA");
    let tls = Tls::start(Some(&clients), Duration::from_secs(30), Config::default());
    let ca = tls.ca.pem();

    assert!(
        refused(tls.addr(), client_config(&ca, None)),
        "no certificate"
    );
    let stranger = TestCa::new("Another CA").client("eve", Some("eve@example.com"));
    assert!(
        refused(tls.addr(), client_config(&ca, Some(&stranger))),
        "another CA"
    );
    wait_until("both refusals counted", || {
        tls.server.counters().tls_handshake_failures() == 2
    });

    let ann = clients.client("ann", Some("ann@example.com"));
    let (mut client, reply) =
        TlsClient::hello(tls.addr(), client_config(&ca, Some(&ann)), json!({}));
    assert!(!reply.connection_id.is_empty());
    client.join("members");
    assert_eq!(tls.server.counters().tls_handshake_failures(), 2);
}

#[test]
fn a_frame_close_to_the_maximum_crosses_tls_intact() {
    let tls = Tls::plain();
    let mut ann = tls.hello("ann");
    let mut bob = tls.hello("bob");
    ann.join("big");
    bob.join("big");
    ann.expect(MessageType::Message);
    let max = protocol::DEFAULT_MAX_FRAME as usize;
    let text: String = (0..max - 200)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    bob.publish("big", json!({ "text": text }));
    let frame = ann.expect(MessageType::Message);
    assert!(
        frame.payload.len() > max - 200,
        "{} bytes",
        frame.payload.len()
    );
    assert_eq!(frame.json()["content"]["text"].as_str().unwrap(), text);
    // And the other way, while the first is surely through.
    ann.publish("big", json!({ "text": text }));
    assert_eq!(
        bob.expect(MessageType::Message).json()["content"]["text"]
            .as_str()
            .unwrap(),
        text
    );
}

#[test]
fn a_slow_consumer_over_tls_still_gets_everything_then_its_error() {
    let tls = Tls::start(
        None,
        Duration::from_secs(30),
        Config {
            stall_timeout: Duration::from_millis(200),
            queue_bytes: 256 * 1024,
            ..Config::default()
        },
    );
    let mut stalled = tls.hello("stalled");
    stalled.join("firehose");
    let (mut publisher, _) = Raw::hello(tls.server.local_addr(), json!({"userId": "pub"}));
    publisher.join("firehose");

    // Publish until the stalled member is cut (it reads nothing meanwhile).
    let pad = "p".repeat(1000);
    let mut seq = 0u64;
    let counters = tls.server.counters();
    let deadline = Instant::now() + WAIT;
    while counters.slow_consumers() == 0 {
        assert!(Instant::now() < deadline, "never cut after {seq} messages");
        let mut batch = Vec::new();
        for _ in 0..64 {
            testkit::push_json(
                &mut batch,
                MessageType::Message,
                &json!({"room": "firehose", "content": {"seq": seq, "pad": pad}}),
            );
            seq += 1;
        }
        publisher.send_raw(&batch);
    }

    // A gap-free prefix, then SLOW_CONSUMER, then a clean TLS close
    // (close_notify: the client reads an end of stream, not a truncation).
    let mut next = 0u64;
    loop {
        let frame = stalled.recv(WAIT).unwrap();
        if frame.kind == MessageType::Error {
            let error = frame.expect_error();
            assert_eq!(error.code.as_str(), "SLOW_CONSUMER");
            assert!(error.fatal);
            break;
        }
        let value = frame.json();
        if value.get("type").is_some() {
            continue;
        }
        assert_eq!(
            value["content"]["seq"], next,
            "the stalled member saw a gap"
        );
        next += 1;
    }
    assert!(next > 0 && next < seq, "got {next} of {seq} before the cut");
    assert!(matches!(stalled.recv(WAIT), Err(RecvError::Eof)));
    assert_eq!(counters.errors_sent(protocol::ErrorCode::SlowConsumer), 1);
}

#[test]
fn shutdown_says_shutting_down_over_tls() {
    let tls = Tls::plain();
    let mut ann = tls.hello("ann");
    ann.join("r");
    tls.server.shutdown_handle().shutdown();
    let error = ann
        .expect_skipping_messages(MessageType::Error)
        .expect_error();
    assert_eq!(error.code.as_str(), "SHUTTING_DOWN");
    assert!(matches!(ann.recv(WAIT), Err(RecvError::Eof)));
    // New TLS connections are no longer taken.
    wait_until("the TLS port closed", || {
        TcpStream::connect(tls.addr()).is_err()
    });
}

#[test]
fn a_full_server_turns_tls_clients_away_before_any_handshake() {
    let tls = Tls::start(
        None,
        Duration::from_secs(30),
        Config {
            max_connections: 1,
            ..Config::default()
        },
    );
    let mut ann = tls.hello("ann");
    assert!(refused(tls.addr(), tls.trust()));
    let mut plain = Raw::connect(tls.server.local_addr());
    plain.expect_fatal("SERVER_FULL");
    // Turned away at the door: no handshake was started, none failed.
    assert_eq!(tls.server.counters().tls_handshake_failures(), 0);
    ann.join("still-here");
}

#[test]
fn a_client_certificate_names_the_user_and_stands_in_for_a_token() {
    let clients = TestCa::new("Client CA");
    let tokens = "tls-test-token-0123456789 bob\n";
    let config = Config {
        auth: server::auth::AuthConfig {
            tokens: Some(server::auth::TokenTable::parse(tokens, "test").unwrap()),
            jwt: None,
        },
        ..Config::default()
    };
    let tls = Tls::start(Some(&clients), Duration::from_secs(30), config);
    let ca = tls.ca.pem();
    let ann = clients.client("ann", Some("ann@example.com"));

    // With authentication on, the certificate is enough: no token, and
    // deliveries carry the certificate's name.
    let (mut first, _) = TlsClient::hello(tls.addr(), client_config(&ca, Some(&ann)), json!({}));
    let (mut second, _) = TlsClient::hello(
        tls.addr(),
        client_config(&ca, Some(&ann)),
        json!({ "userId": "ann@example.com", "echo": true }),
    );
    first.join("r");
    second.join("r");
    first.expect(MessageType::Message);
    second.publish("r", json!("hi"));
    let delivery = first.expect(MessageType::Message).json();
    assert_eq!(delivery["user"], "ann@example.com", "{delivery}");

    // Another name in userId, or a token for another user, is refused.
    for hello in [
        json!({ "userId": "bob" }),
        json!({ "token": "tls-test-token-0123456789" }),
    ] {
        let mut client = TlsClient::connect(tls.addr(), client_config(&ca, Some(&ann))).unwrap();
        client.send_json(MessageType::Hello, &hello);
        let error = client.expect(MessageType::Error).json();
        assert_eq!(error["code"], "AUTH_FAILED", "{hello}: {error}");
        assert_eq!(error["fatal"], true);
        assert!(client.until_close(WAIT).is_ok(), "{hello}: not closed");
    }
}

#[test]
fn without_authentication_a_client_certificate_still_names_the_user() {
    let clients = TestCa::new("Client CA");
    let tls = Tls::start(Some(&clients), Duration::from_secs(30), Config::default());
    let ca = tls.ca.pem();
    let cn_only = clients.client("carol", None);
    let (mut carol, _) = TlsClient::hello(
        tls.addr(),
        client_config(&ca, Some(&cn_only)),
        json!({ "echo": true }),
    );
    carol.join("r");
    carol.publish("r", json!("me"));
    let delivery = carol.expect_skipping_messages(MessageType::Message).json();
    assert_eq!(delivery["user"], "carol", "{delivery}");
}
