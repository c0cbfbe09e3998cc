//! The WebSocket port (SPEC.md 13) against a real server, with tungstenite
//! as the client: WebSocket and TCP clients in one room, tokens, every kind
//! of message that is not one frame, the Origin rule, ping and pong, a slow
//! consumer, WSS, and a shutdown's close frame.

#![allow(clippy::unwrap_used)]
// More tests (errors, Origin, WSS, drain) use the rest of the helpers.
#![allow(dead_code, unused_imports)]

use std::io::{ErrorKind, Read, Write};
#[allow(unused_imports)]
use std::io as _io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use protocol::{ErrorPayload, MessageType};
use serde_json::{Value, json};
use server::{Config, RunningServer, WsConfig};
use testkit::frames::{OwnedFrame, json_frame};
use testkit::{Raw, WAIT, start_server_with};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

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

/// A WebSocket client that speaks Relay: one frame per binary message.
struct Ws {
    socket: WebSocket<TcpStream>,
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
