//! The WebSocket port (SPEC.md 13) against a real server, with tungstenite
//! as the client: WebSocket and TCP clients in one room, tokens, every kind
//! of message that is not one frame, the Origin rule, ping and pong, a slow
//! consumer, WSS, and a shutdown's close frame.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use protocol::{ErrorPayload, MessageType};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use serde_json::{Value, json};
use server::auth::{AuthConfig, TokenTable};
use server::{Config, Origins, RunningServer, TlsConfig, WsConfig};
use testkit::frames::{OwnedFrame, json_frame, raw_frame};
use testkit::tls::{TempDir, TestCa, client_config};
use testkit::{Raw, WAIT, start_server_with, wait_until};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Message, WebSocket};

mod support;

/// A server with a WebSocket port beside its TCP one.
fn start(config: Config) -> RunningServer {
    start_server_with(Config {
        ws: Some(Box::new(WsConfig::new(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))),
        ..config
    })
}

/// A server with a WebSocket port that allows `origins`.
fn start_with_origins(origins: Origins) -> RunningServer {
    start_server_with(Config {
        ws: Some(Box::new(WsConfig {
            allowed_origins: origins,
            ..WsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        })),
        ..Config::default()
    })
}

/// A WebSocket client that speaks Relay: one frame per binary message.
struct Ws<S: Read + Write = TcpStream> {
    socket: WebSocket<S>,
}

impl Ws {
    fn connect(server: &RunningServer) -> Ws {
        Ws::connect_with(server, |_| {}).unwrap()
    }

    /// Connects, letting `edit` change the upgrade request; the error is
    /// the refusal.
    fn connect_with(
        server: &RunningServer,
        edit: impl FnOnce(&mut tungstenite::handshake::client::Request),
    ) -> Result<Ws, tungstenite::Error> {
        let addr = server.ws_addr().unwrap();
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        edit(&mut request);
        match tungstenite::client(request, stream) {
            Ok((socket, _)) => Ok(Ws { socket }),
            Err(tungstenite::HandshakeError::Failure(error)) => Err(error),
            Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("interrupted handshake"),
        }
    }
}

impl<S: Read + Write> Ws<S> {
    fn send(&mut self, frame: Vec<u8>) {
        self.socket.send(Message::Binary(frame.into())).unwrap();
    }

    fn send_json(&mut self, kind: MessageType, value: &Value) {
        self.send(json_frame(kind, value));
    }

    /// The next message: a binary one must hold exactly one Relay frame.
    fn next(&mut self) -> Message {
        self.socket.read().unwrap()
    }

