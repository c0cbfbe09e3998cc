//! chaos: many clients doing everything at once, then a strict audit.
//!
//! N clients act at random for D seconds: they join and leave rooms, publish
//! bursts, send heartbeats, disconnect (gracefully, with FIN, with RST, and in
//! the middle of a frame) and reconnect. Some stop reading for a while
//! (pausers), some stop for good (stuck), some send malformed frames. Every
//! client says HELLO with `echo` on, so a publisher learns when the server
//! relayed each of its messages.
//!
//! The audit uses one clock for everything (this process's `Instant`):
//! - a member is guaranteed message m if m was sent after the member's JOIN
//!   ack arrived, and m's echo reached its publisher before the member sent
//!   LEAVE (or closed): the server handled the join before m, and m before
//!   the leave;
//! - a member must never get m if m was sent after its LEAVE ack arrived and
//!   m's echo came back before it sent its next JOIN;
//! - anything else may go either way, but per publisher and room, deliveries
//!   are strictly increasing in sequence (no reordering, no duplicates), and
//!   every delivery is byte-exact one that was really sent;
//! - sessions that left their rooms and read everything the server sent
//!   (left gracefully, or open at the end) must have every guaranteed
//!   message; sessions cut short (FIN, RST, a fatal ERROR, SLOW_CONSUMER)
//!   must have them up to the last one they got from each publisher;
//! - readers that paused either caught up or were told SLOW_CONSUMER, and
//!   nobody else was; each malformed frame got its ERROR (and a close when
//!   fatal); after everyone leaves, the server reports 0 rooms and only the
//!   asking connection.
//!
//! With `--cluster-nodes N` the run starts a `redis-server` and N nodes
//! that share rooms through it (SPEC.md 14), client n on node n mod N, and
//! audits the same way, with two differences: a message crosses to another
//! node after its echo, so between nodes a margin of 2 s stands in for the
//! echo (`audit::CROSS_NODE_TRANSIT`); and a guaranteed message that is
//! missing but covered by a gap notice the member got in that room counts
//! as lost *and reported* (the contract), not lost silently.
//!
//! One concern per file:
//! - `model.rs`: the sessions (memberships, what each published and
//!   received, how it ended) and the world every actor and reader shares;
//! - `connection.rs`: one session's connection, the actor's requests and
//!   their answers, and the reader thread that records what arrives;
//! - `actor.rs`: one client's life, a weighted roll of an `Action` per turn;
//! - `probes.rs`: malformed frames, and a connection that skips HELLO;
//! - `audit.rs`: the rules above, applied to the recorded sessions only;
//! - `figures.rs`: how sessions ended, and the one table of figures that
//!   the human lines and the JSON line are both written from;
//! - here: the options, and the run itself (start the actors, let messages
//!   in flight settle, audit, then check the server still serves and is
//!   empty).

mod actor;
mod audit;
mod connection;
mod figures;
mod model;
mod probes;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{Context, Result};
use crate::report::{Progress, Report};
use crate::rng::Rng;
use crate::target::{Target, TargetOptions};

use actor::actor;
use audit::{audit, outstanding};
use figures::{Outcomes, Summary, figures};
use model::World;

/// Settings of a chaos run.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: TargetOptions,
    /// Logical clients (each reconnects as new sessions).
    pub clients: usize,
    pub duration: Duration,
    /// Rooms to spread over; 0 picks clients / 5 (at least 2).
    pub rooms: usize,
    pub seed: Option<u64>,
    /// No progress lines.
    pub quiet: bool,
    /// 0: one server. N: a cluster of N nodes sharing rooms through a
    /// `redis-server` of the run's own (SPEC.md 14), clients spread over
    /// them.
    pub cluster_nodes: usize,
    /// With `cluster_nodes`: the nodes' `--cluster-order`.
    pub cluster_order: server::ClusterOrder,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: TargetOptions::default(),
            clients: 50,
            duration: Duration::from_secs(20),
            rooms: 0,
            seed: None,
            quiet: false,
            cluster_nodes: 0,
            cluster_order: server::ClusterOrder::Publisher,
        }
    }
}

/// How long to wait for any answer before calling it lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the audit waits for guaranteed messages still in flight.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Two fresh clients (the `client` crate's blocking client), the first on
/// `from` and the second on `to`, can still join, and one's message reaches
/// the other byte-exact.
fn still_serves(from: SocketAddr, to: SocketAddr) -> std::result::Result<(), String> {
    let t = REPLY_TIMEOUT;
    let open = |addr: SocketAddr| -> std::result::Result<client::Client, String> {
        let c = client::Client::connect(addr).map_err(|e| e.to_string())?;
        c.hello_as(Some("chaos-after"), false, t)
            .map_err(|e| e.to_string())?;
        c.join_and_wait("chaos-after", t)
            .map_err(|e| e.to_string())?;
        Ok(c)
    };
    let (publisher, subscriber) = (open(from)?, open(to)?);
    let content = json!({"still": "here", "n": [1, 2, 3]});
    publisher
        .send_json("chaos-after", &content)
        .map_err(|e| e.to_string())?;
    let got = subscriber
        .wait_for(t, "the message after the chaos", |event| match event {
            client::Event::Message(m) => Some(m.body.as_json().map(str::to_owned)),
            _ => None,
        })
        .map_err(|e| e.to_string())?;
    if got.as_deref() != Some(content.to_string().as_str()) {
        return Err(format!("got {got:?}, sent {content}"));
    }
    for c in [publisher, subscriber] {
        c.leave_and_wait("chaos-after", t)
            .map_err(|e| e.to_string())?;
        c.close();
    }
    Ok(())
}

