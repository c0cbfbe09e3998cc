//! `stress <fragmentation|chaos|load|bench>`: runs one scenario, prints its
//! report and, last, one JSON line; exits 1 when the verdict fails and 2 when
//! the scenario could not run.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use stress::bench::Which;
use stress::{Error, Report, TargetOptions, bench, chaos, fragmentation, load};

/// Relay's stress scenarios, each with a verdict and figures.
///
/// Without --addr the server starts in-process on 127.0.0.1 with an
/// ephemeral port. The report goes to stdout, its last line one JSON object
/// with every figure and parameter; progress lines go to stderr.
#[derive(Debug, Parser)]
#[command(name = "relay-stress", version)]
struct Cli {
    /// A running Relay server to test, HOST:PORT; without it one is started
    /// (in-process; bench: the relay-server binary when built, else
    /// in-process).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// With --addr or --target: the server's process id, to read its CPU and
    /// memory from /proc.
    #[arg(long, global = true, value_name = "PID")]
    server_pid: Option<u32>,
    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

// Parsed once per run: the size of the bench variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Scenario {
    /// Frames split every which way; checked by the server's exact answers.
    Fragmentation {
        /// Seed of the random chunking (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Pause between pieces, in microseconds.
        #[arg(long, default_value_t = 1000)]
        pause_us: u64,
    },
    /// Clients joining, leaving, publishing, disconnecting, stalling and
    /// misbehaving at once; then an audit of every delivery.
    Chaos {
        /// Clients.
        #[arg(long, short = 'n', default_value_t = 50)]
        clients: usize,
        /// Seconds of chaos.
        #[arg(long, short, default_value_t = 20.0)]
        duration: f64,
        /// Rooms (default: clients / 5, at least 2).
        #[arg(long, default_value_t = 0)]
        rooms: usize,
        /// Seed of every random choice (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Run a cluster of this many nodes instead of one server: starts
        /// redis-server and the nodes (in this process), and spreads the
        /// clients over them (SPEC.md 14).
        #[arg(long, default_value_t = 0)]
        cluster_nodes: usize,
        /// With --cluster-nodes: publisher (each node numbers its rooms)
        /// or room (Redis numbers each room's messages, one order on
        /// every node; SPEC.md 14.2).
        #[arg(long, default_value = "publisher", value_parser = |s: &str| s.parse::<server::ClusterOrder>())]
        cluster_order: server::ClusterOrder,
    },
    /// N clients in rooms publishing at a set rate: throughput, latency,
    /// memory.
    Load {
        /// Clients (up to 10 000 and more, on a few threads).
        #[arg(long, short = 'n', default_value_t = 100)]
        clients: usize,
        /// Clients per room.
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Messages per second, per client.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Seconds of publishing.
        #[arg(long, short, default_value_t = 10.0)]
        duration: f64,
        /// Bytes of each message's content (at least 37).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Client threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Run a cluster of this many nodes instead of one server: starts
        /// redis-server and the nodes (in this process), and spreads each
        /// room's clients over them (SPEC.md 14).
        #[arg(long, default_value_t = 0)]
        cluster_nodes: usize,
        /// With --cluster-nodes: publisher (each node numbers its rooms)
        /// or room (Redis numbers each room's messages, one order on
        /// every node; SPEC.md 14.2).
        #[arg(long, default_value = "publisher", value_parser = |s: &str| s.parse::<server::ClusterOrder>())]
        cluster_order: server::ClusterOrder,
    },
    /// Headline figures (fan-out, latency, rooms, setup, memory), for Relay
    /// alone or side by side with Redis and NATS (--compare).
    Bench {
        /// Which benchmarks, comma-separated: fanout, latency, rooms, setup,
        /// connections, memory.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "fanout,latency,rooms,setup,connections,memory"
        )]
        only: Vec<Which>,
        /// The server to measure: relay://HOST:PORT, redis://HOST:PORT or
        /// nats://HOST:PORT (with --server-pid for its CPU and memory).
        #[arg(long, value_name = "URL", conflicts_with = "addr")]
        target: Option<String>,
        /// Start relay-server, redis-server and nats-server (from PATH) and
        /// run every workload against each; prints a side-by-side table.
        #[arg(long)]
        compare: bool,
        /// Also run fan-out and latency over Relay's TLS port, beside plain
        /// TCP on the same server (a throwaway CA and certificate are made
        /// for the run). Relay only; not with --addr or --target.
        #[arg(long)]
        tls: bool,
        /// Also run fan-out and latency over Relay's WebSocket port, beside
        /// plain TCP on the same server. Relay only; not with --addr or
        /// --target.
        #[arg(long)]
        ws: bool,
        /// Runs of every workload; the table shows medians.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Fan-out subscriber counts (S), one run each.
        #[arg(long, value_delimiter = ',', default_value = "100,10")]
        subscribers: Vec<usize>,
        /// Content bytes per message (P, at least 37).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Messages per fan-out run (M).
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        /// KiB of messages per publisher write.
        #[arg(long, default_value_t = 64)]
        batch_kib: usize,
        /// Latency run: messages per second.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Latency run: subscribers.
        #[arg(long, default_value_t = 10)]
        latency_subscribers: usize,
        /// Latency run: seconds.
        #[arg(long, default_value_t = 5.0)]
        latency_seconds: f64,
        /// Rooms run: clients.
        #[arg(long, default_value_t = 1000)]
        rooms_clients: usize,
        /// Rooms run: clients per room.
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Rooms run: messages per second, per client.
        #[arg(long, default_value_t = 5.0)]
        rooms_rate: f64,
        /// Rooms run: seconds of publishing.
        #[arg(long, default_value_t = 10.0)]
        rooms_seconds: f64,
        /// Setup run: connections, each closed once its join is answered.
        #[arg(long, default_value_t = 5000)]
        setup_connections: usize,
        /// Setup run: threads opening them.
        #[arg(long, default_value_t = 4)]
        setup_threads: usize,
        /// Connections run: idle joined clients (N).
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        /// Connections and memory runs: clients per room.
        #[arg(long, default_value_t = 10)]
        idle_room_size: usize,
        /// Memory run: clients (C).
        #[arg(long, default_value_t = 4000)]
        memory_connections: usize,
        /// Memory run: rooms each client joins (K).
        #[arg(long, default_value_t = 100)]
        memory_rooms: usize,
        /// Client threads of the swarm.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Relay's server binary (default: `relay-server` next to this
        /// executable, when built).
        #[arg(long, value_name = "PATH")]
        server_bin: Option<PathBuf>,
        /// One more flag for the relay-server this tool starts, as one
        /// argument (repeatable): `--server-arg=--http-addr=127.0.0.1:0`
        /// measures Relay with its HTTP endpoint on. Needs Relay as a
        /// child process (not --in-process, --addr or --target).
        #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
        server_args: Vec<String>,
        /// --compare: redis-server binary (default: from PATH).
        #[arg(long, value_name = "PATH")]
        redis_bin: Option<PathBuf>,
        /// --compare: nats-server binary (default: from PATH or /usr/sbin).
        #[arg(long, value_name = "PATH")]
        nats_bin: Option<PathBuf>,
        /// Run Relay in this process even when its binary is there (its CPU
        /// is then not measured and its memory includes this tool's).
        #[arg(long)]
        in_process: bool,
        /// Fail when a figure misses the server issue's bar.
        #[arg(long)]
        check_targets: bool,
    },
}

