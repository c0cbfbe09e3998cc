//! Living with a server that goes away: `--reconnect` after the server
//! restarts on the same port, and a server that stops answering its
//! keepalives.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

use protocol::{Decoder, MessageType};
use testkit::start_server;

mod support;

use support::cli::Live;

#[test]
fn reconnect_rejoins_after_a_restart_on_the_same_port_and_sends_what_was_typed() {
    let first = start_server();
    let addr = first.local_addr();
    let mut live = Live::start(addr, &["--name", "phoenix", "--reconnect", "--echo"]);
    live.expect("connected to");
    live.type_line("/join phx");
    live.expect("joined phx");
    first.shutdown();
    let line = live.expect("disconnected: server closed the connection: SHUTTING_DOWN");
    assert!(line.ends_with("; reconnecting"), "{line}");
    // Typed while there is no server: kept, not dropped.
    live.type_line("typed while down");
    live.expect("the line will be sent after the reconnect (1 waiting)");
    // The same port again; the client is retrying meanwhile.
    let second = server::Server::bind(server::Config {
        addr,
        ..server::Config::default()
    })
    .expect("bind the same port again")
    .spawn()
    .expect("start the second server");
    // The status line (standard error) and the echo of the kept line, which
    // reached the room on the new server (standard output): the two streams
    // are read apart, so in either order.
    let found = live.expect_each(&["reconnected to", "): typed while down"]);
    let (line, echoed) = (&found[0], &found[1]);
    assert!(line.contains("rejoined phx"), "{line}");
    assert!(
        line.contains("sent 1 line(s) typed while disconnected"),
        "{line}"
    );
    assert!(echoed.starts_with("[phx] phoenix ("), "{echoed}");
    live.type_line("/rooms");
    live.expect("rooms: phx (current)");
    let (status, _) = live.finish();
    assert!(status.success());
    drop(second);
}

#[test]
fn sub_with_reconnect_resubscribes_after_a_restart() {
    let first = start_server();
    let addr = first.local_addr();
    let mut sub = Live::spawn(support::cli::relay(
        addr,
        &["--reconnect", "sub", "feed", "-n", "2", "--raw"],
    ));
    sub.expect("subscribed to feed");
    let publisher = support::login(addr, "pub");
    publisher
        .join_and_wait("feed", testkit::WAIT)
        .expect("join");
    publisher.send_text("feed", "before").expect("send");
    assert_eq!(sub.next_line(), "before");
    drop(publisher);
    first.shutdown();
    sub.expect("; reconnecting");
    let second = server::Server::bind(server::Config {
        addr,
        ..server::Config::default()
    })
    .expect("bind the same port again")
    .spawn()
    .expect("start the second server");
    let line = sub.expect("reconnected to");
    assert!(line.contains("rejoined feed"), "{line}");
    let publisher = support::login(addr, "pub");
    publisher
        .join_and_wait("feed", testkit::WAIT)
        .expect("join");
    publisher.send_text("feed", "after").expect("send");
    sub.expect("after");
    // The second message was the COUNT-th: it exits 0.
    assert_eq!(support::cli::wait_exit(&mut sub.child).code(), Some(0));
    drop(second);
}

/// A server that answers HELLO and JOIN_ROOM and then nothing more: it
/// reads everything (so nothing backs up) but leaves every HEARTBEAT
/// unanswered, like a frozen process whose socket buffers still take bytes.
fn start_frozen_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        serve_frozen(stream);
    });
    addr
}

fn serve_frozen(mut stream: TcpStream) {
    let mut decoder = Decoder::new(1 << 20);
    loop {
        let n = match stream.read(decoder.read_buf()) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.commit(n);
        let mut answers = Vec::new();
        while let Ok(Some(frame)) = decoder.next_frame() {
            let answer = match frame.kind {
                MessageType::Hello => serde_json::json!({
                    "status": "connected",
                    "connectionId": "c1",
                    "serverVersion": "frozen",
                    "maxFrameSize": 1 << 20,
                    "idleTimeoutMs": 600,
                }),
                MessageType::JoinRoom => {
                    let request: serde_json::Value =
                        serde_json::from_slice(frame.payload).expect("JSON");
                    serde_json::json!({"status": "joined", "room": request["room"], "members": 1})
                }
                _ => continue,
            };
            protocol::encode_json(&mut answers, frame.kind, &answer).expect("encode");
        }
        if stream.write_all(&answers).is_err() {
            return;
        }
    }
}

#[test]
fn unanswered_keepalives_are_reported_and_lines_are_not_silently_lost() {
    let addr = start_frozen_server();
    let mut live = Live::start(addr, &["--name", "ice", "--connect-timeout", "1"]);
    live.expect("connected to");
    live.type_line("/join r");
    live.expect("joined r");
    // The keepalive goes every 200 ms (a third of the announced 600 ms);
    // its first one is unanswered for the 1 s answer timeout.
    live.expect("server not answering: no answer to a keepalive within 1.00 s");
    live.type_line("anyone there?");
    live.expect("sent, but not confirmed: the server is not answering");
    let (status, _) = live.finish();
    assert_eq!(status.code(), Some(1));
}
