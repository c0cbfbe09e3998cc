//! bench: the headline figures, each with its exact parameters.
//!
//! - fan-out: one publisher, S subscribers in one room, M messages with a
//!   P-byte content as fast as the server takes them; deliveries per second
//!   from the first publish to the last delivery, and whether every
//!   subscriber got every message in order.
//! - latency: a fixed publish rate to a few subscribers; p50/p99/p99.9.
//! - connections: N idle clients that joined rooms; server memory per
//!   connection, (RSS after − RSS before) / N.
//!
//! The client side is built not to be the bottleneck: subscribers live on a
//! few `mio` threads reading 256 KiB at a time and parse only frame headers
//! and the fixed-width sequence field ([`crate::swarm`]); the publisher
//! writes ~64 KiB of ready-made frames per `write` and lets the server's
//! backpressure pace it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use protocol::Hello;
use serde_json::{Value, json};

use crate::error::{Context, Error, Result};
use crate::report::{Progress, Report, round};
use crate::swarm::{Plan, Swarm, content};
use crate::sys::{ProcStatus, now_ns};
use crate::target::{Target, TargetOptions, sibling_server_binary};
use crate::wire::Conn;

/// Which benchmarks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Fanout,
    Latency,
    Connections,
}

impl std::str::FromStr for Which {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Which, String> {
        match s {
            "fanout" | "fan-out" => Ok(Which::Fanout),
            "latency" => Ok(Which::Latency),
            "connections" => Ok(Which::Connections),
            _ => Err(format!(
                "unknown benchmark {s:?}; choose fanout, latency or connections"
            )),
        }
    }
}

/// The performance bars of the server issue, for reference in the report.
pub mod targets {
    /// 1 → 100 fan-out, deliveries/s.
    pub const FANOUT_100: f64 = 5_000_000.0;
    /// 1 → 10 fan-out, deliveries/s.
    pub const FANOUT_10: f64 = 4_000_000.0;
    pub const LATENCY_P50_US: f64 = 150.0;
    pub const LATENCY_P99_US: f64 = 500.0;
    /// Server RSS per idle joined connection, KiB.
    pub const KIB_PER_CONNECTION: f64 = 24.0;
}

/// Settings of a bench run.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: TargetOptions,
    pub which: Vec<Which>,
    /// Fan-out sizes to run, one run each (S).
    pub subscribers: Vec<usize>,
    /// Content bytes per message (P).
    pub payload: usize,
    /// Messages per fan-out run (M).
    pub messages: u64,
    /// Bytes of frames the publisher hands to each `write`.
    pub batch_bytes: usize,
    /// Latency run: messages per second, subscribers, seconds.
    pub rate: f64,
    pub latency_subscribers: usize,
    pub latency_duration: Duration,
    /// Connections run: idle clients (N) and their room size.
    pub connections: usize,
    pub idle_room_size: usize,
    /// Subscriber threads.
    pub threads: usize,
    /// The server binary for the connections run (default: `relay-server` next
    /// to this executable, when there).
    pub server_bin: Option<PathBuf>,
    /// Measure connections on the in-process server even if a server
    /// binary is there.
    pub in_process_connections: bool,
    /// Fail the verdict when a figure misses its bar.
    pub check_targets: bool,
    pub quiet: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: TargetOptions::default(),
            which: vec![Which::Fanout, Which::Latency, Which::Connections],
            subscribers: vec![100, 10],
            payload: 64,
            messages: 200_000,
            batch_bytes: 64 * 1024,
            rate: 2000.0,
            latency_subscribers: 10,
            latency_duration: Duration::from_secs(5),
            connections: 5000,
            idle_room_size: 10,
            threads: 2,
            server_bin: None,
            in_process_connections: false,
            check_targets: false,
            quiet: false,
        }
    }
}

/// Runs the chosen benchmarks.
pub fn run(options: &Options) -> Result<Report> {
    crate::sys::start_clock();
    let mut report = Report::new("bench");
    let needs_shared = options
        .which
        .iter()
        .any(|w| matches!(w, Which::Fanout | Which::Latency));
    if needs_shared {
        let target = Target::start(&options.target)?;
        report.line(format!("bench against {}", target.describe()));
        report.set("target", target.mode());
        let mut fanouts = Vec::new();
        if options.which.contains(&Which::Fanout) {
            for &s in &options.subscribers {
                fanouts.push(fanout(&target, options, s, &mut report)?);
            }
        }
        report.set("fanout", Value::from(fanouts));
        if options.which.contains(&Which::Latency) {
            let figures = latency(&target, options, &mut report)?;
            report.set("latency", figures);
        }
        target.stop();
    }
    if options.which.contains(&Which::Connections) {
        let figures = connections(options, &mut report)?;
        report.set("connections", figures);
    }
    report.set("check_targets", options.check_targets);
    Ok(report)
}

