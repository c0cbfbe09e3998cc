//! `redis-server` and `nats-server` started as child processes on loopback,
//! for `bench --compare`.
//!
//! Redis runs with persistence off (`--save '' --appendonly no`); NATS with
//! its defaults. Each gets a port picked here (bound on 127.0.0.1:0 and
//! released), and is ready once it accepts a connection.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::System;
use crate::child::LogTail;
use crate::error::{Context, Error, Result};

/// The binary that serves `system`'s protocol, by its Debian name.
pub fn binary_name(system: System) -> &'static str {
    match system {
        System::Relay => "relay-server",
        System::Redis => "redis-server",
        System::Nats => "nats-server",
    }
}

/// Looks `name` up on PATH, then in the sbin folders Debian installs daemons
/// to (`nats-server` is in /usr/sbin, often not on a user's PATH).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A peer server run as a child process.
#[derive(Debug)]
pub struct PeerServer {
    pub system: System,
    pub addr: SocketAddr,
    pub binary: PathBuf,
    child: Child,
    /// The last lines it wrote, for error messages.
    log_tail: LogTail,
}

impl PeerServer {
    /// Starts `binary` for `system` on a free loopback port, room for
    /// `max_connections` clients, and waits (10 s at most) until it accepts
    /// connections.
    pub fn start(system: System, binary: &Path, max_connections: usize) -> Result<PeerServer> {
        // A free port can be taken by another program between our look and
        // the server's bind; the server then exits, and we try another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match PeerServer::start_on(system, binary, max_connections, free_port()?) {
                Err(error) if attempt < 5 && error.to_string().contains("exited with") => continue,
                other => return other,
            }
        }
    }

    fn start_on(
        system: System,
        binary: &Path,
        max_connections: usize,
        port: u16,
    ) -> Result<PeerServer> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(binary);
        match system {
            System::Redis => {
                command
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                    .args(["--maxclients", &max_connections.max(10_000).to_string()]);
            }
            System::Nats => {
                command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
            }
            System::Relay => {
                return Err(Error::new(
                    "Relay is started through target::Target::child, not as a peer",
                ));
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context(format!("starting {}", binary.display()))?;
        let log_tail = LogTail::default();
        if let Some(stdout) = child.stdout.take() {
            log_tail.follow(stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            log_tail.follow(stderr);
        }
        let mut server = PeerServer {
            system,
            addr,
            binary: binary.to_path_buf(),
            child,
            log_tail,
        };
        let started = Instant::now();
        loop {
            // Listening is not enough: the port may be someone else's. The
            // server must answer in its own protocol.
            if answers(system, addr) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(Error::new(format!(
                    "{} exited with {status} before listening on {addr}:\n{}",
                    binary.display(),
                    server.log()
                )));
            }
            if started.elapsed() > Duration::from_secs(10) {
                let log = server.log();
                server.stop();
                return Err(Error::new(format!(
                    "{} did not listen on {addr} within 10 s:\n{log}",
                    binary.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.log_tail.text()
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(mut self) {
        crate::child::stop(&mut self.child);
    }
}

/// A loopback port nobody listens on now (the kernel's pick for port 0).
/// Whether the server at `addr` speaks `system`'s protocol: Redis answers
/// `PING` with `+PONG`, NATS greets with an `INFO` line.
fn answers(system: System, addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
    {
        return false;
    }
    let (request, expected): (&[u8], &[u8]) = match system {
        System::Redis => (b"PING\r\n", b"+PONG"),
        System::Nats => (b"", b"INFO "),
        System::Relay => return false,
    };
    if !request.is_empty() && std::io::Write::write_all(&mut stream, request).is_err() {
        return false;
    }
    let mut got = vec![0u8; expected.len()];
    std::io::Read::read_exact(&mut stream, &mut got).is_ok() && got == expected
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener
        .local_addr()
        .context("finding a free port on 127.0.0.1")?
        .port())
}