fn seconds(value: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Error::new(format!("{value} is not a number of seconds")))
}

fn resolve(addr: &str) -> Result<SocketAddr, Error> {
    addr.to_socket_addrs()
        .map_err(|e| Error::new(format!("--addr {addr}: {e}; use HOST:PORT")))?
        .next()
        .ok_or_else(|| Error::new(format!("--addr {addr} resolves to no address")))
}

fn run(cli: Cli) -> Result<Report, Error> {
    let target = TargetOptions {
        addr: cli.addr.as_deref().map(resolve).transpose()?,
        server_pid: cli.server_pid,
        config: None,
    };
    let quiet = cli.quiet;
    match cli.scenario {
        Scenario::Fragmentation { seed, pause_us } => fragmentation::run(&fragmentation::Options {
            target,
            seed,
            pause: Duration::from_micros(pause_us),
        }),
        Scenario::Chaos {
            clients,
            duration,
            rooms,
            seed,
            cluster_nodes,
            cluster_order,
        } => chaos::run(&chaos::Options {
            target,
            clients,
            duration: seconds(duration)?,
            rooms,
            seed,
            quiet,
            cluster_nodes,
            cluster_order,
        }),
        Scenario::Load {
            clients,
            room_size,
            rate,
            duration,
            payload,
            threads,
            cluster_nodes,
            cluster_order,
        } => load::run(&load::Options {
            target,
            clients,
            room_size,
            rate,
            duration: seconds(duration)?,
            payload,
            threads,
            quiet,
            cluster_nodes,
            cluster_order,
        }),
        Scenario::Bench {
            only,
            target: bench_target,
            compare,
            tls,
            ws,
            repeat,
            subscribers,
            payload,
            messages,
            batch_kib,
            rate,
            latency_subscribers,
            latency_seconds,
            rooms_clients,
            room_size,
            rooms_rate,
            rooms_seconds,
            setup_connections,
            setup_threads,
            connections,
            idle_room_size,
            memory_connections,
            memory_rooms,
            threads,
            server_bin,
            server_args,
            redis_bin,
            nats_bin,
            in_process,
            check_targets,
        } => {
            let mut target = target;
            let mut system = stress::peer::System::Relay;
            if let Some(url) = bench_target {
                let (s, addr) = stress::peer::parse_target(&url)?;
                system = s;
                target.addr = Some(addr);
            }
            bench::run(&bench::Options {
                target,
                system,
                which: only,
                compare,
                tls,
                ws,
                repeat: repeat.max(1),
                subscribers,
                payload,
                messages,
                batch_bytes: batch_kib * 1024,
                rate,
                latency_subscribers,
                latency_duration: seconds(latency_seconds)?,
                rooms_clients,
                room_size,
                rooms_rate,
                rooms_duration: seconds(rooms_seconds)?,
                setup_connections,
                setup_threads,
                connections,
                idle_room_size,
                memory_connections,
                memory_rooms,
                threads,
                server_bin,
                server_args,
                redis_bin,
                nats_bin,
                in_process,
                check_targets,
                quiet,
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(report) => {
            print!("{}", report.render());
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("stress: {error}");
            ExitCode::from(2)
        }
    }
}
