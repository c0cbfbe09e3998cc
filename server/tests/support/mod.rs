//! What the tests that run the `relay-server` binary share: reading the
//! addresses it prints, signalling it, and collecting its log as written.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The address of the next line the server prints, which must start with
/// `prefix` (`listening on `, `listening for TLS on `).
pub fn address(stdout: &mut impl BufRead, prefix: &str) -> SocketAddr {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected a line starting {prefix:?}, got {line:?}"))
        .parse()
        .unwrap()
}

/// The plain port, from the first line the server prints.
pub fn listening_on(stdout: &mut impl BufRead) -> SocketAddr {
    address(stdout, "listening on ")
}

pub fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill only sends a signal to the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// The server's log so far, collected line by line by a thread, so a test
/// can wait for a line with a timeout.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    /// Follows `stderr` until it closes; the handle ends with it.
    pub fn follow(stderr: impl Read + Send + 'static) -> (Log, JoinHandle<()>) {
        let log = Log::default();
        let writer = log.clone();
        let thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut text = writer.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        (log, thread)
    }

    pub fn contains(&self, text: &str) -> bool {
        self.0.lock().unwrap().contains(text)
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}