    fn recv(&mut self) -> OwnedFrame {
        loop {
            match self.next() {
                Message::Binary(bytes) => return one_frame(&bytes),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    fn expect(&mut self, kind: MessageType) -> OwnedFrame {
        let frame = self.recv();
        assert_eq!(frame.kind, kind, "{}", frame.text());
        frame
    }

    fn hello(&mut self, hello: Value) -> Value {
        self.send_json(MessageType::Hello, &hello);
        self.expect(MessageType::Hello).json()
    }

    fn join(&mut self, room: &str) {
        self.send_json(MessageType::JoinRoom, &json!({ "room": room }));
        self.expect(MessageType::JoinRoom);
    }

    /// A fatal ERROR with `code` as one message, then a close frame with
    /// `status` and the code as its reason.
    fn expect_fatal(&mut self, code: &str, status: CloseCode) -> ErrorPayload {
        let error = self.recv().expect_error();
        assert_eq!(error.code.as_str(), code, "{error:?}");
        assert!(error.fatal);
        self.expect_close(status, code);
        error
    }

    fn expect_close(&mut self, status: CloseCode, reason: &str) {
        match self.next() {
            Message::Close(Some(close)) => {
                assert_eq!(close.code, status);
                assert_eq!(close.reason.as_str(), reason);
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// The one Relay frame `bytes` must hold.
fn one_frame(bytes: &[u8]) -> OwnedFrame {
    let (frame, used) = protocol::parse_frame(bytes, u32::MAX)
        .unwrap()
        .expect("a whole frame");
    assert_eq!(used, bytes.len(), "one frame per message, nothing after it");
    OwnedFrame::from_frame(&frame)
}

#[test]
fn websocket_and_tcp_clients_share_a_room() {
    let server = start(Config::default());
    let mut ws = Ws::connect(&server);
    let hello = ws.hello(json!({ "userId": "browser" }));
    assert_eq!(hello["status"], "connected", "{hello}");
    ws.join("lobby");
    let (mut tcp, _) = Raw::hello(server.local_addr(), json!({ "userId": "service" }));
    tcp.join("lobby");
    // The browser sees the service arrive, then its message.
    let joined = ws.expect(MessageType::Message).json();
    assert_eq!(joined["type"], "userJoined", "{joined}");
    assert_eq!(joined["user"], "service", "{joined}");
    tcp.publish("lobby", json!("from tcp"));
    let message = ws.expect(MessageType::Message).json();
    assert_eq!(message["content"], "from tcp");
    assert_eq!(message["user"], "service");
    ws.send_json(
        MessageType::Message,
        &json!({ "room": "lobby", "content": { "from": "ws" } }),
    );
    let message = tcp.expect_skipping_messages(MessageType::Message).json();
    assert_eq!(message["content"]["from"], "ws", "{message}");
    assert_eq!(message["user"], "browser");
}

/// The status of a refused upgrade.
fn refused_with(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// A WebSocket connection done by hand: the upgrade request written, the
/// answer's head read; then raw bytes both ways.
struct RawWs {
    stream: TcpStream,
}

/// An upgrade request as a browser writes one, with the RFC 6455 example
/// key.
fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

impl RawWs {
    fn connect(server: &RunningServer) -> RawWs {
        let addr = server.ws_addr().unwrap();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(upgrade_request(addr, "/").as_bytes())
            .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("http/1.1 101 "), "{head}");
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
            "{head}"
        );
        RawWs { stream }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn read_exact(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.stream.read_exact(&mut out).unwrap();
        out
    }

    /// Reads until the server closes; everything it sent.
    fn until_eof(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.stream.read_to_end(&mut out);
        out
    }
}

/// The server's frames in `bytes`: (opcode, payload), each unmasked and
/// final.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let mut cursor = std::io::Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.is_final && header.mask.is_none(), "{header:?}");
        let start = cursor.position() as usize;
        let end = start + len as usize;
        frames.push((u8::from(header.opcode), bytes[start..end].to_vec()));
        bytes = &bytes[end..];
    }
    frames
}

/// An HTTP answer's head, read a byte at a time so nothing after it is
/// taken.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("the answer ended early ({other:?}): {head:?}"),
        }
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

/// `payload` as a client sends it: FIN, `opcode`, masked with `mask`.
fn masked(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).unwrap())
        .collect()
}

/// The lines of the `text` block in SPEC.md that follows `marker`: the
/// example there is what the tests check, so the two cannot drift apart.
fn spec_example(marker: &str) -> Vec<Vec<u8>> {
    let spec = include_str!("../../SPEC.md");
    let start = spec
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in SPEC.md"));
    let block = &spec[start..];
    let block = &block[block.find("```text\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    block
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| hex(line.split_once(':').map_or(line, |(_, bytes)| bytes)))
        .collect()
}

#[test]
fn the_spec_examples_are_what_the_server_reads_and_writes() {
    let server = start(Config::default());
    let mut client = RawWs::connect(&server);
    // HELLO {}: masked as the SPEC shows.
    let hello = spec_example("<!-- ws-example-hello -->");
    assert_eq!(
        hello[0],
        masked(
            0x2,
            &json_frame(MessageType::Hello, &json!({})),
            [0x37, 0xfa, 0x21, 0x3d]
        )
    );
    client.write(&hello[0]);
    // The answer: one unmasked binary message holding the HELLO answer.
    let head = client.read_exact(4);
    assert_eq!(&head[..2], &hello[1][..2], "FIN + binary, 16-bit length");
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let answer = one_frame(&client.read_exact(len));
    assert_eq!(answer.kind, MessageType::Hello);
    assert_eq!(answer.json()["status"], "connected");
    // A HEARTBEAT, and its echo, byte for byte.
    let heartbeat = spec_example("<!-- ws-example-heartbeat -->");
    client.write(&heartbeat[0]);
    assert_eq!(client.read_exact(heartbeat[1].len()), heartbeat[1]);
    // A close, answered with a close, then the end.
    let close = spec_example("<!-- ws-example-close -->");
    client.write(&close[0]);
    assert_eq!(client.until_eof(), close[1]);
}

#[test]
fn a_token_in_hello_works_over_websocket() {
    let server = start(Config {
        auth: AuthConfig {
            tokens: Some(
                TokenTable::parse(
                    "ws-token-0123456789abcdef browser\nsvc-token-0123456789abcdef svc\n",
                    "test tokens",
                )
                .unwrap(),
            ),
            jwt: None,
        },
        ..Config::default()
    });
    let mut ws = Ws::connect(&server);
    ws.send_json(
        MessageType::Hello,
        &json!({ "token": "wrong-0123456789abcdef" }),
    );
    ws.expect_fatal("AUTH_FAILED", CloseCode::Policy);
    let mut ws = Ws::connect(&server);
    let hello = ws.hello(json!({ "token": "ws-token-0123456789abcdef" }));
    assert_eq!(hello["status"], "connected");
    ws.join("lobby");
    let (mut tcp, _) = Raw::hello(
        server.local_addr(),
        json!({ "token": "svc-token-0123456789abcdef" }),
    );
    tcp.join("lobby");
    ws.send_json(
        MessageType::Message,
        &json!({ "room": "lobby", "content": 1 }),
    );
    let message = tcp.expect_skipping_messages(MessageType::Message).json();
    assert_eq!(message["user"], "browser", "the token's user: {message}");
}

#[test]
fn a_message_that_is_not_exactly_one_frame_is_invalid_frame() {
    let server = start(Config {
        max_frame: 1024,
        ..Config::default()
    });
    let heartbeat = raw_frame(MessageType::Heartbeat, protocol::Flags::NONE, b"");
    let two = [heartbeat.clone(), heartbeat.clone()].concat();
    let oversize = raw_frame(MessageType::Heartbeat, protocol::Flags::NONE, &[b'x'; 1030]);
    let cases: [(&str, Message); 5] = [
        ("two frames", Message::Binary(two.into())),
        (
            "half a frame",
            Message::Binary(heartbeat[..4].to_vec().into()),
        ),
        ("an empty message", Message::Binary(Bytes::new())),
        ("text", Message::Text("{}".into())),
        ("over the frame limit", Message::Binary(oversize.into())),
    ];
    for (what, message) in cases {
        let mut ws = Ws::connect(&server);
        ws.hello(json!({}));
        ws.socket.send(message).unwrap();
        let error = ws.expect_fatal("INVALID_FRAME", CloseCode::Protocol);
        println!("{what}: {}", error.message);
        // The connection ends: nothing after the close frame.
        assert!(
            matches!(
                ws.socket.read(),
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)
            ),
            "{what}"
        );
    }
    // The next client is served as ever.
    let mut ws = Ws::connect(&server);
    assert_eq!(ws.hello(json!({}))["status"], "connected");
}

#[test]
fn an_unmasked_frame_is_refused() {
    let server = start(Config::default());
    let mut client = RawWs::connect(&server);
    let hello = json_frame(MessageType::Hello, &json!({}));
    let mut unmasked = vec![0x82, hello.len() as u8];
    unmasked.extend_from_slice(&hello);
    client.write(&unmasked);
    let rest = client.until_eof();
    // ERROR as a binary message, then a close frame: 1002 INVALID_FRAME.
    let frames = server_frames(&rest);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].0, 0x2);
    let error = one_frame(&frames[0].1).expect_error();
    assert_eq!(error.code.as_str(), "INVALID_FRAME");
    assert!(error.message.contains("unmasked"), "{}", error.message);
    assert_eq!(frames[1].0, 0x8);
    assert_eq!(frames[1].1, [&[0x03, 0xea][..], b"INVALID_FRAME"].concat());
}

