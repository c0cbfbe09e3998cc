//! load: N clients in rooms of a chosen size, each publishing at a chosen
//! rate for D seconds, on a few `mio` threads ([`crate::swarm`]).
//!
//! Reports how many connected, messages sent and delivered against what the
//! room sizes call for, throughput, delivery latency (from a timestamp in the
//! content, same clock), errors, and the server's memory. The verdict: every
//! client connected, every expected delivery arrived in order, no ERROR and
//! no connection lost.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{Context, Error, Result};
use crate::report::{Progress, Report, round};
use crate::swarm::{Plan, PublishPlan, Swarm, content};
use crate::sys::ProcStatus;
use crate::target::{Target, TargetOptions};

/// Settings of a load run.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: TargetOptions,
    pub clients: usize,
    /// Clients per room (the last room may be smaller).
    pub room_size: usize,
    /// Messages per second, per client.
    pub rate: f64,
    pub duration: Duration,
    /// Bytes of each message's content (a JSON string, quotes included).
    pub payload: usize,
    /// Client threads.
    pub threads: usize,
    pub quiet: bool,
    /// 0: one server. N: a cluster of N nodes sharing rooms through a
    /// `redis-server` of the run's own (SPEC.md 14), each room's clients
    /// spread over them.
    pub cluster_nodes: usize,
    /// With `cluster_nodes`: the nodes' `--cluster-order`.
    pub cluster_order: server::ClusterOrder,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: TargetOptions::default(),
            clients: 100,
            room_size: 10,
            rate: 10.0,
            duration: Duration::from_secs(10),
            payload: 64,
            threads: 2,
            quiet: false,
            cluster_nodes: 0,
            cluster_order: server::ClusterOrder::Publisher,
        }
    }
}

/// Checks that `sockets` more descriptors fit, raising the soft limit first.
pub fn ensure_descriptors(sockets: usize, in_process: bool) -> Result<u64> {
    let limit = crate::sys::raise_nofile_limit();
    let needed = sockets * if in_process { 2 } else { 1 } + 256;
    if (needed as u64) > limit {
        return Err(Error::new(format!(
            "{sockets} connections need about {needed} file descriptors {}but the limit is {limit}; \
             raise it (ulimit -n) or run the server as its own process and pass --addr",
            if in_process {
                "(both ends live in this process) "
            } else {
                ""
            }
        )));
    }
    Ok(limit)
}

/// Runs load against the target.
pub fn run(options: &Options) -> Result<Report> {
    ensure_descriptors(options.clients, options.target.addr.is_none())?;
    if options.cluster_nodes > 0 {
        let cluster = crate::cluster::Cluster::start(
            options.cluster_nodes,
            options.cluster_order,
            &options.target,
        )?;
        let report = run_on_nodes(&cluster.nodes, options);
        cluster.stop();
        return report;
    }
    let target = Target::start(&options.target)?;
    let report = run_on(&target, options);
    target.stop();
    report
}

/// Runs load against a server that is already there.
pub fn run_on(target: &Target, options: &Options) -> Result<Report> {
    run_on_nodes(std::slice::from_ref(target), options)
}

