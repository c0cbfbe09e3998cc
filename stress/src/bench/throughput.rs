//! Fan-out (as fast as the server takes it) and latency (at a fixed rate):
//! one publisher, subscribers in one room on the swarm.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::subject::Subject;
use super::table::Metric;
use super::{Options, Outcome};
use crate::error::{Context, Error, Result};
use crate::peer::dialect;
use crate::peer::publisher::{Publisher, Via};
use crate::report::{Figure, Progress, round};
use crate::swarm::{Plan, Swarm, Totals, content};
use crate::sys::now_ns;

/// Which of the server's ports a run uses: the plain one, or TLS or
/// WebSocket beside it (`bench --tls`, `bench --ws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Over {
    Plain,
    Tls,
    Ws,
}

impl Over {
    /// The address and how to connect to it.
    fn endpoint(self, subject: &Subject) -> Result<(std::net::SocketAddr, Via<'_>)> {
        match self {
            Over::Plain => Ok((subject.addr, Via::Plain)),
            Over::Tls => match &subject.tls {
                Some((addr, tls)) => Ok((*addr, Via::Tls(tls))),
                None => Err(Error::new("this server has no TLS port")),
            },
            Over::Ws => match subject.ws {
                Some(addr) => Ok((addr, Via::Ws)),
                None => Err(Error::new("this server has no WebSocket port")),
            },
        }
    }

    /// How room names say it: short, so that frames over every port are
    /// about the same size.
    fn key(self) -> &'static str {
        match self {
            Over::Plain => "",
            Over::Tls => "tls",
            Over::Ws => "ws",
        }
    }

    /// How the report says it.
    fn label(self) -> &'static str {
        match self {
            Over::Plain => "",
            Over::Tls => " over TLS",
            Over::Ws => " over WebSocket",
        }
    }
}

/// Subscribers on the swarm, all in `{prefix}0`, joined.
fn subscribers(
    subject: &Subject,
    options: &Options,
    over: Over,
    s: usize,
    prefix: &str,
    expect: u64,
) -> Result<(Swarm, Plan)> {
    let (addr, via) = over.endpoint(subject)?;
    let mut plan = Plan::new(addr, s, s, prefix);
    match via {
        Via::Plain => {}
        Via::Tls(tls) => plan.tls = Some(tls.clone()),
        Via::Ws => plan.ws = true,
    }
    plan.system = subject.system;
    plan.threads = options.threads;
    plan.positions = 1;
    plan.record_latency = true;
    plan.expect_per_client = Some(expect);
    let swarm = Swarm::start(&plan).context("starting the subscriber threads")?;
    if !swarm.wait_joined(Duration::from_secs(60), |_, _| {}) {
        let totals = swarm.finish();
        return Err(Error::new(format!(
            "only {} of {s} subscribers joined; errors {:?}",
            totals.joined, totals.errors
        )));
    }
    Ok((swarm, plan))
}

/// Checks every run of subscribers makes: all delivered in order, nothing
/// lost.
fn delivery_checks(outcome: &mut Outcome, totals: &Totals, s: usize, expected: u64) -> bool {
    let complete = totals.clients_done == s
        && totals.delivered == expected
        && totals.out_of_order == 0
        && totals.foreign == 0;
    outcome.check(
        complete,
        format!(
            "{} of {expected} delivered, {} subscribers complete, {} out of order, {} foreign",
            totals.delivered, totals.clients_done, totals.out_of_order, totals.foreign
        ),
    );
    outcome.check(
        totals.errors.is_empty() && totals.closed_early == 0,
        format!(
            "errors {:?}, {} subscribers lost",
            totals.errors, totals.closed_early
        ),
    );
    complete
}

