//! setup: how fast the server takes on new clients. A few threads each open
//! connections one after another: connect, greet and join one room of its
//! own (Relay: HELLO + JOIN_ROOM; Redis: SUBSCRIBE; NATS: CONNECT + SUB +
//! PING), wait for the answer (JOIN answer, subscribe confirmation, PONG),
//! and close the connection at once, so the figure is whole connection
//! lifetimes per second, and the server never holds more than a few.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::subject::Subject;
use super::table::Metric;
use super::{Options, Outcome};
use crate::error::{Error, Result};
use crate::histogram::Histogram;
use crate::peer::dialect;
use crate::peer::publisher::handshake;
use crate::report::{Figure, Progress, round};

/// What one thread got done.
#[derive(Debug, Default)]
struct Tally {
    done: usize,
    failed: usize,
    first_error: Option<String>,
    /// Connect to answer, per connection, ns.
    latency: Histogram,
}

pub(super) fn run(subject: &Subject, options: &Options) -> Result<Outcome> {
    let progress = Progress::new("bench setup", options.quiet);
    let m = options.setup_connections;
    let threads = options.setup_threads.clamp(1, m.max(1));
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(m as u64 * 20);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let next = Arc::clone(&next);
            let (system, addr) = (subject.system, subject.addr);
            std::thread::Builder::new()
                .name(format!("setup-{t}"))
                .spawn(move || {
                    let mut tally = Tally::default();
                    let mut greeting = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::AcqRel);
                        if i >= m || Instant::now() >= deadline {
                            return tally;
                        }
                        greeting.clear();
                        dialect::greeting(
                            system,
                            &mut greeting,
                            &[format!("bench-setup-{i}")],
                            false,
                        );
                        let began = Instant::now();
                        let result = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                            .map_err(|e| Error::new(format!("connecting: {e}")))
                            .and_then(|mut stream| {
                                let _ = stream.set_nodelay(true);
                                handshake(
                                    &mut stream,
                                    system,
                                    &greeting,
                                    dialect::acks_needed(system, 1),
                                    Duration::from_secs(10),
                                )
                            });
                        match result {
                            Ok(()) => {
                                tally.done += 1;
                                tally.latency.record(began.elapsed().as_nanos() as u64);
                            }
                            Err(e) => {
                                tally.failed += 1;
                                tally.first_error.get_or_insert(e.to_string());
                            }
                        }
                    }
                })
                .map_err(|e| Error::new(format!("starting a setup thread: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut total = Tally::default();
    for handle in handles {
        let tally = handle
            .join()
            .map_err(|_| Error::new("a setup thread panicked"))?;
        total.done += tally.done;
        total.failed += tally.failed;
        total.latency.merge(&tally.latency);
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = total.done as f64 / seconds.max(1e-9);
    progress.say(format!("{} connections in {seconds:.2} s", total.done));
    let mut outcome = Outcome::default();
    outcome.check(
        total.done == m,
        format!(
            "{} of {m} connections set up, {} failed (first: {})",
            total.done,
            total.failed,
            total
                .first_error
                .as_deref()
                .unwrap_or("none; the time ran out")
        ),
    );
    let us = |q: f64| total.latency.quantile_us(q);
    outcome.figures.line(
        format!("  setup: {m} connections from {threads} threads, each closed once answered: "),
        [
            Figure::new("connections_per_s", "connections/s", rate.round() as u64),
            Figure::new("set_up", "set up", total.done),
            Figure::new("failed", "failed", total.failed),
            Figure::new("seconds", "in s", round(seconds, 3)),
            Figure::new("p50_us", "each p50 µs", us(0.5)),
            Figure::new("p99_us", "p99 µs", us(0.99)),
        ],
    );
    outcome.figures.json_only("connections", m);
    outcome.figures.json_only("threads", threads);
    outcome
        .figures
        .json_only("first_error", total.first_error.clone());
    outcome.metric(Metric::SetupRate, (total.done == m).then_some(rate));
    Ok(outcome)
}