/// Runs chaos against the target, or a cluster of its own.
pub fn run(options: &Options) -> Result<Report> {
    if options.cluster_nodes > 0 {
        let cluster = crate::cluster::Cluster::start(
            options.cluster_nodes,
            options.cluster_order,
            &options.target,
        )?;
        let nodes: Vec<&Target> = cluster.nodes.iter().collect();
        let report = run_on_nodes(&nodes, options);
        cluster.stop();
        return report;
    }
    let target = Target::start(&options.target)?;
    let report = run_on(&target, options);
    target.stop();
    report
}

/// Runs chaos against a server that is already there.
pub fn run_on(target: &Target, options: &Options) -> Result<Report> {
    run_on_nodes(&[target], options)
}

/// Runs chaos against one server, or the nodes of a cluster.
fn run_on_nodes(nodes: &[&Target], options: &Options) -> Result<Report> {
    let target = nodes[0];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr()).collect();
    let seed = options.seed.unwrap_or_else(Rng::clock_seed);
    let rooms = if options.rooms == 0 {
        (options.clients / 5).max(2)
    } else {
        options.rooms
    };
    let progress = Progress::new("chaos", options.quiet);
    let mut slow_before = 0;
    for node in nodes {
        slow_before += node
            .stats()
            .context("reading the server's counters before the run")?
            .slow_consumers;
    }
    let started = Instant::now();
    let world = Arc::new(World::new(addrs.clone(), rooms, started + options.duration));
    let actors: Vec<JoinHandle<()>> = (0..options.clients)
        .map(|client| {
            let world = Arc::clone(&world);
            thread::Builder::new()
                .name(format!("chaos-{client}"))
                .stack_size(256 * 1024)
                .spawn(move || actor(world, client, seed))
        })
        .collect::<io::Result<_>>()
        .context("starting the chaos clients")?;
    let mut ticker = progress;
    while actors.iter().any(|a| !a.is_finished()) {
        sleep(Duration::from_millis(100));
        let c = &world.counters;
        ticker.tick(|| {
            format!(
                "{:.0}/{} s: {} sessions, {} published, {} delivered, {} joins, {} leaves, {} pauses, {} malformed",
                started.elapsed().as_secs_f64(),
                options.duration.as_secs(),
                c.sessions.load(Ordering::Relaxed),
                c.published.load(Ordering::Relaxed),
                c.delivered.load(Ordering::Relaxed),
                c.joins.load(Ordering::Relaxed),
                c.leaves.load(Ordering::Relaxed),
                c.pauses.load(Ordering::Relaxed),
                c.malformed.load(Ordering::Relaxed),
            )
        });
    }
    let mut panicked = 0;
    for actor in actors {
        if actor.join().is_err() {
            panicked += 1;
        }
    }
    // Let guaranteed messages still in flight arrive.
    let settle_started = Instant::now();
    let mut sessions = world.all_sessions();
    let mut missing = outstanding(&sessions);
    while missing > 0 && settle_started.elapsed() < SETTLE_TIMEOUT {
        sleep(Duration::from_millis(100));
        sessions = world.all_sessions();
        missing = outstanding(&sessions);
    }
    // Close the sessions still open, so the audit sees final states.
    for session in &sessions {
        session.abandon.store(true, Ordering::Release);
    }
    let audit = audit(&sessions);
    let outcomes = Outcomes::of(&sessions);
    drop(sessions);

    let mut report = Report::new("chaos");
    for failure in outcomes.failures.iter().chain(&audit.failures) {
        report.fail(failure.clone());
    }
    report.check(
        missing == 0 || audit.lost > 0,
        format!("{missing} guaranteed messages still missing after settling"),
    );
    report.check(
        panicked == 0,
        format!("{panicked} chaos client threads panicked"),
    );
    report.check(
        outcomes.malformed_sent > 0 || options.clients < 10,
        "no malformed frame was sent",
    );
    // Close every session still open, then check the server.
    let finals = std::mem::take(&mut *world.finals.lock().unwrap_or_else(|p| p.into_inner()));
    for live in finals {
        live.finish();
    }
    // Across nodes, in a cluster: the last node's client hears the first's.
    let serves = still_serves(addrs[0], addrs[addrs.len() - 1]);
    if let Err(e) = &serves {
        report.fail(format!("the server no longer serves a new client: {e}"));
    }
    let mut after = None;
    let mut slow_after = 0;
    for (node, addr) in addrs.iter().enumerate() {
        let (stats, settled) = crate::wire::wait_for_stats(*addr, Duration::from_secs(15), |s| {
            s.rooms == 0 && s.connections == 1
        })?;
        report.check(
            settled,
            format!(
                "after everyone left node {node} still reports {} rooms and {} connections (want 0 and 1)",
                stats.rooms, stats.connections
            ),
        );
        slow_after += stats.slow_consumers;
        after = after.or(Some(stats));
    }
    let Some(after) = after else {
        return Err(crate::error::Error::new("chaos needs a server"));
    };
    let described = if nodes.len() > 1 {
        format!(
            "a cluster of {} in-process nodes sharing rooms through redis-server ({})",
            nodes.len(),
            target.describe()
        )
    } else {
        target.describe()
    };
    figures(&Summary {
        target: described,
        mode: target.mode(),
        clients: options.clients,
        rooms,
        duration_s: options.duration.as_secs_f64(),
        seed,
        counters: &world.counters,
        outcomes: &outcomes,
        audit: &audit,
        still_serves: serves.is_ok(),
        after: &after,
        slow_consumers: slow_after - slow_before,
        seconds: started.elapsed().as_secs_f64(),
    })
    .write_to(&mut report);
    Ok(report)
}