pub(super) fn fanout(
    subject: &Subject,
    options: &Options,
    s: usize,
    over: Over,
) -> Result<Outcome> {
    let mut progress = Progress::new("bench fanout", options.quiet);
    let m = options.messages;
    let prefix = format!("bench-fanout-{s}-{}-", over.key());
    let room = format!("{prefix}0");
    let (swarm, plan) = subscribers(subject, options, over, s, &prefix, m)?;
    let (addr, via) = over.endpoint(subject)?;
    let mut publisher = Publisher::connect_over(subject.system, addr, &room, via)?;
    let (frame, at) = dialect::publish_frame(subject.system, &room, options.payload);
    let per_batch = (options.batch_bytes / frame.len()).max(1);
    let mut batch = frame.repeat(per_batch);
    let live = Arc::clone(&swarm.live);
    let start_ns = now_ns();
    let mut seq = 0u64;
    while seq < m {
        let n = per_batch.min((m - seq) as usize);
        let stamp = now_ns();
        for k in 0..n {
            let offset = k * frame.len() + at;
            content::fill(&mut batch[offset..], seq + k as u64, 0, stamp);
        }
        publisher.send(&batch[..n * frame.len()])?;
        seq += n as u64;
        progress.tick(|| {
            format!(
                "S={s}: published {seq}/{m}, delivered {}",
                live.delivered.load(Ordering::Relaxed)
            )
        });
    }
    let published_ns = now_ns();
    // Wait for the last delivery; give up after 15 s without progress.
    let mut last = 0;
    let mut stalled_since = Instant::now();
    while live.done.load(Ordering::Acquire) < s {
        std::thread::sleep(Duration::from_millis(5));
        let now = live.delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            stalled_since = Instant::now();
        } else if stalled_since.elapsed() > Duration::from_secs(15) {
            break;
        }
        progress.tick(|| format!("S={s}: delivered {now}/{}", s as u64 * m));
    }
    publisher.close();
    let totals = swarm.finish();
    let expected = s as u64 * m;
    let end_ns = totals.last_done_ns.max(totals.last_delivery_ns);
    let seconds = end_ns.saturating_sub(start_ns) as f64 / 1e9;
    let rate = totals.delivered as f64 / seconds.max(1e-9);
    let publish_seconds = published_ns.saturating_sub(start_ns) as f64 / 1e9;
    let mut outcome = Outcome::default();
    let in_order = delivery_checks(&mut outcome, &totals, s, expected);
    outcome.figures.line(
        format!(
            "  fan-out 1→{s}{}: {m} msgs × {s}, {}-byte content: ",
            over.label(),
            options.payload.max(content::MIN_LEN)
        ),
        [
            Figure::new("deliveries_per_s", "deliveries/s", rate.round() as u64),
            Figure::new("deliveries", "delivered", totals.delivered),
            Figure::new("expected", "of", expected),
            Figure::new("seconds", "in s", round(seconds, 3)),
            Figure::new(
                "published_per_s",
                "published msgs/s",
                (m as f64 / publish_seconds.max(1e-9)).round() as u64,
            ),
            Figure::new("all_delivered_in_order", "all in order", in_order),
        ],
    );
    let queued = |q: f64| totals.latency.quantile_us(q);
    outcome.figures.line(
        "    time from publish to delivery (queueing included): ",
        [
            Figure::new("queueing_p50_us", "p50 µs", queued(0.5)),
            Figure::new("queueing_p99_us", "p99 µs", queued(0.99)),
        ],
    );
    outcome
        .figures
        .json_only("queueing_latency", totals.latency.summary_us());
    outcome.figures.json_only("subscribers", s);
    outcome.figures.json_only("messages", m);
    outcome
        .figures
        .json_only("payload_bytes", options.payload.max(content::MIN_LEN));
    outcome.figures.json_only("frame_bytes", frame.len());
    outcome
        .figures
        .json_only("batch_bytes", per_batch * frame.len());
    outcome.figures.json_only("client_threads", plan.threads);
    outcome.figures.json_only("errors", json!(totals.errors));
    outcome
        .figures
        .json_only("out_of_order", totals.out_of_order);
    outcome.figures.json_only("tls", over == Over::Tls);
    outcome.figures.json_only("websocket", over == Over::Ws);
    let metric = match over {
        Over::Plain => Metric::Fanout(s),
        Over::Tls => Metric::TlsFanout(s),
        Over::Ws => Metric::WsFanout(s),
    };
    outcome.metric(metric, in_order.then_some(rate));
    Ok(outcome)
}

