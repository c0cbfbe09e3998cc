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
    /// A running server to test, HOST:PORT; without it one starts in-process.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// With --addr: the server's process id, to read its memory from /proc.
    #[arg(long, global = true, value_name = "PID")]
    server_pid: Option<u32>,
    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

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
    },
    /// Headline figures: fan-out, latency, memory per idle connection.
    Bench {
        /// Which benchmarks, comma-separated: fanout, latency, connections.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "fanout,latency,connections"
        )]
        only: Vec<Which>,
        /// Fan-out subscriber counts (S), one run each.
        #[arg(long, value_delimiter = ',', default_value = "100,10")]
        subscribers: Vec<usize>,
        /// Content bytes per message (P, at least 37).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Messages per fan-out run (M).
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        /// KiB of frames per publisher write.
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
        /// Connections run: idle joined clients (N).
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        /// Connections run: clients per room.
        #[arg(long, default_value_t = 10)]
        idle_room_size: usize,
        /// Subscriber threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Server binary for the connections run (default: `relay-server` next to
        /// this executable, when built).
        #[arg(long, value_name = "PATH")]
        server_bin: Option<PathBuf>,
        /// Measure connections on the in-process server (includes this
        /// tool's memory) even when a server binary is there.
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
        } => chaos::run(&chaos::Options {
            target,
            clients,
            duration: seconds(duration)?,
            rooms,
            seed,
            quiet,
        }),
        Scenario::Load {
            clients,
            room_size,
            rate,
            duration,
            payload,
            threads,
        } => load::run(&load::Options {
            target,
            clients,
            room_size,
            rate,
            duration: seconds(duration)?,
            payload,
            threads,
            quiet,
        }),
        Scenario::Bench {
            only,
            subscribers,
            payload,
            messages,
            batch_kib,
            rate,
            latency_subscribers,
            latency_seconds,
            connections,
            idle_room_size,
            threads,
            server_bin,
            in_process,
            check_targets,
        } => bench::run(&bench::Options {
            target,
            which: only,
            subscribers,
            payload,
            messages,
            batch_bytes: batch_kib * 1024,
            rate,
            latency_subscribers,
            latency_duration: seconds(latency_seconds)?,
            connections,
            idle_room_size,
            threads,
            server_bin,
            in_process_connections: in_process,
            check_targets,
            quiet,
        }),
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
