//! The server a workload runs against, and how to get a fresh one: Relay
//! (a child `relay-server`, in-process, or at an address), or a peer (a
//! child `redis-server` / `nats-server`, or at an address).
//!
//! CPU and memory figures are read from the server's own process: a child,
//! or `--server-pid`. An in-process server shares this process with the
//! clients, so its CPU is not measured and its memory includes them.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::Result;
use crate::peer::System;
use crate::peer::servers::PeerServer;
use crate::sys::{CpuMeter, ProcStatus};
use crate::target::Target;
use crate::tls::{TestPki, TlsClient};

/// How to get a server of one system.
#[derive(Debug, Clone)]
pub enum Launch {
    /// Start `relay-server` from this binary as a child, with these extra
    /// flags (`--server-arg`).
    RelayChild(PathBuf, Vec<String>),
    /// Start Relay in this process (boxed: a `Config` is large).
    RelayInProcess(Box<server::Config>),
    /// Start `redis-server` or `nats-server` from this binary as a child.
    Peer(System, PathBuf),
    /// Someone else's server (every workload shares it).
    External {
        system: System,
        addr: SocketAddr,
        pid: Option<u32>,
    },
}

impl Launch {
    pub fn system(&self) -> System {
        match self {
            Launch::RelayChild(..) | Launch::RelayInProcess(_) => System::Relay,
            Launch::Peer(system, _) | Launch::External { system, .. } => *system,
        }
    }

    /// A server ready for clients; room for `max_connections` of them when
    /// this tool starts it, and a TLS port with `tls`'s certificate (Relay).
    /// With `ws`, a WebSocket port too (Relay).
    pub fn start(
        &self,
        max_connections: usize,
        tls: Option<&TestPki>,
        ws: bool,
    ) -> Result<Subject> {
        let system = self.system();
        let mut tls_client = None;
        let (addr, pid, owner) = match self {
            Launch::RelayChild(binary, extra) => {
                let mut args = vec!["--max-connections".to_owned(), max_connections.to_string()];
                args.extend(extra.iter().cloned());
                if let Some(pki) = tls {
                    for (flag, value) in [
                        ("--tls-addr", "127.0.0.1:0".into()),
                        ("--tls-cert", pki.cert.display().to_string()),
                        ("--tls-key", pki.key.display().to_string()),
                    ] {
                        args.push(flag.into());
                        args.push(value);
                    }
                }
                if ws {
                    args.push("--ws-addr".into());
                    args.push("127.0.0.1:0".into());
                }
                let target = Target::child(binary, &args)?;
                let pid = target.pid();
                (target.addr(), pid, Owner::Relay(target))
            }
            Launch::RelayInProcess(config) => {
                let config = server::Config {
                    max_connections,
                    tls: tls.map(|pki| {
                        Box::new(server::TlsConfig {
                            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                            cert: pki.cert.clone(),
                            key: pki.key.clone(),
                            client_ca: None,
                            handshake_timeout: server::TlsConfig::DEFAULT_HANDSHAKE_TIMEOUT,
                        })
                    }),
                    ws: ws.then(|| {
                        Box::new(server::WsConfig::new(std::net::SocketAddr::from((
                            [127, 0, 0, 1],
                            0,
                        ))))
                    }),
                    ..config.as_ref().clone()
                };
                let target = Target::in_process(config)?;
                (target.addr(), None, Owner::Relay(target))
            }
            Launch::Peer(system, binary) => {
                let peer = PeerServer::start(*system, binary, max_connections)?;
                (peer.addr, Some(peer.pid()), Owner::Peer(peer))
            }
            Launch::External { addr, pid, .. } => (*addr, *pid, Owner::External),
        };
        if let (Some(pki), Owner::Relay(target)) = (tls, &owner) {
            let tls_addr = target
                .tls_addr()
                .ok_or_else(|| crate::error::Error::new("the server announced no TLS port"))?;
            tls_client = Some((tls_addr, pki.client()?));
        }
        let ws_addr = match (&owner, ws) {
            (Owner::Relay(target), true) => Some(target.ws_addr().ok_or_else(|| {
                crate::error::Error::new("the server announced no WebSocket port")
            })?),
            _ => None,
        };
        Ok(Subject {
            system,
            addr,
            pid,
            tls: tls_client,
            ws: ws_addr,
            owner,
        })
    }
}

enum Owner {
    Relay(Target),
    Peer(PeerServer),
    External,
}

/// A server under test.
pub struct Subject {
    pub system: System,
    pub addr: SocketAddr,
    /// The server's own process, when it has one this tool knows.
    pub pid: Option<u32>,
    /// Its TLS port and how to trust it (`bench --tls`).
    pub tls: Option<(SocketAddr, TlsClient)>,
    /// Its WebSocket port (`bench --ws`).
    pub ws: Option<SocketAddr>,
    owner: Owner,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subject({})", self.describe())
    }
}

impl Subject {
    /// What the server is, for the report.
    pub fn describe(&self) -> String {
        match &self.owner {
            Owner::Relay(target) => format!("Relay: {}", target.describe()),
            Owner::Peer(peer) => format!(
                "{}: {} (pid {}) on {}",
                self.system.name(),
                peer.binary.display(),
                peer.pid(),
                self.addr
            ),
            Owner::External => match self.pid {
                Some(pid) => format!("{} at {} (pid {pid})", self.system.name(), self.addr),
                None => format!("{} at {}", self.system.name(), self.addr),
            },
        }
    }

    /// `child`, `in_process` or `remote`, for the JSON line.
    pub fn mode(&self) -> &'static str {
        match &self.owner {
            Owner::Relay(target) => target.mode(),
            Owner::Peer(_) => "child",
            Owner::External => "remote",
        }
    }

    /// Whether the server runs in this process (its CPU can't be told from
    /// the clients', and its memory includes theirs).
    pub fn in_process(&self) -> bool {
        matches!(&self.owner, Owner::Relay(target) if target.memory_includes_client())
    }

    /// Starts measuring the server's CPU; `None` when it has no process of
    /// its own this tool knows.
    pub fn cpu(&self) -> Option<CpuMeter> {
        CpuMeter::start(self.pid?)
    }

    /// The server's memory: its process's, or this one's when in-process.
    pub fn memory(&self) -> Option<ProcStatus> {
        match (&self.owner, self.pid) {
            (Owner::Relay(target), _) => target.memory(),
            (_, Some(pid)) => ProcStatus::read(Some(pid)),
            _ => None,
        }
    }

    /// Why CPU or memory figures are missing, for the report.
    pub fn why_unmeasured(&self) -> &'static str {
        if self.in_process() {
            "the server runs in this process; build relay-server (cargo build --release -p server) or pass --addr and --server-pid"
        } else {
            "pass --server-pid to read the server's /proc entry"
        }
    }

    /// Stops a server this tool started.
    pub fn stop(self) {
        match self.owner {
            Owner::Relay(target) => target.stop(),
            Owner::Peer(peer) => peer.stop(),
            Owner::External => {}
        }
    }
}
