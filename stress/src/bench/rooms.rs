//! rooms: traffic spread thin. N clients in rooms of 10, each publishing r
//! messages a second for D seconds; what it costs the server (CPU as % of
//! one core, read from /proc over the publishing time) and how long a
//! message takes to arrive.

use std::time::{Duration, Instant};

use serde_json::json;

use super::subject::Subject;
use super::table::Metric;
use super::{Options, Outcome};
use crate::error::{Context, Result};
use crate::report::{Figure, Progress, round};
use crate::swarm::{Plan, PublishPlan, Swarm, content};

pub(super) fn run(subject: &Subject, options: &Options) -> Result<Outcome> {
    let mut progress = Progress::new("bench rooms", options.quiet);
    let n = options.rooms_clients;
    let mut plan = Plan::new(subject.addr, n, options.room_size, "bench-rooms-");
    plan.system = subject.system;
    plan.threads = options.threads;
    plan.record_latency = true;
    plan.publish = Some(PublishPlan {
        rate: options.rooms_rate,
        content_len: options.payload,
    });
    let swarm = Swarm::start(&plan).context("starting the client threads")?;
    let all_joined = swarm.wait_joined(
        Duration::from_secs(60) + Duration::from_millis(n as u64 * 10),
        |joined, failed| progress.tick(|| format!("{joined}/{n} joined, {failed} failed")),
    );
    let live = std::sync::Arc::clone(&swarm.live);
    let cpu = subject.cpu();
    swarm.start_publishing();
    let started = Instant::now();
    while started.elapsed() < options.rooms_duration {
        let left = options.rooms_duration.saturating_sub(started.elapsed());
        std::thread::sleep(left.min(Duration::from_millis(100)));
        progress.tick(|| {
            format!(
                "{:.0} s: sent {}, delivered {}",
                started.elapsed().as_secs_f64(),
                live.sent.load(std::sync::atomic::Ordering::Relaxed),
                live.delivered.load(std::sync::atomic::Ordering::Relaxed)
            )
        });
    }
    swarm.stop_publishing();
    let cpu_percent = cpu.and_then(|c| c.percent());
    let publish_seconds = started.elapsed().as_secs_f64();
    // Drain: until every expected delivery came, or nothing came for 15 s.
    let mut last = 0;
    let mut moved = Instant::now();
    let drain_started = Instant::now();
    loop {
        let delivered = live.delivered.load(std::sync::atomic::Ordering::Acquire);
        if delivered >= live.expected()
            || moved.elapsed() > Duration::from_secs(15)
            || drain_started.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        if delivered != last {
            last = delivered;
            moved = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let totals = swarm.finish();
    let expected = totals.expected_deliveries();
    let h = &totals.latency;
    let us = |q: f64| h.quantile_us(q);
    let rate = totals.delivered as f64 / publish_seconds.max(1e-9);
    let mut outcome = Outcome::default();
    let complete = totals.delivered == expected && totals.out_of_order == 0 && totals.foreign == 0;
    outcome.check(
        all_joined && totals.joined == n,
        format!("only {} of {n} clients joined", totals.joined),
    );
    outcome.check(
        complete,
        format!(
            "delivered {} of {expected} expected, {} out of order, {} foreign",
            totals.delivered, totals.out_of_order, totals.foreign
        ),
    );
    outcome.check(
        totals.errors.is_empty() && totals.closed_early == 0,
        format!(
            "errors {:?}, {} connections lost",
            totals.errors, totals.closed_early
        ),
    );
    outcome.figures.line(
        format!(
            "  rooms: {n} clients in rooms of {}, {} msg/s each for {:.1} s, {}-byte content: ",
            options.room_size,
            options.rooms_rate,
            publish_seconds,
            options.payload.max(content::MIN_LEN)
        ),
        [
            Figure::new("sent", "sent", totals.sent),
            Figure::new("deliveries", "delivered", totals.delivered),
            Figure::new("expected", "of", expected),
            Figure::new("deliveries_per_s", "deliveries/s", rate.round() as u64),
        ],
    );
    outcome.figures.line(
        "    ",
        [
            Figure::new(
                "server_cpu_pct",
                "server CPU % of one core",
                cpu_percent.map(|v| round(v, 1)),
            ),
            Figure::new("p50_us", "latency p50 µs", us(0.5)),
            Figure::new("p99_us", "p99 µs", us(0.99)),
            Figure::new("p999_us", "p99.9 µs", us(0.999)),
        ],
    );
    if totals.echoes > 0 {
        outcome.figures.line(
            "    ",
            [Figure::new(
                "own_messages_back",
                "own messages sent back to their publisher (not counted)",
                totals.echoes,
            )],
        );
    }
    if cpu_percent.is_none() {
        outcome
            .figures
            .json_only("server_cpu_not_measured", subject.why_unmeasured());
    }
    outcome.figures.json_only("clients", n);
    outcome.figures.json_only("joined", totals.joined);
    outcome.figures.json_only("room_size", options.room_size);
    outcome.figures.json_only("rooms", plan.rooms());
    outcome
        .figures
        .json_only("rate_per_client", options.rooms_rate);
    outcome
        .figures
        .json_only("seconds", round(publish_seconds, 3));
    outcome
        .figures
        .json_only("payload_bytes", options.payload.max(content::MIN_LEN));
    outcome.figures.json_only("client_threads", plan.threads);
    outcome.figures.json_only("errors", json!(totals.errors));
    outcome
        .figures
        .json_only("out_of_order", totals.out_of_order);
    outcome
        .figures
        .json_only("member_events", totals.member_events);
    outcome
        .figures
        .json_only("backlogged_turns", totals.backlogged);
    outcome.metric(Metric::RoomsDeliveries, complete.then_some(rate));
    outcome.metric(Metric::RoomsCpu, cpu_percent);
    if complete {
        outcome.metric(Metric::RoomsP50, us(0.5));
        outcome.metric(Metric::RoomsP99, us(0.99));
    }
    Ok(outcome)
}