/// Notes a figure against its bar; fails the verdict only when asked to.
fn bar(report: &mut Report, options: &Options, ok: bool, what: String) {
    if !ok {
        if options.check_targets {
            report.fail(what);
        } else {
            report.line(format!("  (below the bar: {what})"));
        }
    }
}

/// A publisher connection: said HELLO, joined `room`, and has a thread that
/// reads and drops whatever the server sends it (membership events).
fn publisher(target: &Target, room: &str) -> Result<(TcpStream, std::thread::JoinHandle<()>)> {
    let (mut conn, _) = Conn::open(target.addr(), &Hello::default())?;
    conn.join(room)?;
    let stream = conn.stream().try_clone()?;
    let mut reader = conn.stream().try_clone()?;
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    Ok((stream, drain))
}

fn fanout(target: &Target, options: &Options, s: usize, report: &mut Report) -> Result<Value> {
    let mut progress = Progress::new("bench fanout", options.quiet);
    let m = options.messages;
    let prefix = format!("bench-fanout-{s}-");
    let room = format!("{prefix}0");
    let mut plan = Plan::new(target.addr(), s, s, &prefix);
    plan.threads = options.threads;
    plan.positions = 1;
    plan.record_latency = true;
    plan.expect_per_client = Some(m);
    let swarm = Swarm::start(&plan).context("starting the subscriber threads")?;
    if !swarm.wait_joined(Duration::from_secs(60), |_, _| {}) {
        let totals = swarm.finish();
        return Err(Error::new(format!(
            "fan-out: only {} of {s} subscribers joined",
            totals.joined
        )));
    }
    let (mut stream, drain) = publisher(target, &room)?;
    let (frame, at) = content::publish_frame(&room, options.payload);
    let per_batch = (options.batch_bytes / frame.len()).max(1);
    let mut batch = frame.repeat(per_batch);
    let live = std::sync::Arc::clone(&swarm.live);
    let start_ns = now_ns();
    let mut seq = 0u64;
    while seq < m {
        let n = per_batch.min((m - seq) as usize);
        let stamp = now_ns();
        for k in 0..n {
            let offset = k * frame.len() + at;
            content::fill(&mut batch[offset..], seq + k as u64, 0, stamp);
        }
        stream
            .write_all(&batch[..n * frame.len()])
            .context("fan-out publisher write")?;
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
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
    let totals = swarm.finish();
    let expected = s as u64 * m;
    let end_ns = totals.last_done_ns.max(totals.last_delivery_ns);
    let seconds = end_ns.saturating_sub(start_ns) as f64 / 1e9;
    let rate = totals.delivered as f64 / seconds.max(1e-9);
    let in_order = totals.clients_done == s
        && totals.delivered == expected
        && totals.out_of_order == 0
        && totals.foreign == 0;
    let bar_value = match s {
        100 => Some(targets::FANOUT_100),
        10 => Some(targets::FANOUT_10),
        _ => None,
    };
    report.line(format!(
        "  fan-out 1→{s}: {m} msgs × {s} = {expected} deliveries, {}-byte content: {:.2} M deliveries/s over {seconds:.3} s ({:.2} M msgs/s published); all delivered in order: {}",
        options.payload.max(content::MIN_LEN),
        rate / 1e6,
        m as f64 / ((published_ns - start_ns) as f64 / 1e9) / 1e6,
        if in_order { "yes" } else { "NO" }
    ));
    report.line(format!(
        "    queueing latency {}",
        totals.latency.describe_us()
    ));
    report.check(
        in_order,
        format!(
            "fan-out 1→{s}: {} of {expected} delivered, {} subscribers complete, {} out of order, {} foreign, errors {:?}",
            totals.delivered, totals.clients_done, totals.out_of_order, totals.foreign, totals.errors
        ),
    );
    report.check(
        totals.errors.is_empty() && totals.closed_early == 0,
        format!(
            "fan-out 1→{s}: errors {:?}, {} subscribers lost",
            totals.errors, totals.closed_early
        ),
    );
    if let Some(bar_value) = bar_value {
        bar(
            report,
            options,
            rate >= bar_value,
            format!(
                "fan-out 1→{s} {:.2} M/s < {:.1} M/s",
                rate / 1e6,
                bar_value / 1e6
            ),
        );
    }
    Ok(json!({
        "subscribers": s,
        "messages": m,
        "payload_bytes": options.payload.max(content::MIN_LEN),
        "frame_bytes": frame.len(),
        "batch_bytes": per_batch * frame.len(),
        "client_threads": plan.threads,
        "deliveries": totals.delivered,
        "expected": expected,
        "seconds": round(seconds, 6),
        "deliveries_per_s": round(rate, 0),
        "publish_seconds": round((published_ns - start_ns) as f64 / 1e9, 6),
        "all_delivered_in_order": in_order,
        "out_of_order": totals.out_of_order,
        "errors": json!(totals.errors),
        "queueing_latency": totals.latency.summary_us(),
        "target_deliveries_per_s": bar_value,
        "meets_target": bar_value.map(|b| rate >= b),
    }))
}

fn latency(target: &Target, options: &Options, report: &mut Report) -> Result<Value> {
    let mut progress = Progress::new("bench latency", options.quiet);
    let s = options.latency_subscribers.max(1);
    let total = (options.rate * options.latency_duration.as_secs_f64()).round() as u64;
    let prefix = "bench-latency-";
    let room = format!("{prefix}0");
    let mut plan = Plan::new(target.addr(), s, s, prefix);
    plan.threads = options.threads;
    plan.positions = 1;
    plan.record_latency = true;
    plan.expect_per_client = Some(total);
    let swarm = Swarm::start(&plan).context("starting the subscriber threads")?;
    if !swarm.wait_joined(Duration::from_secs(60), |_, _| {}) {
        let totals = swarm.finish();
        return Err(Error::new(format!(
            "latency: only {} of {s} subscribers joined",
            totals.joined
        )));
    }
    let (mut stream, drain) = publisher(target, &room)?;
    let (mut frame, at) = content::publish_frame(&room, options.payload);
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    let started = Instant::now();
    let live = std::sync::Arc::clone(&swarm.live);
    for seq in 0..total {
        let due = started + interval.mul_f64(seq as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        content::fill(&mut frame[at..], seq, 0, now_ns());
        stream
            .write_all(&frame)
            .context("latency publisher write")?;
        progress.tick(|| {
            format!(
                "sent {seq}/{total}, delivered {}",
                live.delivered.load(Ordering::Relaxed)
            )
        });
    }
    let sent_seconds = started.elapsed().as_secs_f64();
    let wait_started = Instant::now();
    while live.done.load(Ordering::Acquire) < s && wait_started.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
    let totals = swarm.finish();
    let h = &totals.latency;
    let us = |q: f64| h.quantile(q).map(|ns| ns as f64 / 1000.0);
    let complete = totals.delivered == total * s as u64 && totals.out_of_order == 0;
    report.line(format!(
        "  latency at {} msg/s to {s} subscribers for {:.1} s ({}-byte content): {}",
        options.rate,
        sent_seconds,
        options.payload.max(content::MIN_LEN),
        h.describe_us()
    ));
    report.check(
        complete,
        format!(
            "latency run: {} of {} delivered, {} out of order",
            totals.delivered,
            total * s as u64,
            totals.out_of_order
        ),
    );
    let p50_ok = us(0.5).is_some_and(|v| v <= targets::LATENCY_P50_US);
    let p99_ok = us(0.99).is_some_and(|v| v <= targets::LATENCY_P99_US);
    bar(
        report,
        options,
        p50_ok && p99_ok,
        format!(
            "latency p50 {:.1} µs / p99 {:.1} µs vs bars {} / {} µs",
            us(0.5).unwrap_or(f64::NAN),
            us(0.99).unwrap_or(f64::NAN),
            targets::LATENCY_P50_US,
            targets::LATENCY_P99_US
        ),
    );
    let mut figures = h.summary_us();
    if let Value::Object(map) = &mut figures {
        map.insert("rate".into(), json!(options.rate));
        map.insert("subscribers".into(), json!(s));
        map.insert("messages".into(), json!(total));
        map.insert("seconds".into(), json!(round(sent_seconds, 3)));
        map.insert(
            "payload_bytes".into(),
            json!(options.payload.max(content::MIN_LEN)),
        );
        map.insert("client_threads".into(), json!(plan.threads));
        map.insert("deliveries".into(), json!(totals.delivered));
        map.insert("all_delivered_in_order".into(), json!(complete));
        map.insert("meets_target".into(), json!(p50_ok && p99_ok));
    }
    Ok(figures)
}

/// Where the connections run measures: the server's own process when it can.
fn connections_target(options: &Options) -> Result<(Target, &'static str)> {
    if options.target.addr.is_some() {
        let target = Target::start(&options.target)?;
        let how = if options.target.server_pid.is_some() {
            "the server's process (--server-pid)"
        } else {
            "nothing: pass --server-pid to read the server's memory"
        };
        return Ok((target, how));
    }
    let binary = options.server_bin.clone().or_else(sibling_server_binary);
    match binary {
        Some(binary) if !options.in_process_connections => {
            let args = vec![
                "--max-connections".to_owned(),
                (options.connections + 64).to_string(),
            ];
            Ok((
                Target::child(&binary, &args)?,
                "the server binary as a child process (server memory only)",
            ))
        }
        _ => {
            let config = server::Config {
                max_connections: options.connections + 64,
                ..options.target.config.clone().unwrap_or_default()
            };
            Ok((
                Target::in_process(config)?,
                "this process with the in-process server (includes the stress client's memory; build the server binary for a server-only figure)",
            ))
        }
    }
}

fn connections(options: &Options, report: &mut Report) -> Result<Value> {
    let mut progress = Progress::new("bench connections", options.quiet);
    let n = options.connections;
    let in_process_possible = options.target.addr.is_none()
        && (options.in_process_connections
            || (options.server_bin.is_none() && sibling_server_binary().is_none()));
    crate::load::ensure_descriptors(n, in_process_possible)?;
    let (target, how) = connections_target(options)?;
    progress.say(format!(
        "measuring {} idle connections on {}",
        n,
        target.describe()
    ));
    // Warm up: one connection in and out, so lazily made structures exist;
    // measure once the server has closed it again.
    let _ = target.stats();
    crate::wire::wait_for_stats(target.addr(), Duration::from_secs(30), |st| {
        st.connections <= 1
    })?;
    let before = target.memory();
    let mut plan = Plan::new(target.addr(), n, options.idle_room_size, "bench-idle-");
    plan.threads = options.threads;
    plan.read_buffer = 64 * 1024;
    let started = Instant::now();
    let swarm = Swarm::start(&plan).context("starting the client threads")?;
    let all = swarm.wait_joined(
        Duration::from_secs(120) + Duration::from_millis(n as u64 * 20),
        |joined, failed| {
            progress.tick(|| format!("{joined}/{n} joined, {failed} failed"));
        },
    );
    let connect_seconds = started.elapsed().as_secs_f64();
    let (stats, counted) =
        crate::wire::wait_for_stats(target.addr(), Duration::from_secs(30), |st| {
            st.connections as usize > n
        })?;
    // Measure idle connections: the server gives back the spare stack and
    // buffers of a connection after a quarter second of silence, so wait
    // until the last member events of the joins are a few seconds old.
    std::thread::sleep(Duration::from_secs(3));
    let after = target.memory();
    let totals = swarm.finish();
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if n > 0 => Some((a.rss_kib as f64 - b.rss_kib as f64) / n as f64),
        _ => None,
    };
    let joined = totals.joined;
    report.line(format!(
        "  connections: {joined}/{n} idle clients joined rooms of {} in {connect_seconds:.1} s; server counted {} connections, {} rooms",
        options.idle_room_size, stats.connections, stats.rooms
    ));
    match (per_conn, before, after) {
        (Some(k), Some(b), Some(a)) => report.line(format!(
            "    server RSS {} KiB -> {} KiB ({} threads): {k:.1} KiB per connection, measured on {how}",
            b.rss_kib, a.rss_kib, a.threads
        )),
        _ => report.line(format!("    server memory not measured: {how}")),
    }
    report.check(
        all && joined == n,
        format!("connections: only {joined} of {n} clients joined"),
    );
    report.check(
        counted,
        format!(
            "connections: the server counted {} connections, expected {}",
            stats.connections,
            n + 1
        ),
    );
    if let Some(k) = per_conn {
        bar(
            report,
            options,
            k <= targets::KIB_PER_CONNECTION,
            format!(
                "{k:.1} KiB per idle connection > {} KiB",
                targets::KIB_PER_CONNECTION
            ),
        );
    }
    let mem = |m: Option<ProcStatus>| match m {
        Some(m) => json!({"rss_kib": m.rss_kib, "peak_rss_kib": m.hwm_kib, "threads": m.threads}),
        None => Value::Null,
    };
    let figures = json!({
        "connections": n,
        "joined": joined,
        "room_size": options.idle_room_size,
        "connect_s": round(connect_seconds, 3),
        "server_connections": stats.connections,
        "server_rooms": stats.rooms,
        "measured_on": target.mode(),
        "includes_stress_client": target.memory_includes_client(),
        "before": mem(before),
        "after": mem(after),
        "kib_per_connection": per_conn.map(|k| round(k, 2)),
        "target_kib_per_connection": targets::KIB_PER_CONNECTION,
        "meets_target": per_conn.map(|k| k <= targets::KIB_PER_CONNECTION),
    });
    target.stop();
    Ok(figures)
}
