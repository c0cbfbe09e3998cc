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

mod actor;
mod audit;
mod connection;
mod model;
mod probes;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{Context, Result};
use crate::report::{Progress, Report};
use crate::rng::Rng;
use crate::target::{Target, TargetOptions};

use actor::actor;
use audit::{audit, outstanding};
use model::{Counters, End, World};

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
        }
    }
}

/// How long to wait for any answer before calling it lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the audit waits for guaranteed messages still in flight.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Two fresh clients (the `client` crate's blocking client) can still join,
/// and one's message reaches the other byte-exact.
fn still_serves(addr: SocketAddr) -> std::result::Result<(), String> {
    let t = REPLY_TIMEOUT;
    let open = || -> std::result::Result<client::Client, String> {
        let c = client::Client::connect(addr).map_err(|e| e.to_string())?;
        c.hello_as(Some("chaos-after"), false, t)
            .map_err(|e| e.to_string())?;
        c.join_and_wait("chaos-after", t)
            .map_err(|e| e.to_string())?;
        Ok(c)
    };
    let (publisher, subscriber) = (open()?, open()?);
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

/// Runs chaos against the target.
pub fn run(options: &Options) -> Result<Report> {
    let target = Target::start(&options.target)?;
    let report = run_on(&target, options);
    target.stop();
    report
}

/// Runs chaos against a server that is already there.
pub fn run_on(target: &Target, options: &Options) -> Result<Report> {
    let seed = options.seed.unwrap_or_else(Rng::clock_seed);
    let rooms = if options.rooms == 0 {
        (options.clients / 5).max(2)
    } else {
        options.rooms
    };
    let progress = Progress::new("chaos", options.quiet);
    let before = target
        .stats()
        .context("reading the server's counters before the run")?;
    let started = Instant::now();
    let world = Arc::new(World {
        addr: target.addr(),
        rooms,
        deadline: started + options.duration,
        sessions: Mutex::new(Vec::new()),
        by_id: Mutex::new(HashMap::new()),
        counters: Counters::default(),
        finals: Mutex::new(Vec::new()),
    });
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
    let acted = started.elapsed();
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
    let audit_result = audit(&sessions);

    let mut report = Report::new("chaos");
    report.line(format!(
        "chaos against {}: {} clients, {} rooms, {:.1} s, seed {seed}",
        target.describe(),
        options.clients,
        rooms,
        acted.as_secs_f64()
    ));
    // Session outcomes and per-role facts.
    let mut ends: HashMap<&'static str, u64> = HashMap::new();
    let mut roles: HashMap<&'static str, u64> = HashMap::new();
    let mut bad_total = 0u64;
    let mut bad_ok = 0u64;
    let mut bad_by_code: HashMap<String, u64> = HashMap::new();
    let mut stalled_caught_up = 0u64;
    let mut stalled_cut = 0u64;
    let mut stalled_neither = 0u64;
    let mut member_events = 0u64;
    let mut published = 0u64;
    for session in &sessions {
        let state = session.lock();
        *roles.entry(session.role.name()).or_default() += 1;
        let end = state.end.unwrap_or(End::Unexpected);
        *ends.entry(end.name()).or_default() += 1;
        member_events += state.member_events;
        published += state.published.len() as u64;
        for problem in state
            .problems
            .iter()
            .chain(&state.corrupt)
            .chain(&state.unexpected_errors)
        {
            report.fail(problem.clone());
        }
        if state.end.is_none() {
            report.fail(format!(
                "client {} ({}) never finished its session",
                session.client, session.id
            ));
        }
        for bad in &state.bad {
            bad_total += 1;
            *bad_by_code.entry(bad.expected.to_string()).or_default() += 1;
            match &bad.problem {
                None => bad_ok += 1,
                Some(problem) => report.fail(format!(
                    "malformed frame ({}) from client {}: {problem}",
                    bad.kind, session.client
                )),
            }
        }
        if state.stopped_reading {
            if state.slow_consumer {
                stalled_cut += 1;
            } else if end.complete() {
                stalled_caught_up += 1;
            } else if !matches!(
                end,
                End::Fin | End::Rst | End::MidFrameFin | End::MidFrameRst
            ) {
                stalled_neither += 1;
                report.fail(format!(
                    "{} client {} ({}) stopped reading and neither caught up nor got SLOW_CONSUMER (ended {})",
                    session.role.name(),
                    session.client,
                    session.id,
                    end.name()
                ));
            }
        }
    }
    drop(sessions);
    let a = &audit_result;
    for failure in &a.failures {
        report.fail(failure.clone());
    }
    let c = &world.counters;
    report.line(format!(
        "  sessions {} (by end: {}), joins {}, leaves {}, heartbeats {}, published {}, deliveries {}, membership events {}",
        c.sessions.load(Ordering::Relaxed),
        sorted(&ends),
        c.joins.load(Ordering::Relaxed),
        c.leaves.load(Ordering::Relaxed),
        c.heartbeats.load(Ordering::Relaxed),
        published,
        a.deliveries,
        member_events
    ));
    report.line(format!(
        "  guaranteed deliveries {} received {}, lost {}, gaps before a cut {}, out of order {}, duplicated {}, leaked outside membership {}, never sent {}, timing-ambiguous {}",
        a.guaranteed, a.guaranteed_received, a.lost, a.gaps, a.out_of_order, a.duplicates, a.leaked, a.phantom, a.in_between
    ));
    report.line(format!(
        "  readers that stopped: {} caught up, {} cut off with SLOW_CONSUMER, {} neither; pauses {}",
        stalled_caught_up,
        stalled_cut,
        stalled_neither,
        c.pauses.load(Ordering::Relaxed)
    ));
    report.line(format!(
        "  malformed frames {bad_total}, answered right {bad_ok} ({}); HELLO skipped {}",
        sorted(&bad_by_code),
        c.no_hello.load(Ordering::Relaxed)
    ));
    report.check(
        missing == 0 || a.lost > 0,
        format!("{missing} guaranteed messages still missing after settling"),
    );
    report.check(
        panicked == 0,
        format!("{panicked} chaos client threads panicked"),
    );
    report.check(
        bad_total > 0 || options.clients < 10,
        "no malformed frame was sent",
    );
    // Close every session still open, then check the server.
    let finals = std::mem::take(&mut *world.finals.lock().unwrap_or_else(|p| p.into_inner()));
    for live in finals {
        live.finish();
    }
    let serves = still_serves(target.addr());
    report.line(format!(
        "  server still serves a new client: {}",
        match &serves {
            Ok(()) => "yes".to_owned(),
            Err(e) => format!("NO ({e})"),
        }
    ));
    if let Err(e) = &serves {
        report.fail(format!("the server no longer serves a new client: {e}"));
    }
    let (after, settled) =
        crate::wire::wait_for_stats(target.addr(), Duration::from_secs(15), |s| {
            s.rooms == 0 && s.connections == 1
        })?;
    report.line(format!(
        "  after everyone left: {} rooms, {} connections (the asking one included); server counted {} slow consumers, errors {:?}",
        after.rooms,
        after.connections,
        after.slow_consumers - before.slow_consumers,
        after.errors
    ));
    report.check(
        settled,
        format!(
            "after everyone left the server still reports {} rooms and {} connections (want 0 and 1)",
            after.rooms, after.connections
        ),
    );
    report.set("target", target.mode());
    report.set("clients", options.clients);
    report.set("rooms", rooms);
    report.set("duration_s", options.duration.as_secs_f64());
    report.set("seed", seed);
    report.set("sessions", c.sessions.load(Ordering::Relaxed));
    report.set("roles", json!(roles));
    report.set("session_ends", json!(ends));
    report.set("joins", c.joins.load(Ordering::Relaxed));
    report.set("leaves", c.leaves.load(Ordering::Relaxed));
    report.set("heartbeats", c.heartbeats.load(Ordering::Relaxed));
    report.set("published", published);
    report.set("deliveries", a.deliveries);
    report.set("membership_events", member_events);
    report.set("guaranteed", a.guaranteed);
    report.set("guaranteed_received", a.guaranteed_received);
    report.set("lost", a.lost);
    report.set("gaps_before_cut", a.gaps);
    report.set("out_of_order", a.out_of_order);
    report.set("duplicates", a.duplicates);
    report.set("leaked", a.leaked);
    report.set("never_sent", a.phantom);
    report.set("timing_ambiguous", a.in_between);
    report.set("complete_sessions", a.complete_sessions);
    report.set("cut_sessions", a.cut_sessions);
    report.set("pauses", c.pauses.load(Ordering::Relaxed));
    report.set("stopped_readers_caught_up", stalled_caught_up);
    report.set("stopped_readers_cut_off", stalled_cut);
    report.set("stopped_readers_neither", stalled_neither);
    report.set("malformed_sent", bad_total);
    report.set("malformed_answered", bad_ok);
    report.set("malformed_by_code", json!(bad_by_code));
    report.set("hello_skipped", c.no_hello.load(Ordering::Relaxed));
    report.set("still_serves", serves.is_ok());
    report.set("final_rooms", after.rooms);
    report.set("final_connections", after.connections);
    report.set(
        "server_slow_consumers",
        after.slow_consumers - before.slow_consumers,
    );
    report.set("server_errors", json!(after.errors));
    report.set(
        "seconds",
        crate::report::round(started.elapsed().as_secs_f64(), 3),
    );
    Ok(report)
}

fn sorted(map: &HashMap<impl AsRef<str>, u64>) -> String {
    let mut items: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{} {v}", k.as_ref()))
        .collect();
    items.sort();
    items.join(", ")
}