/// Runs load against one server, or a cluster's nodes (the first one's
/// figures stand for the server's; the memory is this process's).
fn run_on_nodes(nodes: &[Target], options: &Options) -> Result<Report> {
    let target = &nodes[0];
    crate::sys::start_clock();
    let mut progress = Progress::new("load", options.quiet);
    let memory_before = target.memory();
    let mut plan = Plan::new(target.addr(), options.clients, options.room_size, "load-");
    if nodes.len() > 1 {
        plan.nodes = nodes.iter().map(Target::addr).collect();
    }
    plan.threads = options.threads;
    plan.record_latency = true;
    plan.publish = Some(PublishPlan {
        rate: options.rate,
        content_len: options.payload,
    });
    let started = Instant::now();
    let swarm = Swarm::start(&plan).context("starting the client threads")?;
    let connect_timeout =
        Duration::from_secs(60) + Duration::from_millis(options.clients as u64 * 10);
    let all_joined = swarm.wait_joined(connect_timeout, |joined, failed| {
        progress.tick(|| {
            format!(
                "connecting: {joined}/{} joined, {failed} failed",
                options.clients
            )
        });
    });
    let connect_seconds = started.elapsed().as_secs_f64();
    let joined = swarm.live.joined.load(std::sync::atomic::Ordering::Acquire);
    progress.say(format!(
        "{joined}/{} clients joined in {connect_seconds:.1} s; publishing for {} s",
        options.clients,
        options.duration.as_secs_f64()
    ));
    let mut peak = memory_before;
    let sample = |peak: &mut Option<ProcStatus>| {
        if let Some(m) = target.memory() {
            let p = peak.get_or_insert(m);
            p.rss_kib = p.rss_kib.max(m.rss_kib);
            p.hwm_kib = p.hwm_kib.max(m.hwm_kib);
            p.threads = p.threads.max(m.threads);
        }
    };
    let start_ns = swarm.start_publishing();
    let run_started = Instant::now();
    let live = &swarm.live;
    while run_started.elapsed() < options.duration {
        std::thread::sleep(Duration::from_millis(100));
        sample(&mut peak);
        progress.tick(|| {
            format!(
                "{:.0}/{} s: sent {}, delivered {}, lost connections {}",
                run_started.elapsed().as_secs_f64(),
                options.duration.as_secs_f64(),
                live.sent.load(std::sync::atomic::Ordering::Relaxed),
                live.delivered.load(std::sync::atomic::Ordering::Relaxed),
                live.closed.load(std::sync::atomic::Ordering::Relaxed)
            )
        });
    }
    swarm.stop_publishing();
    let publish_seconds = run_started.elapsed().as_secs_f64();
    // Drain: until every expected delivery arrived, or nothing arrived for
    // 15 s (a stuck server), at most 120 s.
    let drain_started = Instant::now();
    let mut last = live.delivered.load(std::sync::atomic::Ordering::Acquire);
    let mut progress_at = Instant::now();
    loop {
        let delivered = live.delivered.load(std::sync::atomic::Ordering::Acquire);
        let expected = live.expected();
        if delivered >= expected
            || progress_at.elapsed() > Duration::from_secs(15)
            || drain_started.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        if delivered != last {
            last = delivered;
            progress_at = Instant::now();
        }
        progress.tick(|| format!("draining: delivered {delivered} of {expected}"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    sample(&mut peak);
    let memory_after = target.memory();
    let totals = swarm.finish();
    let expected = totals.expected_deliveries();
    let end_ns = totals.last_delivery_ns.max(start_ns + 1);
    let span = (end_ns - start_ns) as f64 / 1e9;
    let delivery_rate = totals.delivered as f64 / span;
    let send_rate = totals.sent as f64 / publish_seconds;
    let ratio = if expected > 0 {
        totals.delivered as f64 / expected as f64
    } else {
        0.0
    };

    let mut report = Report::new("load");
    report.line(format!(
        "load against {}: {} clients in rooms of {}, {} msg/s each, {} s, {}-byte content, {} client threads",
        if nodes.len() > 1 {
            format!(
                "a cluster of {} in-process nodes sharing rooms through redis-server (each room's clients spread over them)",
                nodes.len()
            )
        } else {
            target.describe()
        },
        options.clients,
        options.room_size,
        options.rate,
        options.duration.as_secs_f64(),
        options.payload.max(content::MIN_LEN),
        plan.threads
    ));
    report.line(format!(
        "  connected {}/{} in {connect_seconds:.1} s ({} gave up), lost after joining {}",
        totals.joined, options.clients, totals.failed_to_join, totals.closed_early
    ));
    report.line(format!(
        "  sent {} ({send_rate:.0}/s), delivered {} of {expected} expected ({:.4}), {delivery_rate:.0} deliveries/s",
        totals.sent, totals.delivered, ratio
    ));
    report.line(format!("  latency {}", totals.latency.describe_us()));
    report.line(format!(
        "  errors {:?}, out of order {}, foreign {}, publish turns skipped (backed up) {}",
        totals.errors, totals.out_of_order, totals.foreign, totals.backlogged
    ));
    let memory = |m: Option<ProcStatus>| match m {
        Some(m) => json!({"rss_kib": m.rss_kib, "peak_rss_kib": m.hwm_kib, "threads": m.threads}),
        None => serde_json::Value::Null,
    };
    match peak {
        Some(p) => report.line(format!(
            "  server memory: peak RSS {} KiB (VmHWM {} KiB), {} threads at peak{}",
            p.rss_kib,
            p.hwm_kib,
            p.threads,
            if target.memory_includes_client() {
                " (in-process: includes this tool)"
            } else {
                ""
            }
        )),
        None => report.line("  server memory: unknown (pass --server-pid with --addr)"),
    }
    report.check(
        all_joined && totals.joined == options.clients,
        format!(
            "only {} of {} clients joined",
            totals.joined, options.clients
        ),
    );
    report.check(
        totals.delivered == expected,
        format!("delivered {} of {expected} expected", totals.delivered),
    );
    report.check(
        totals.out_of_order == 0,
        format!("{} deliveries out of order", totals.out_of_order),
    );
    report.check(
        totals.foreign == 0,
        format!("{} MESSAGE frames were not the ones sent", totals.foreign),
    );
    report.check(
        totals.errors.is_empty(),
        format!("the server sent errors: {:?}", totals.errors),
    );
    report.check(
        totals.closed_early == 0,
        format!(
            "{} connections were lost during the run",
            totals.closed_early
        ),
    );
    report.set("target", target.mode());
    report.set("clients", options.clients);
    report.set("room_size", options.room_size);
    report.set("rooms", plan.rooms());
    report.set("rate_per_client", options.rate);
    report.set("duration_s", options.duration.as_secs_f64());
    report.set("payload_bytes", options.payload.max(content::MIN_LEN));
    report.set("client_threads", plan.threads);
    report.set("connected", totals.joined);
    report.set("connect_s", round(connect_seconds, 3));
    report.set("failed_to_connect", totals.failed_to_join);
    report.set("lost_connections", totals.closed_early);
    report.set("sent", totals.sent);
    report.set("delivered", totals.delivered);
    report.set("expected", expected);
    report.set("delivered_ratio", round(ratio, 6));
    report.set("send_rate", round(send_rate, 1));
    report.set("deliveries_per_s", round(delivery_rate, 1));
    report.set("latency", totals.latency.summary_us());
    report.set("errors", json!(totals.errors));
    report.set("out_of_order", totals.out_of_order);
    report.set("foreign", totals.foreign);
    report.set("membership_events", totals.member_events);
    report.set("backlogged_turns", totals.backlogged);
    report.set(
        "server_memory",
        json!({
            "before": memory(memory_before),
            "after": memory(memory_after),
            "peak": memory(peak),
            "includes_stress_client": target.memory_includes_client(),
        }),
    );
    report.set("drain_s", round(drain_seconds, 3));
    report.set("seconds", round(started.elapsed().as_secs_f64(), 3));
    Ok(report)
}
