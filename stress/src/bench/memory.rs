//! What connections cost the server in memory: N idle joined clients
//! (RSS per connection), and a crowd of C clients each in K rooms that
//! leaves (how much of the growth the server gives back).
//!
//! Both run on a fresh server, whose RSS is read from /proc before, during
//! and after.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::subject::Subject;
use super::table::Metric;
use super::{Options, Outcome};
use crate::error::{Context, Result};
use crate::peer::System;
use crate::report::{Figure, Progress, round};
use crate::swarm::{Plan, Swarm};
use crate::sys::ProcStatus;

fn status_json(m: Option<ProcStatus>) -> Value {
    match m {
        Some(m) => json!({"rss_kib": m.rss_kib, "peak_rss_kib": m.hwm_kib, "threads": m.threads}),
        None => Value::Null,
    }
}

/// Relay only: waits until the server counts at most `n` connections (the
/// asking one included), `timeout` at most; whether it did, and the count.
fn relay_settles(
    subject: &Subject,
    timeout: Duration,
    done: impl Fn(u64) -> bool,
) -> Result<(bool, u64)> {
    if subject.system != System::Relay {
        return Ok((true, 0));
    }
    let (stats, held) =
        crate::wire::wait_for_stats(subject.addr, timeout, |st| done(st.connections))?;
    Ok((held, stats.connections))
}

