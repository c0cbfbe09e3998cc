//! The server under test: started in-process on an ephemeral port, spawned as
//! a child process from the server binary, or reached at an address.

use crate::child::LogTail;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protocol::Stats;

use crate::error::{Context, Error, Result};
use crate::sys::ProcStatus;

/// How to reach the server; shared by every scenario's options.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    /// A running server; `None` starts one.
    pub addr: Option<SocketAddr>,
    /// With `addr`: the server's pid, to read its memory from /proc.
    pub server_pid: Option<u32>,
    /// Settings of an in-process server (its `addr` is replaced by 127.0.0.1:0).
    pub config: Option<server::Config>,
}

enum Kind {
    InProcess(server::RunningServer),
    Child(ChildServer),
    Remote { pid: Option<u32> },
}

/// A server the scenarios talk to.
pub struct Target {
    addr: SocketAddr,
    /// Its TLS port, when it has one.
    tls_addr: Option<SocketAddr>,
    /// Its WebSocket port, when it has one.
    ws_addr: Option<SocketAddr>,
    kind: Kind,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.describe())
    }
}

impl Target {
    /// Connects to `options.addr`, or starts the server in-process.
    pub fn start(options: &TargetOptions) -> Result<Target> {
        match options.addr {
            Some(addr) => Ok(Target::remote(addr, options.server_pid)),
            None => Target::in_process(options.config.clone().unwrap_or_default()),
        }
    }

    /// Starts the server library on 127.0.0.1 with an ephemeral port.
    pub fn in_process(mut config: server::Config) -> Result<Target> {
        config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let running = server::Server::bind(config)
            .context("starting the in-process server")?
            .spawn()
            .context("starting the in-process server")?;
        Ok(Target {
            addr: running.local_addr(),
            tls_addr: running.tls_addr(),
            ws_addr: running.ws_addr(),
            kind: Kind::InProcess(running),
        })
    }

    /// A server someone else runs.
    pub fn remote(addr: SocketAddr, pid: Option<u32>) -> Target {
        Target {
            addr,
            tls_addr: None,
            ws_addr: None,
            kind: Kind::Remote { pid },
        }
    }

    /// Spawns the server binary on 127.0.0.1:0 with `args` and waits for its
    /// `listening on <addr>` line (and `listening for TLS on <addr>` when
    /// `args` has `--tls-addr`).
    pub fn child(binary: &Path, args: &[String]) -> Result<Target> {
        let child = ChildServer::spawn(binary, args)?;
        Ok(Target {
            addr: child.addr,
            tls_addr: child.tls_addr,
            ws_addr: child.ws_addr,
            kind: Kind::Child(child),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS port, for a server started with one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The WebSocket port, for a server started with one.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The server's own process id: a child's, or the one given with
    /// `--server-pid`; `None` in-process.
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::InProcess(_) => None,
            Kind::Child(child) => Some(child.pid()),
            Kind::Remote { pid } => *pid,
        }
    }

    /// `in-process`, `child process (pid N)` or `remote`.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::InProcess(_) => format!("in-process server on {}", self.addr),
            Kind::Child(child) => format!(
                "server binary {} (pid {}) on {}",
                child.binary.display(),
                child.pid(),
                self.addr
            ),
            Kind::Remote { pid: Some(pid) } => format!("server at {} (pid {pid})", self.addr),
            Kind::Remote { pid: None } => format!("server at {}", self.addr),
        }
    }

    /// `in_process`, `child` or `remote`, for the JSON line.
    pub fn mode(&self) -> &'static str {
        match self.kind {
            Kind::InProcess(_) => "in_process",
            Kind::Child(_) => "child",
            Kind::Remote { .. } => "remote",
        }
    }

    /// The server's counters, asked over the wire (works for every kind).
    pub fn stats(&self) -> Result<Stats> {
        crate::wire::server_stats(self.addr)
    }

    /// The server process's memory, when it can be read: for an in-process
    /// server this is this whole process, stress clients included.
    pub fn memory(&self) -> Option<ProcStatus> {
        match &self.kind {
            Kind::InProcess(_) => ProcStatus::read(None),
            Kind::Child(child) => ProcStatus::read(Some(child.pid())),
            Kind::Remote { pid: Some(pid) } => ProcStatus::read(Some(*pid)),
            Kind::Remote { pid: None } => None,
        }
    }

    /// Whether [`Target::memory`] includes the stress tool's own memory.
    pub fn memory_includes_client(&self) -> bool {
        matches!(self.kind, Kind::InProcess(_))
    }

    /// Memory as JSON: `null` when unknown.
    pub fn memory_json(&self) -> serde_json::Value {
        match self.memory() {
            Some(m) => serde_json::json!({
                "rss_kib": m.rss_kib,
                "peak_rss_kib": m.hwm_kib,
                "threads": m.threads,
                "includes_stress_client": self.memory_includes_client(),
            }),
            None => serde_json::Value::Null,
        }
    }

    /// Stops a server this tool started (a remote one is left alone).
    pub fn stop(self) {
        match self.kind {
            Kind::InProcess(running) => running.shutdown(),
            Kind::Child(child) => child.stop(),
            Kind::Remote { .. } => {}
        }
    }
}