#[test]
fn fragmented_messages_are_put_together() {
    let server = start(Config::default());
    let mut client = RawWs::connect(&server);
    let hello = json_frame(MessageType::Hello, &json!({}));
    let heartbeat = raw_frame(MessageType::Heartbeat, protocol::Flags::JSON, b"[1,2,3]");
    let mut wire = Vec::new();
    // HELLO in three fragments, a ping between two of them.
    wire.extend(
        masked(0x2, &hello[..3], [1, 2, 3, 4])
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 0 { b & 0x7f } else { *b }),
    );
    wire.extend(masked(0x9, b"between", [5, 6, 7, 8]));
    wire.extend(
        masked(0x0, &hello[3..6], [9, 9, 9, 9])
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 0 { b & 0x7f } else { *b }),
    );
    wire.extend(masked(0x0, &hello[6..], [1, 1, 1, 1]));
    wire.extend(masked(0x2, &heartbeat, [2, 2, 2, 2]));
    client.write(&wire);
    // The pong comes first (the ping arrived before the HELLO was whole).
    assert_eq!(client.read_exact(9), [&[0x8a, 7][..], b"between"].concat());
    let head = client.read_exact(4);
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    assert_eq!(one_frame(&client.read_exact(len)).kind, MessageType::Hello);
    let echo = client.read_exact(2 + heartbeat.len());
    assert_eq!(&echo[2..], &heartbeat[..]);
}

