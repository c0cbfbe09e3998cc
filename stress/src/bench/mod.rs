//! bench: the headline figures, each with its exact parameters, for Relay
//! alone or side by side with Redis pub/sub and NATS core (`--compare`).
//!
//! - fan-out: one publisher, S subscribers in one room, M messages with a
//!   P-byte content as fast as the server takes them; deliveries per second
//!   from the first publish to the last delivery, and whether every
//!   subscriber got every message in order.
//! - latency: a fixed publish rate to a few subscribers; p50/p99/p99.9, and
//!   the server's CPU while it runs.
//! - rooms: N clients in rooms of 10, each publishing r msg/s for D s:
//!   deliveries/s, server CPU as % of one core, p50/p99 latency.
//! - setup: connect, greet, join one room and wait for the answer, from a
//!   few threads, each connection closed once answered: connections/s.
//! - connections: N idle clients that joined rooms; server memory per
//!   connection, (RSS after − RSS before) / N.
//! - memory (Relay only): C clients each in K rooms, then all leave; RSS at
//!   the peak, once the server counts 0 connections, and the share of the
//!   growth given back.
//!
//! The client side is built not to be the bottleneck: subscribers live on a
//! few `mio` threads reading 256 KiB at a time and parse only message
//! headers and the fixed-width fields of the content ([`crate::swarm`]); the
//! publisher writes ~64 KiB of ready-made messages per `write` and lets the
//! server's backpressure pace it.
//!
//! - `subject.rs`: the server under test and how to start a fresh one;
//! - `throughput.rs`: fan-out and latency; `rooms.rs`; `setup.rs`;
//!   `memory.rs`: idle connections and the memory given back;
//! - `table.rs`: the bars, medians of repeated runs, and the side-by-side
//!   table;
//! - `plan.rs`: which systems and workloads one invocation runs;
//! - here: the options and the run.

mod memory;
mod plan;
mod rooms;
mod setup;
mod subject;
mod table;
mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

pub use self::table::targets;
use self::table::{Metric, Results};
use crate::error::Result;
use crate::peer::System;
use crate::report::{Figures, Report};
use crate::target::TargetOptions;

/// Which benchmarks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Fanout,
    Latency,
    Rooms,
    Setup,
    Connections,
    Memory,
}

impl Which {
    pub const ALL: [Which; 6] = [
        Which::Fanout,
        Which::Latency,
        Which::Rooms,
        Which::Setup,
        Which::Connections,
        Which::Memory,
    ];
}

impl std::str::FromStr for Which {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Which, String> {
        match s {
            "fanout" | "fan-out" => Ok(Which::Fanout),
            "latency" => Ok(Which::Latency),
            "rooms" => Ok(Which::Rooms),
            "setup" => Ok(Which::Setup),
            "connections" => Ok(Which::Connections),
            "memory" => Ok(Which::Memory),
            _ => Err(format!(
                "unknown benchmark {s:?}; choose fanout, latency, rooms, setup, connections or memory"
            )),
        }
    }
}

/// Settings of a bench run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Relay's address and pid (`--addr`, `--server-pid`), or a peer's with
    /// `system`.
    pub target: TargetOptions,
    /// The system at `target.addr` (`--target redis://...`).
    pub system: System,
    pub which: Vec<Which>,
    /// Start Relay, Redis and NATS and run every workload against each.
    pub compare: bool,
    /// Runs of each workload; the table shows medians.
    pub repeat: usize,
    /// Fan-out sizes to run, one run each (S).
    pub subscribers: Vec<usize>,
    /// Content bytes per message (P).
    pub payload: usize,
    /// Messages per fan-out run (M).
    pub messages: u64,
    /// Bytes of messages the publisher hands to each `write`.
    pub batch_bytes: usize,
    /// Latency run: messages per second, subscribers, seconds.
    pub rate: f64,
    pub latency_subscribers: usize,
    pub latency_duration: Duration,
    /// Rooms run: clients, clients per room, msg/s per client, seconds.
    pub rooms_clients: usize,
    pub room_size: usize,
    pub rooms_rate: f64,
    pub rooms_duration: Duration,
    /// Setup run: connections, and the threads making them.
    pub setup_connections: usize,
    pub setup_threads: usize,
    /// Connections run: idle clients (N) and their room size.
    pub connections: usize,
    pub idle_room_size: usize,
    /// Memory run: clients (C), rooms each joins (K).
    pub memory_connections: usize,
    pub memory_rooms: usize,
    /// Client threads of the swarm.
    pub threads: usize,
    /// The Relay server binary (default: `relay-server` next to this
    /// executable, when there).
    pub server_bin: Option<PathBuf>,
    /// Extra flags for the `relay-server` this tool starts
    /// (`--server-arg`, repeatable), e.g. `--http-addr=127.0.0.1:0`.
    pub server_args: Vec<String>,
    /// Peer binaries for `--compare` (default: from PATH).
    pub redis_bin: Option<PathBuf>,
    pub nats_bin: Option<PathBuf>,
    /// Run Relay in this process even if a server binary is there.
    pub in_process: bool,
    /// Also run fan-out and latency over Relay's TLS port, beside plain TCP
    /// on the same server (a certificate is made for the run).
    pub tls: bool,
    /// Also run fan-out and latency over Relay's WebSocket port, beside
    /// plain TCP on the same server.
    pub ws: bool,
    /// Fail the verdict when a figure misses its bar.
    pub check_targets: bool,
    pub quiet: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: TargetOptions::default(),
            system: System::Relay,
            which: Which::ALL.to_vec(),
            compare: false,
            repeat: 1,
            subscribers: vec![100, 10],
            payload: 64,
            messages: 200_000,
            batch_bytes: 64 * 1024,
            rate: 2000.0,
            latency_subscribers: 10,
            latency_duration: Duration::from_secs(5),
            rooms_clients: 1000,
            room_size: 10,
            rooms_rate: 5.0,
            rooms_duration: Duration::from_secs(10),
            setup_connections: 5000,
            setup_threads: 4,
            connections: 5000,
            idle_room_size: 10,
            memory_connections: 4000,
            memory_rooms: 100,
            threads: 2,
            server_bin: None,
            server_args: Vec::new(),
            redis_bin: None,
            nats_bin: None,
            in_process: false,
            tls: false,
            ws: false,
            check_targets: false,
            quiet: false,
        }
    }
}

