//! Which systems one bench invocation runs, how each server is started, and
//! the order of the workloads against it.
//!
//! Throughput workloads (fan-out, latency, rooms, setup) share one server;
//! each memory workload gets a fresh one, so what earlier runs left in the
//! allocator doesn't hide the growth being measured.

use serde_json::{Value, json};

use super::subject::{Launch, Subject};
use super::throughput::Over;
use super::{Options, Outcome, Which, memory, rooms, setup, throughput};
use crate::error::{Error, Result};
use crate::peer::System;
use crate::peer::servers::{binary_name, find_binary};
use crate::target::sibling_server_binary;
use crate::tls::TestPki;

/// One step of a system's run, in the order it happened.
#[derive(Debug)]
pub(super) enum Step {
    /// A line for the report (which server, what was skipped).
    Line(String),
    Done(Which, Result<Outcome>),
}

/// The JSON key of a workload.
pub(super) fn key(which: Which) -> &'static str {
    match which {
        Which::Fanout => "fanout",
        Which::Latency => "latency",
        Which::Rooms => "rooms",
        Which::Setup => "setup",
        Which::Connections => "connections",
        Which::Memory => "memory",
    }
}

/// The systems to run and how to start each, or why one can't be.
pub(super) fn systems(
    options: &Options,
) -> Result<Vec<(System, std::result::Result<Launch, String>)>> {
    if options.compare {
        if options.target.addr.is_some() {
            return Err(Error::new(
                "--compare starts its own servers; leave out --addr and --target",
            ));
        }
        return Ok(System::ALL
            .iter()
            .map(|&system| (system, launch_for(system, options)))
            .collect());
    }
    if let Some(addr) = options.target.addr {
        return Ok(vec![(
            options.system,
            Ok(Launch::External {
                system: options.system,
                addr,
                pid: options.target.server_pid,
            }),
        )]);
    }
    if options.system != System::Relay {
        return Err(Error::new(format!(
            "{} needs an address: --target {}://HOST:PORT, or --compare to start one",
            options.system.name(),
            options.system.key()
        )));
    }
    Ok(vec![(System::Relay, launch_for(System::Relay, options))])
}

/// Starts Relay as a child when its binary is there (its CPU and memory are
/// then its own), else in-process; a peer from its binary, or not at all.
fn launch_for(system: System, options: &Options) -> std::result::Result<Launch, String> {
    match system {
        System::Relay => {
            let binary = options.server_bin.clone().or_else(sibling_server_binary);
            match binary {
                Some(binary) if !options.in_process => {
                    Ok(Launch::RelayChild(binary, options.server_args.clone()))
                }
                _ if !options.server_args.is_empty() => Err(format!(
                    "--server-arg {:?} needs Relay as a child process: build relay-server next to relay-stress or pass --server-bin, and leave out --in-process",
                    options.server_args
                )),
                _ => Ok(Launch::RelayInProcess(Box::new(
                    options.target.config.clone().unwrap_or_default(),
                ))),
            }
        }
        System::Redis | System::Nats => {
            let given = match system {
                System::Redis => options.redis_bin.clone(),
                _ => options.nats_bin.clone(),
            };
            let name = binary_name(system);
            match given {
                Some(path) if path.is_file() => Ok(Launch::Peer(system, path)),
                Some(path) => Err(format!("{} is not a file", path.display())),
                None => find_binary(name).map(|p| Launch::Peer(system, p)).ok_or_else(|| {
                    format!(
                        "{name} not found on PATH or in /usr/sbin; install it (apt-get install {name}) or pass --{}-bin",
                        system.key()
                    )
                }),
            }
        }
    }
}

/// Connections any workload holds at once, and then some.
fn max_connections(options: &Options) -> usize {
    let mut n = options
        .latency_subscribers
        .max(options.subscribers.iter().copied().max().unwrap_or(0));
    for (which, clients) in [
        (Which::Rooms, options.rooms_clients),
        (Which::Setup, options.setup_threads * 2),
        (Which::Connections, options.connections),
        (Which::Memory, options.memory_connections),
    ] {
        if options.which.contains(&which) {
            n = n.max(clients);
        }
    }
    n + 64
}

