//! What the cluster tests share: a real `redis-server` on a free port,
//! nodes configured for it, readers that collect a client's frames on a
//! thread, and `/metrics` samples.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use testkit::{Raw, wait_until};

/// A `redis-server` of the test's own, killed when dropped.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

/// Whether `redis-server` can be run here. Under CI it must be (`.ci/run`
/// installs it), so a missing one fails the test; elsewhere the test is
/// skipped with a message.
pub fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed, and CI needs it: install Debian's redis-server"
        );
        eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
    }
    found
}

impl Redis {
    /// Starts one on a free port (redis-server cannot take port 0: the
    /// port is found by binding it and letting it go).
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis { child: None, port };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (empty: nothing is saved).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is running already");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let port = self.port;
        wait_until("redis-server to answer PING", || ping(port));
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// A node's settings: in the cluster at `url` as `node`, with a presence
/// TTL of `ttl` and `/metrics` on a port of its own.
pub fn node_config(url: &str, node: &str, ttl: Duration) -> server::Config {
    server::Config {
        http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        cluster: Some(server::ClusterConfig {
            node_id: node.to_owned(),
            presence_ttl: ttl,
            ..server::ClusterConfig::new(url)
        }),
        ..Default::default()
    }
}

/// The frames a client receives, collected as JSON by a thread of its
/// own until the connection closes.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<Value>>>);

impl Inbox {
    pub fn follow(client: Raw) -> Inbox {
        let inbox = Inbox::default();
        let collected = inbox.clone();
        std::thread::spawn(move || {
            for frame in client {
                if let Ok(value) = serde_json::from_slice::<Value>(&frame.payload) {
                    collected.0.lock().unwrap().push(value);
                }
            }
        });
        inbox
    }

    pub fn frames(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until some frame satisfies `matches`.
    pub fn wait_for(&self, what: &str, matches: impl Fn(&Value) -> bool) {
        wait_until(what, || self.0.lock().unwrap().iter().any(&matches));
    }
}

/// `/metrics` of the node whose HTTP endpoint is at `addr`.
pub fn metrics(addr: SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// The value of the sample named exactly `sample`, labels included.
pub fn metric(addr: SocketAddr, sample: &str) -> f64 {
    metrics(addr)
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
        .unwrap_or(f64::NAN)
}

/// PUBLISH `payload` on `channel`, straight to the Redis on `port` (RESP
/// written by hand: a test's own three-word command).
pub fn publish_raw(port: u16, channel: &str, payload: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut command = Vec::new();
    write!(
        command,
        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n",
        channel.len(),
        payload.len()
    )
    .unwrap();
    command.extend_from_slice(payload);
    command.extend_from_slice(b"\r\n");
    stream.write_all(&command).unwrap();
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(
        &answer, b":1\r\n",
        "PUBLISH answers with the number of subscribers: the one node whose member joined"
    );
}

/// Sends one command to the Redis on `port` (RESP written by hand) and
/// returns the first line of its answer.
pub fn command(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).unwrap();
        answer.push(byte[0]);
    }
    String::from_utf8_lossy(&answer).trim_end().to_owned()
}
