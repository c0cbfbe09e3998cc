//! Shared test helpers: an in-process server on port 0, and clients for it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use client::{Client, Event};

/// How long any single wait in these tests may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Starts a real server on 127.0.0.1, port 0.
pub fn start_server() -> server::RunningServer {
    start_server_with(server::Config::default())
}

pub fn start_server_with(config: server::Config) -> server::RunningServer {
    let config = server::Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..config
    };
    server::Server::bind(config)
        .expect("bind the test server")
        .spawn()
        .expect("start the test server")
}

/// A client that has said HELLO as `user`.
pub fn login(addr: SocketAddr, user: &str) -> Client {
    login_with(addr, Some(user), false)
}

pub fn login_with(addr: SocketAddr, user: Option<&str>, echo: bool) -> Client {
    let client = Client::connect(addr).expect("connect to the test server");
    client.hello_as(user, echo, WAIT).expect("HELLO answer");
    client
}

/// The next event that `pick` accepts, failing the test after [`WAIT`].
pub fn expect_event<T>(client: &Client, what: &str, pick: impl FnMut(&Event) -> Option<T>) -> T {
    match client.wait_for(WAIT, what, pick) {
        Ok(found) => found,
        Err(error) => panic!("waiting for {what}: {error}"),
    }
}