/// What one workload run gives: its figures (human lines and JSON from one
/// table), its correctness checks, and the numbers the table and bars use.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub figures: Figures,
    pub checks: Vec<(bool, String)>,
    pub metrics: Vec<(Metric, f64)>,
}

impl Outcome {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        self.checks.push((ok, what.into()));
    }

    fn metric(&mut self, metric: Metric, value: Option<f64>) {
        if let Some(value) = value.filter(|v| v.is_finite()) {
            self.metrics.push((metric, value));
        }
    }
}

/// Runs the chosen benchmarks against every chosen system.
pub fn run(options: &Options) -> Result<Report> {
    crate::sys::start_clock();
    let mut report = Report::new("bench");
    let systems = plan::systems(options)?;
    if options.tls && options.target.addr.is_some() {
        return Err(crate::error::Error::new(
            "--tls starts Relay with a TLS port of its own; leave out --addr and --target",
        ));
    }
    if options.ws && options.target.addr.is_some() {
        return Err(crate::error::Error::new(
            "--ws starts Relay with a WebSocket port of its own; leave out --addr and --target",
        ));
    }
    let pki = if options.tls {
        Some(crate::tls::TestPki::generate()?)
    } else {
        None
    };
    let mut results = Results::default();
    let mut json_systems = Map::new();
    for (system, launch) in &systems {
        let launch = match launch {
            Ok(launch) => launch,
            Err(why) => {
                report.line(format!("{}: not run: {why}", system.name()));
                json_systems.insert(system.key().into(), serde_json::json!({"not_run": why}));
                continue;
            }
        };
        let mut runs = Vec::new();
        for round in 0..options.repeat.max(1) {
            let mut run_json = Map::new();
            report.line(format!(
                "{}{}:",
                system.name(),
                if options.repeat > 1 {
                    format!(", run {} of {}", round + 1, options.repeat)
                } else {
                    String::new()
                }
            ));
            for step in plan::run_system(launch, options, pki.as_ref()) {
                let (which, outcome) = match step {
                    plan::Step::Line(line) => {
                        report.line(line);
                        continue;
                    }
                    plan::Step::Done(which, outcome) => (which, outcome),
                };
                let key = plan::key(which);
                match outcome {
                    Ok(outcome) => {
                        let (lines, json) = outcome.figures.into_parts();
                        for line in lines {
                            report.line(line);
                        }
                        for (ok, what) in outcome.checks {
                            report.check(ok, format!("{} {key}: {what}", system.name()));
                        }
                        results.add(*system, outcome.metrics);
                        push_run(&mut run_json, key, which, Value::Object(json));
                    }
                    Err(error) => {
                        report.fail(format!("{} {key}: could not run: {error}", system.name()));
                        push_run(
                            &mut run_json,
                            key,
                            which,
                            serde_json::json!({"error": error.to_string()}),
                        );
                    }
                }
            }
            runs.push(Value::Object(run_json));
        }
        json_systems.insert(
            system.key().into(),
            serde_json::json!({
                "runs": runs,
                "medians": results.medians_json(*system),
            }),
        );
    }
    table::write(&mut report, options, &systems, &results);
    report.set("systems", Value::Object(json_systems));
    report.set("parameters", plan::parameters(options));
    report.set("check_targets", options.check_targets);
    Ok(report)
}

/// Adds one workload's figures to a run's JSON: fan-out runs (one per S)
/// make an array, the others one object each.
fn push_run(run: &mut Map<String, Value>, key: &str, which: Which, value: Value) {
    if which == Which::Fanout {
        let entry = run
            .entry(key.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = entry {
            items.push(value);
        }
    } else {
        run.insert(key.to_owned(), value);
    }
}