/// The server's RSS once it stops falling (after a second of quiet, a
/// sample every 250 ms until two a second apart differ by under 1%, 5 s at
/// most): memory a server gives back after idle time counts, memory it
/// keeps doesn't vanish.
fn settled_memory(subject: &Subject) -> Option<ProcStatus> {
    subject.memory()?;
    // Relay trims a connection after a quarter second of silence: let the
    // last answers and member events be a second old before the first sample.
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let mut samples: Vec<ProcStatus> = Vec::new();
    loop {
        let now = subject.memory()?;
        samples.push(now);
        if samples.len() > 4 {
            let earlier = samples[samples.len() - 5].rss_kib as f64;
            if (earlier - now.rss_kib as f64).abs() <= earlier * 0.01 {
                return Some(now);
            }
        }
        if started.elapsed() > Duration::from_secs(5) {
            return Some(now);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// N idle clients in rooms: server RSS per connection.
pub(super) fn idle(subject: &Subject, options: &Options) -> Result<Outcome> {
    let mut progress = Progress::new("bench connections", options.quiet);
    let n = options.connections;
    // Warm up: one connection in and out, so lazily made structures exist.
    relay_settles(subject, Duration::from_secs(30), |c| c <= 1)?;
    let before = subject.memory();
    let mut plan = Plan::new(subject.addr, n, options.idle_room_size, "bench-idle-");
    plan.system = subject.system;
    plan.threads = options.threads;
    plan.read_buffer = 64 * 1024;
    let started = Instant::now();
    let swarm = Swarm::start(&plan).context("starting the client threads")?;
    let all = swarm.wait_joined(
        Duration::from_secs(120) + Duration::from_millis(n as u64 * 20),
        |joined, failed| progress.tick(|| format!("{joined}/{n} joined, {failed} failed")),
    );
    let connect_seconds = started.elapsed().as_secs_f64();
    let (counted, count) = relay_settles(subject, Duration::from_secs(30), |c| c as usize > n)?;
    // Idle: Relay gives back a connection's spare stack and buffers after a
    // quarter second of silence; wait until RSS settles.
    let after = settled_memory(subject);
    let totals = swarm.finish();
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if n > 0 => Some((a.rss_kib as f64 - b.rss_kib as f64) / n as f64),
        _ => None,
    };
    let mut outcome = Outcome::default();
    outcome.check(
        all && totals.joined == n,
        format!("only {} of {n} clients joined", totals.joined),
    );
    outcome.check(
        counted,
        format!("the server counted {count} connections, expected {}", n + 1),
    );
    outcome.figures.line(
        format!(
            "  connections: {n} idle clients in rooms of {}: ",
            options.idle_room_size
        ),
        [
            Figure::new("joined", "joined", totals.joined),
            Figure::new("connect_s", "in s", round(connect_seconds, 3)),
            Figure::new(
                "rss_before_kib",
                "server RSS KiB before",
                before.map(|m| m.rss_kib),
            ),
            Figure::new("rss_after_kib", "after", after.map(|m| m.rss_kib)),
            Figure::new(
                "kib_per_connection",
                "KiB per connection",
                per_conn.map(|k| round(k, 2)),
            ),
        ],
    );
    if subject.in_process() {
        outcome.figures.line(
            "    ",
            [Figure::new(
                "measured_on",
                "measured on",
                "this process (in-process server: includes the clients' memory)",
            )],
        );
    } else if per_conn.is_none() {
        outcome
            .figures
            .json_only("memory_not_measured", subject.why_unmeasured());
    }
    outcome.figures.json_only("connections", n);
    outcome
        .figures
        .json_only("room_size", options.idle_room_size);
    outcome.figures.json_only("before", status_json(before));
    outcome.figures.json_only("after", status_json(after));
    outcome.figures.json_only("mode", subject.mode());
    outcome.metric(Metric::IdleKib, per_conn.filter(|_| all));
    Ok(outcome)
}

/// Relay: C clients each join K rooms; RSS at the peak, then all leave and
/// the server counts 0 connections; RSS again, and the share given back.
pub(super) fn crowd(subject: &Subject, options: &Options) -> Result<Outcome> {
    let mut progress = Progress::new("bench memory", options.quiet);
    let c = options.memory_connections;
    let k = options.memory_rooms.max(1);
    relay_settles(subject, Duration::from_secs(30), |n| n <= 1)?;
    let before = subject.memory();
    let mut plan = Plan::new(subject.addr, c, options.idle_room_size, "bench-crowd-");
    plan.system = subject.system;
    plan.threads = options.threads;
    plan.read_buffer = 64 * 1024;
    plan.rooms_per_client = k;
    let started = Instant::now();
    let swarm = Swarm::start(&plan).context("starting the client threads")?;
    let all = swarm.wait_joined(
        Duration::from_secs(120) + Duration::from_millis((c * k) as u64 * 2),
        |joined, failed| {
            progress.tick(|| format!("{joined}/{c} joined {k} rooms each, {failed} failed"))
        },
    );
    let join_seconds = started.elapsed().as_secs_f64();
    let (counted, count) = relay_settles(subject, Duration::from_secs(30), |n| n as usize > c)?;
    let peak = subject.memory();
    let totals = swarm.finish();
    let left_started = Instant::now();
    let (emptied, left_count) = relay_settles(subject, Duration::from_secs(60), |n| n <= 1)?;
    let leave_seconds = left_started.elapsed().as_secs_f64();
    let after = settled_memory(subject);
    let returned = match (before, peak, after) {
        (Some(b), Some(p), Some(a)) if p.rss_kib > b.rss_kib => {
            Some((p.rss_kib as f64 - a.rss_kib as f64) / (p.rss_kib - b.rss_kib) as f64 * 100.0)
        }
        _ => None,
    };
    let mut outcome = Outcome::default();
    outcome.check(
        all && totals.joined == c,
        format!("only {} of {c} clients joined all {k} rooms", totals.joined),
    );
    outcome.check(
        counted,
        format!(
            "the server counted {count} connections at the peak, expected {}",
            c + 1
        ),
    );
    outcome.check(
        emptied,
        format!("the server still counted {left_count} connections 60 s after all left (expected 1: the asking one)"),
    );
    outcome.figures.line(
        format!(
            "  memory: {c} clients × {k} rooms (rooms of {}): ",
            options.idle_room_size
        ),
        [
            Figure::new("joined", "joined", totals.joined),
            Figure::new("join_s", "in s", round(join_seconds, 3)),
            Figure::new(
                "rss_before_kib",
                "server RSS KiB before",
                before.map(|m| m.rss_kib),
            ),
            Figure::new("rss_peak_kib", "at the peak", peak.map(|m| m.rss_kib)),
            Figure::new("rss_after_kib", "after all left", after.map(|m| m.rss_kib)),
            Figure::new(
                "returned_pct",
                "% of the growth given back",
                returned.map(|r| round(r, 1)),
            ),
            Figure::new("leave_s", "server empty in s", round(leave_seconds, 3)),
        ],
    );
    if subject.in_process() {
        outcome.figures.json_only(
            "measured_on",
            "this process (in-process server: includes the clients' memory)",
        );
    }
    outcome.figures.json_only("clients", c);
    outcome.figures.json_only("rooms_each", k);
    outcome
        .figures
        .json_only("room_size", options.idle_room_size);
    outcome
        .figures
        .json_only("member_events", totals.member_events);
    outcome.figures.json_only("before", status_json(before));
    outcome.figures.json_only("peak", status_json(peak));
    outcome.figures.json_only("after", status_json(after));
    outcome.metric(Metric::MemoryReturned, returned.filter(|_| all && emptied));
    Ok(outcome)
}