/// The server binary next to this executable (`target/<profile>/relay-server`).
pub fn sibling_server_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    // Test binaries live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join("relay-server");
    candidate.is_file().then_some(candidate)
}

/// Which `listening` line the child printed.
#[derive(Debug, Clone, Copy)]
enum Port {
    Plain,
    Tls,
    Ws,
}

/// A server binary run as a child process.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
    binary: PathBuf,
}

impl ChildServer {
    fn spawn(binary: &Path, args: &[String]) -> Result<ChildServer> {
        let mut child = Command::new(binary)
            .arg("--addr")
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context(format!("starting {}", binary.display()))?;
        let log_tail = LogTail::default();
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    let line = line.trim();
                    let port = if let Some(addr) = line.strip_prefix("listening on ") {
                        Some((Port::Plain, addr))
                    } else if let Some(addr) = line.strip_prefix("listening for TLS on ") {
                        Some((Port::Tls, addr))
                    } else {
                        line.strip_prefix("ws listening on ")
                            .map(|addr| (Port::Ws, addr))
                    };
                    if let Some((port, addr)) = port {
                        let _ = tx.send((port, addr.trim().to_owned()));
                    }
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            log_tail.follow(stderr);
        }
        let started = Instant::now();
        let wants_tls = args.iter().any(|arg| arg == "--tls-addr");
        let wants_ws = args.iter().any(|arg| arg == "--ws-addr");
        let (mut addr, mut tls_addr, mut ws_addr) = (None, None, None);
        let addr = loop {
            if let Some(addr) = addr
                && (tls_addr.is_some() || !wants_tls)
                && (ws_addr.is_some() || !wants_ws)
            {
                break addr;
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((port, text)) => {
                    let parsed = text
                        .parse::<SocketAddr>()
                        .context(format!("reading the address from `listening on {text}`"))?;
                    match port {
                        Port::Plain => addr = Some(parsed),
                        Port::Tls => tls_addr = Some(parsed),
                        Port::Ws => ws_addr = Some(parsed),
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let tail = log_tail.text_after_exit();
                        return Err(Error::new(format!(
                            "{} exited with {status} before listening:\n{tail}",
                            binary.display()
                        )));
                    }
                    if started.elapsed() > Duration::from_secs(10) {
                        let _ = child.kill();
                        return Err(Error::new(format!(
                            "{} printed no `listening on <addr>` line within 10 s",
                            binary.display()
                        )));
                    }
                }
            }
        };
        Ok(ChildServer {
            child,
            addr,
            tls_addr,
            ws_addr,
            binary: binary.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        crate::child::stop(&mut self.child);
    }
}