pub(super) fn latency(subject: &Subject, options: &Options, over: Over) -> Result<Outcome> {
    let mut progress = Progress::new("bench latency", options.quiet);
    let s = options.latency_subscribers.max(1);
    let total = (options.rate * options.latency_duration.as_secs_f64()).round() as u64;
    let prefix = format!("bench-latency-{}-", over.key());
    let room = format!("{prefix}0");
    let (swarm, plan) = subscribers(subject, options, over, s, &prefix, total)?;
    let (addr, via) = over.endpoint(subject)?;
    let mut publisher = Publisher::connect_over(subject.system, addr, &room, via)?;
    let (mut frame, at) = dialect::publish_frame(subject.system, &room, options.payload);
    let interval = Duration::from_secs_f64(1.0 / options.rate.max(1e-3));
    let live = Arc::clone(&swarm.live);
    let cpu = subject.cpu();
    let started = Instant::now();
    for seq in 0..total {
        let due = started + interval.mul_f64(seq as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        content::fill(&mut frame[at..], seq, 0, now_ns());
        publisher.send(&frame)?;
        progress.tick(|| {
            format!(
                "sent {seq}/{total}, delivered {}",
                live.delivered.load(Ordering::Relaxed)
            )
        });
    }
    let cpu_percent = cpu.and_then(|c| c.percent());
    let sent_seconds = started.elapsed().as_secs_f64();
    let wait_started = Instant::now();
    while live.done.load(Ordering::Acquire) < s && wait_started.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    publisher.close();
    let totals = swarm.finish();
    let h = &totals.latency;
    let us = |q: f64| h.quantile(q).map(|ns| ns as f64 / 1000.0);
    let mut outcome = Outcome::default();
    let complete = delivery_checks(&mut outcome, &totals, s, total * s as u64);
    outcome.figures.line(
        format!(
            "  latency{} at {} msg/s to {s} subscribers for {:.1} s ({}-byte content): ",
            over.label(),
            options.rate,
            sent_seconds,
            options.payload.max(content::MIN_LEN)
        ),
        [
            Figure::new("p50_us", "p50 µs", us(0.5).map(|v| round(v, 1))),
            Figure::new("p99_us", "p99 µs", us(0.99).map(|v| round(v, 1))),
            Figure::new("p999_us", "p99.9 µs", us(0.999).map(|v| round(v, 1))),
            Figure::new(
                "max_us",
                "max µs",
                (h.count() > 0).then(|| round(h.max() as f64 / 1000.0, 1)),
            ),
            Figure::new("deliveries", "delivered", totals.delivered),
            Figure::new("all_delivered_in_order", "all in order", complete),
        ],
    );
    outcome.figures.line(
        "    server CPU: ",
        [Figure::new(
            "server_cpu_pct",
            "% of one core",
            cpu_percent.map(|v| round(v, 1)),
        )],
    );
    if cpu_percent.is_none() {
        outcome
            .figures
            .json_only("server_cpu_not_measured", subject.why_unmeasured());
    }
    outcome.figures.json_only("rate", options.rate);
    outcome.figures.json_only("subscribers", s);
    outcome.figures.json_only("messages", total);
    outcome.figures.json_only("seconds", round(sent_seconds, 3));
    outcome
        .figures
        .json_only("payload_bytes", options.payload.max(content::MIN_LEN));
    outcome.figures.json_only("client_threads", plan.threads);
    outcome.figures.json_only("samples", h.count());
    outcome.figures.json_only("tls", over == Over::Tls);
    outcome.figures.json_only("websocket", over == Over::Ws);
    let [p50, p99, cpu] = match over {
        Over::Plain => [Metric::LatencyP50, Metric::LatencyP99, Metric::LatencyCpu],
        Over::Tls => [
            Metric::TlsLatencyP50,
            Metric::TlsLatencyP99,
            Metric::TlsLatencyCpu,
        ],
        Over::Ws => [
            Metric::WsLatencyP50,
            Metric::WsLatencyP99,
            Metric::WsLatencyCpu,
        ],
    };
    if complete {
        outcome.metric(p50, us(0.5));
        outcome.metric(p99, us(0.99));
    }
    outcome.metric(cpu, cpu_percent);
    Ok(outcome)
}
