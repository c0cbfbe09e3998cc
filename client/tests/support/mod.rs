//! Helpers for the client library's tests: clients that have said HELLO, and
//! waiting for an event. The server they talk to, and [`WAIT`], come from
//! testkit.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

pub mod cli;

use std::net::SocketAddr;

use client::{Client, Event};
use testkit::WAIT;

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

/// A server that logs clients in with the token table `tokens` (SPEC.md
/// 11.1: `TOKEN USER PERMISSIONS…` per line).
pub fn start_server_with_tokens(tokens: &str) -> server::RunningServer {
    testkit::start_server_with(server::Config {
        auth: server::auth::AuthConfig {
            tokens: Some(server::auth::TokenTable::parse(tokens, "test").expect("tokens")),
            jwt: None,
        },
        ..server::Config::default()
    })
}