#[test]
fn ping_is_answered_with_pong() {
    let server = start(Config::default());
    let mut ws = Ws::connect(&server);
    ws.socket
        .send(Message::Ping(Bytes::from_static(b"are you there")))
        .unwrap();
    match ws.next() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // And the connection goes on.
    assert_eq!(ws.hello(json!({}))["status"], "connected");
}

#[test]
fn a_client_close_is_answered_and_counted_as_a_normal_close() {
    let server = start(Config::default());
    let mut ws = Ws::connect(&server);
    ws.hello(json!({}));
    ws.socket.close(None).unwrap();
    loop {
        match ws.socket.read() {
            Ok(Message::Close(close)) => {
                let close = close.expect("the server's close has a status");
                assert_eq!(close.code, CloseCode::Normal);
            }
            Ok(other) => panic!("expected the close, got {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(error) => panic!("{error}"),
        }
    }
    let counters = server.counters();
    wait_until("the close is counted", || {
        counters
            .closes()
            .iter()
            .any(|&(name, n)| name == "client_closed" && n == 1)
    });
}

#[test]
fn origins_are_checked_and_other_paths_are_not_found() {
    let server = start(Config::default());
    let addr = server.ws_addr().unwrap();
    let origin = |value: &str| {
        let value = value.to_owned();
        move |request: &mut tungstenite::handshake::client::Request| {
            request
                .headers_mut()
                .insert("Origin", value.parse().unwrap());
        }
    };
    // Same host, any port: the chat page comes from the HTTP port.
    assert!(Ws::connect_with(&server, origin("http://127.0.0.1:8080")).is_ok());
    assert_eq!(
        refused_with(Ws::connect_with(&server, origin("https://evil.example"))),
        403
    );
    // /ws works too; other paths are 404.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(upgrade_request(addr, "/ws").as_bytes())
        .unwrap();
    assert!(read_head(&mut stream).starts_with("http/1.1 101 "));
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(upgrade_request(addr, "/chat").as_bytes())
        .unwrap();
    assert!(read_head(&mut stream).starts_with("http/1.1 404 "));

    let listed = start_with_origins("https://chat.example".parse().unwrap());
    assert!(Ws::connect_with(&listed, origin("https://chat.example")).is_ok());
    assert_eq!(
        refused_with(Ws::connect_with(&listed, origin("http://127.0.0.1"))),
        403
    );
    // Programs that send no Origin are always let in.
    assert!(Ws::connect_with(&listed, |_| {}).is_ok());
    let any = start_with_origins(Origins::Any);
    assert!(Ws::connect_with(&any, origin("https://evil.example")).is_ok());
    let counters = server.counters();
    wait_until("the refusals are counted", || {
        counters
            .closes()
            .iter()
            .any(|&(name, n)| name == "ws_handshake" && n == 2)
    });
    assert_eq!(counters.ws_upgrade_failures(), 2);
}

#[test]
fn an_upgrade_that_trickles_or_overflows_is_cut() {
    let server = start_server_with(Config {
        ws: Some(Box::new(WsConfig {
            handshake_timeout: Duration::from_millis(300),
            ..WsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        })),
        ..Config::default()
    });
    let addr = server.ws_addr().unwrap();
    // Half a request, then nothing: closed once the timeout passes.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    assert_eq!(slow.read_to_end(&mut sink).unwrap_or(0), 0);
    assert!(started.elapsed() < WAIT, "not cut");
    // Endless headers: 431 before the server holds more than its bound.
    let mut big = TcpStream::connect(addr).unwrap();
    big.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
    request.resize(16 * 1024, b'a');
    let _ = big.write_all(&request);
    assert!(read_head(&mut big).starts_with("http/1.1 431 "));
}

#[test]
fn a_slow_consumer_over_websocket_gets_its_backlog_then_the_verdict() {
    let server = start(Config {
        stall_timeout: Duration::from_millis(200),
        queue_bytes: 64 * 1024,
        ..Config::default()
    });
    let mut stalled = Ws::connect(&server);
    stalled.hello(json!({}));
    stalled.join("firehose");
    let (mut publisher, _) = Raw::hello(server.local_addr(), json!({}));
    publisher.join("firehose");
    // The stalled member reads nothing while the publisher floods.
    let pad = "p".repeat(1000);
    let counters = server.counters();
    let mut seq = 0u64;
    while counters.slow_consumers() == 0 {
        let mut batch = Vec::new();
        for _ in 0..64 {
            batch.extend(json_frame(
                MessageType::Message,
                &json!({"room": "firehose", "content": {"seq": seq, "pad": pad}}),
            ));
            seq += 1;
        }
        publisher.send_raw(&batch);
        assert!(seq < 10_000_000, "never cut");
    }
    // Now it reads: a gap-free prefix, the verdict, and the close frame.
    let mut next = 0u64;
    loop {
        let frame = stalled.recv();
        if frame.kind == MessageType::Error {
            let error = frame.expect_error();
            assert_eq!(error.code.as_str(), "SLOW_CONSUMER");
            break;
        }
        let value = frame.json();
        if value.get("type").is_none() {
            assert_eq!(value["content"]["seq"], next, "a gap");
            next += 1;
        }
    }
    stalled.expect_close(CloseCode::Policy, "SLOW_CONSUMER");
}

#[test]
fn a_shutdown_sends_shutting_down_and_going_away() {
    let server = start(Config::default());
    let mut ws = Ws::connect(&server);
    ws.hello(json!({}));
    ws.join("lobby");
    let stopper = std::thread::spawn(move || server.shutdown());
    let error = ws.expect_fatal("SHUTTING_DOWN", CloseCode::Away);
    assert!(error.retry_after_ms.is_some());
    stopper.join().unwrap();
}

#[test]
fn wss_uses_the_tls_certificate_and_shows_in_connz() {
    let dir = TempDir::new("wss-test");
    let ca = TestCa::new("Relay test CA");
    let issued = ca.server("relay");
    let server = start_server_with(Config {
        tls: Some(Box::new(TlsConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: dir.write("cert.pem", &issued.cert_pem),
            key: dir.write("key.pem", &issued.key_pem),
            client_ca: None,
            handshake_timeout: Duration::from_secs(30),
        })),
        ws: Some(Box::new(WsConfig::new(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))),
        http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Config::default()
    });
    let addr = server.ws_addr().unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let conn = ClientConnection::new(
        client_config(&ca.pem(), None),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let stream = StreamOwned::new(conn, tcp);
    let request = format!("wss://localhost:{}/", addr.port())
        .into_client_request()
        .unwrap();
    let (socket, _) = tungstenite::client(request, stream).unwrap();
    let mut wss = Ws { socket };
    assert_eq!(
        wss.hello(json!({ "userId": "secure" }))["status"],
        "connected"
    );
    wss.join("lobby");
    let (mut tcp, _) = Raw::hello(server.local_addr(), json!({}));
    tcp.join("lobby");
    tcp.publish("lobby", json!("over wss"));
    let message = wss.expect(MessageType::Message).json();
    let message = if message.get("type").is_some() {
        wss.expect(MessageType::Message).json()
    } else {
        message
    };
    assert_eq!(message["content"], "over wss");
    // A burst written at once: the server reads it over TLS in reads
    // topped up across the WebSocket headers, and relays all of it.
    const BURST: u64 = 3000;
    for k in 0..BURST {
        let frame = json_frame(
            MessageType::Message,
            &json!({ "room": "lobby", "content": k }),
        );
        wss.socket.write(Message::Binary(frame.into())).unwrap();
    }
    wss.socket.flush().unwrap();
    let mut next = 0;
    while next < BURST {
        let message = tcp.expect(MessageType::Message).json();
        if message.get("type").is_none() {
            assert_eq!(message["content"], next, "{message}");
            next += 1;
        }
    }
    // /connz names the transport; /config.json says where and how.
    let http = server.http_addr().unwrap();
    let connz = http_get(http, "/connz");
    let connections = connz["connections"].as_array().unwrap();
    let transports: Vec<&str> = connections
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["wss", "tcp"], "{connz}");
    assert_eq!(connections[0]["tls"], true);
    let metrics = http_text(http, "/metrics");
    for line in [
        "relay_connections_by_transport{transport=\"wss\"} 1",
        "relay_connections_by_transport{transport=\"tcp\"} 1",
        "relay_connections_by_transport{transport=\"ws\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let config = http_get(http, "/config.json");
    assert_eq!(
        config,
        json!({ "websocket": { "port": addr.port(), "tls": true, "path": "/" } })
    );
}

#[test]
fn config_json_says_when_there_is_no_websocket() {
    let server = start_server_with(Config {
        http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Config::default()
    });
    assert_eq!(
        http_get(server.http_addr().unwrap(), "/config.json"),
        json!({ "websocket": null })
    );
}

/// GET `path`, which must answer 200 with JSON.
fn http_get(addr: SocketAddr, path: &str) -> Value {
    serde_json::from_str(&http_text(addr, path)).unwrap()
}

/// GET `path`, which must answer 200; the body.
fn http_text(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[test]
fn the_binary_prints_its_websocket_address() {
    use std::io::BufReader;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
            "--ws-allowed-origins",
            "https://chat.example",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let _tcp = support::listening_on(&mut stdout);
    let ws = support::address(&mut stdout, "ws listening on ");
    let http = support::address(&mut stdout, "http listening on ");
    assert_eq!(
        http_get(http, "/config.json"),
        json!({ "websocket": { "port": ws.port(), "tls": false, "path": "/" } })
    );
    let stream = TcpStream::connect(ws).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = format!("ws://{ws}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://chat.example".parse().unwrap());
    let (socket, _) = tungstenite::client(request, stream).unwrap();
    let mut client = Ws { socket };
    assert_eq!(client.hello(json!({}))["status"], "connected");
    support::signal(&child, libc::SIGTERM);
    client.expect_fatal("SHUTTING_DOWN", CloseCode::Away);
    assert!(child.wait().unwrap().success());
}
