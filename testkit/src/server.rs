//! An in-process server on 127.0.0.1, port 0 (behind the `server` feature).

use std::net::SocketAddr;

use server::{Config, RunningServer, Server};

/// Starts a real server with the default configuration on 127.0.0.1, on a
/// port the system picks (`RunningServer::local_addr` says which).
///
/// # Panics
///
/// If the server cannot bind or start.
pub fn start_server() -> RunningServer {
    start_server_with(Config::default())
}

/// As [`start_server`], with `config` (whose `addr` is replaced).
///
/// # Panics
///
/// If the server cannot bind or start.
pub fn start_server_with(config: Config) -> RunningServer {
    let config = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..config
    };
    Server::bind(config)
        .expect("bind the test server")
        .spawn()
        .expect("start the test server")
}

/// The default configuration, keeping the last `messages` of each room
/// (and at most 1 MiB of them) for recovery and history (SPEC.md 5.11).
pub fn with_history(messages: usize) -> Config {
    Config {
        history: server::HistoryLimits {
            messages,
            bytes: 1 << 20,
            max_age: None,
        },
        ..Config::default()
    }
}