/// Runs the chosen workloads against one system.
/// `tls`: the certificate for a TLS port beside the plain one, on the
/// server fan-out and latency run against (Relay only).
pub(super) fn run_system(launch: &Launch, options: &Options, tls: Option<&TestPki>) -> Vec<Step> {
    let mut steps = Vec::new();
    let max = max_connections(options);
    let in_process = matches!(launch, Launch::RelayInProcess(_));
    if let Err(e) = crate::load::ensure_descriptors(max, in_process) {
        for &which in &options.which {
            steps.push(Step::Done(which, Err(Error::new(e.to_string()))));
        }
        return steps;
    }
    let shared: Vec<Which> = options
        .which
        .iter()
        .copied()
        .filter(|w| {
            matches!(
                w,
                Which::Fanout | Which::Latency | Which::Rooms | Which::Setup
            )
        })
        .collect();
    if !shared.is_empty() {
        let tls = tls.filter(|_| launch.system() == System::Relay);
        let ws = options.ws && launch.system() == System::Relay;
        with_subject(
            launch,
            max,
            (tls, ws),
            &shared,
            &mut steps,
            |subject, steps| {
                for &which in &shared {
                    match which {
                        Which::Fanout => {
                            for &s in &options.subscribers {
                                for over in overs(subject) {
                                    steps.push(Step::Done(
                                        which,
                                        throughput::fanout(subject, options, s, over),
                                    ));
                                }
                            }
                        }
                        Which::Latency => {
                            for over in overs(subject) {
                                steps.push(Step::Done(
                                    which,
                                    throughput::latency(subject, options, over),
                                ));
                            }
                        }
                        Which::Rooms => steps.push(Step::Done(which, rooms::run(subject, options))),
                        Which::Setup => steps.push(Step::Done(which, setup::run(subject, options))),
                        _ => {}
                    }
                }
            },
        );
    }
    if options.which.contains(&Which::Connections) {
        with_subject(
            launch,
            max,
            (None, false),
            &[Which::Connections],
            &mut steps,
            |subject, steps| {
                steps.push(Step::Done(
                    Which::Connections,
                    memory::idle(subject, options),
                ));
            },
        );
    }
    if options.which.contains(&Which::Memory) {
        if launch.system() == System::Relay {
            with_subject(
                launch,
                max,
                (None, false),
                &[Which::Memory],
                &mut steps,
                |subject, steps| {
                    steps.push(Step::Done(Which::Memory, memory::crowd(subject, options)));
                },
            );
        } else {
            steps.push(Step::Line(format!(
                "  memory given back: Relay only (it waits for the server's own count of connections to reach 0); skipped for {}",
                launch.system().name()
            )));
        }
    }
    steps
}

/// The ports fan-out and latency run over: plain, then TLS and WebSocket
/// when the server has those ports (`--tls`, `--ws`), one right after the
/// other on the same server.
fn overs(subject: &Subject) -> Vec<Over> {
    let mut overs = vec![Over::Plain];
    if subject.tls.is_some() {
        overs.push(Over::Tls);
    }
    if subject.ws.is_some() {
        overs.push(Over::Ws);
    }
    overs
}

/// Starts a server, runs `body` against it, stops it.
fn with_subject(
    launch: &Launch,
    max: usize,
    (tls, ws): (Option<&TestPki>, bool),
    workloads: &[Which],
    steps: &mut Vec<Step>,
    body: impl FnOnce(&Subject, &mut Vec<Step>),
) {
    match launch.start(max, tls, ws) {
        Ok(subject) => {
            let names: Vec<&str> = workloads.iter().map(|&w| key(w)).collect();
            steps.push(Step::Line(format!(
                "  {} against {}",
                names.join(", "),
                subject.describe()
            )));
            body(&subject, steps);
            subject.stop();
        }
        Err(error) => {
            for &which in workloads {
                steps.push(Step::Done(
                    which,
                    Err(Error::new(format!("starting the server: {error}"))),
                ));
            }
        }
    }
}

/// Every parameter, for the JSON line.
pub(super) fn parameters(options: &Options) -> Value {
    json!({
        "workloads": options.which.iter().map(|&w| key(w)).collect::<Vec<_>>(),
        "compare": options.compare,
        "repeat": options.repeat,
        "payload_bytes": options.payload.max(crate::swarm::content::MIN_LEN),
        "fanout": {"subscribers": options.subscribers, "messages": options.messages, "batch_bytes": options.batch_bytes},
        "latency": {"rate": options.rate, "subscribers": options.latency_subscribers, "seconds": options.latency_duration.as_secs_f64()},
        "rooms": {"clients": options.rooms_clients, "room_size": options.room_size, "rate_per_client": options.rooms_rate, "seconds": options.rooms_duration.as_secs_f64()},
        "setup": {"connections": options.setup_connections, "threads": options.setup_threads, "closed": "each as soon as its answer arrives"},
        "connections": {"clients": options.connections, "room_size": options.idle_room_size},
        "memory": {"clients": options.memory_connections, "rooms_each": options.memory_rooms, "room_size": options.idle_room_size},
        "client_threads": options.threads,
        "tls": options.tls,
        "websocket": options.ws,
    })
}
