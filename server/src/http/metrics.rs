//! `/metrics`: the server's counters in the Prometheus exposition format.
//!
//! One source of truth: every value is read at scrape time from the same
//! atomics that HELLO `stats` report ([`Counters`], whose frame counts by
//! type HELLO sums), or from the registry of live connections; nothing
//! here is counted twice. The histograms are counted on the hot path, in
//! relaxed atomics (see `crate::histogram`), and summed here.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::counters::{Counters, TYPE_LABELS};
use crate::histogram::Summed;
use crate::shared::Shared;

/// The content type of [`render`]'s answer: the classic text format,
/// which both Prometheus and `promtool check metrics` read.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition for `shared`, now.
pub(super) fn render(shared: &Shared) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("relay");
    registry.register_collector(Box::new(Snapshot::take(shared)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(classic(&out))
}

/// `openmetrics` in the classic text format: a counter family is named
/// with its `_total` there, and there is no `# EOF`. (`prometheus-client`
/// writes only OpenMetrics, which `promtool check metrics` misreads.)
fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 256);
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let counter = rest.strip_suffix(" counter");
            let (name, kind) = match counter {
                Some(name) => (format!("{name}_total"), "counter"),
                None => match rest.split_once(' ') {
                    Some((name, kind)) => (name.to_owned(), kind),
                    None => (rest.to_owned(), "untyped"),
                },
            };
            if let Some(help) = help.take() {
                let text = help.splitn(4, ' ').nth(3).unwrap_or("");
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The values read for one scrape. A `Collector` must be `'static`, so the
/// scrape reads everything first and encodes the copy.
#[derive(Debug)]
struct Snapshot {
    gauges: Vec<(&'static str, &'static str, i64)>,
    counters: Vec<(&'static str, &'static str, u64)>,
    /// Counter families with one label: name, help, label, values.
    families: Vec<Family>,
    /// Gauge families, likewise.
    gauge_families: Vec<Family>,
    histograms: Vec<Hist>,
}

#[derive(Debug)]
struct Hist {
    name: &'static str,
    help: &'static str,
    summed: Summed,
    /// What to divide the sum by (the buckets are scaled already).
    scale: f64,
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: Vec<(&'static str, u64)>,
}

/// Every transport `/connz` names, in the order listed.
const TRANSPORTS: [&str; 4] = ["tcp", "tls", "ws", "wss"];

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Snapshot {
    fn take(shared: &Shared) -> Snapshot {
        let counters: &Counters = &shared.counters;
        let stats = counters.snapshot();
        let peers = shared.peers();
        let queued: Vec<u64> = peers
            .iter()
            .map(|peer| peer.outbound.queued_bytes() as u64)
            .collect();
        let by_transport = TRANSPORTS
            .iter()
            .map(|&name| {
                let n = peers.iter().filter(|peer| peer.transport == name).count();
                (name, n as u64)
            })
            .collect();
        let gauges = vec![
            (
                "connections",
                "Connections open now.",
                gauge(stats.connections),
            ),
            (
                "rooms",
                "Rooms with at least one member now.",
                gauge(stats.rooms),
            ),
            (
                "memberships",
                "Connections in rooms now, one per connection per room.",
                gauge(stats.memberships),
            ),
            (
                "memory_used_bytes",
                "Bytes charged against the memory budget now.",
                gauge(stats.memory_used),
            ),
            (
                "memory_budget_bytes",
                "The memory budget.",
                gauge(stats.memory_budget),
            ),
            (
                "memory_shedding",
                "1 while over the memory budget and refusing new work.",
                i64::from(counters.memory_shedding()),
            ),
            (
                "queued_bytes",
                "Bytes queued for all connections now, sampled at scrape.",
                gauge(queued.iter().sum()),
            ),
            (
                "queued_bytes_max",
                "The longest connection queue now, in bytes, sampled at scrape.",
                gauge(queued.iter().copied().max().unwrap_or(0)),
            ),
            (
                "max_connections",
                "Connections allowed: --max-connections capped by system limits.",
                gauge(shared.max_connections as u64),
            ),
            (
                "threads",
                "Threads in the process now (two per connection, plus a few).",
                process_threads().map_or(-1, gauge),
            ),
        ];
        let counters_now = vec![
            (
                "connections_accepted",
                "Connections admitted since start.",
                stats.connections_total,
            ),
            (
                "bytes_in",
                "Bytes read from clients, as they arrive (partial and refused frames included).",
                stats.bytes_in,
            ),
            (
                "bytes_out",
                "Bytes written to clients, as each write returns.",
                stats.bytes_out,
            ),
            (
                "slow_consumers",
                "Connections cut off as slow consumers.",
                stats.slow_consumers,
            ),
            (
                "stall_waits",
                "Times a publisher waited for a member whose queue was full (one per member per broadcast).",
                counters.stall_waits(),
            ),
            (
                "tls_handshake_failures",
                "TLS handshakes that failed or ran out of time.",
                counters.tls_handshake_failures(),
            ),
            (
                "ws_upgrade_failures",
                "WebSocket upgrades refused (400, 403, 404, 426, 431) or not finished in time.",
                counters.ws_upgrade_failures(),
            ),
            (
                "thread_panics",
                "Connection threads that panicked (a bug if not 0).",
                counters.thread_panics(),
            ),
            (
                "log_lines_dropped",
                "Log lines dropped because stderr was not read fast enough.",
                counters.log_lines_dropped(),
            ),
        ];
        let errors = protocol::ErrorCode::ALL
            .iter()
            .map(|&code| (code.as_str(), counters.errors_sent(code)))
            .collect();
        let mut families = vec![
            Family {
                name: "frames_in",
                help: "Frames received and handled, by message type.",
                label: "type",
                values: counters.received.frames(),
            },
            Family {
                name: "frames_out",
                help: "Frames written whole to clients, by message type.",
                label: "type",
                values: counters.sent.frames(),
            },
            Family {
                name: "frame_bytes_in",
                help: "Bytes of the frames received and handled (headers included), by message type.",
                label: "type",
                values: counters.received.bytes(),
            },
            Family {
                name: "frame_bytes_out",
                help: "Bytes of the frames written whole (headers included), by message type.",
                label: "type",
                values: counters.sent.bytes(),
            },
            Family {
                name: "connections_refused",
                help: "Connections turned away at accept, by reason.",
                label: "reason",
                values: counters.refusals(),
            },
            Family {
                name: "errors_sent",
                help: "ERROR frames sent, by code.",
                label: "code",
                values: errors,
            },
            Family {
                name: "closes",
                help: "Connections closed, by reason.",
                label: "reason",
                values: counters.closes(),
            },
        ];
        let gauge_families = vec![Family {
            name: "connections_by_transport",
            help: "Connections open now, by transport (tcp, tls, ws, wss), sampled at scrape.",
            label: "transport",
            values: by_transport,
        }];
        let histograms = &counters.histograms;
        let histograms = vec![
            Hist {
                name: "queue_depth_bytes",
                help: "Bytes in a member's queue once a sampled room delivery is queued (the delivery included).",
                summed: histograms.queue_bytes.sum(1.0),
                scale: 1.0,
            },
            Hist {
                name: "broadcast_fanout",
                help: "Members each MESSAGE to a room was queued for.",
                summed: histograms.fan_out.sum(1.0),
                scale: 1.0,
            },
            Hist {
                name: "delivery_latency_seconds",
                help: "Sampled MESSAGEs: from the read that brought one in to the write that put its last byte in a member's socket.",
                summed: histograms.latency.sum(1e9),
                scale: 1e9,
            },
        ];
        debug_assert_eq!(TYPE_LABELS.len(), protocol::MessageType::ALL.len());
        let (mut gauges, mut counters_now) = (gauges, counters_now);
        if let Some(cluster) = &shared.cluster {
            cluster_metrics(cluster, &mut gauges, &mut counters_now, &mut families);
        }
        Snapshot {
            gauges,
            counters: counters_now,
            families,
            gauge_families,
            histograms,
        }
    }
}

/// `relay_cluster_*`, on a node with `--cluster` only.
fn cluster_metrics(
    cluster: &crate::cluster::Cluster,
    gauges: &mut Vec<(&'static str, &'static str, i64)>,
    counters: &mut Vec<(&'static str, &'static str, u64)>,
    families: &mut Vec<Family>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &cluster.counters;
    gauges.push((
        "cluster_outlink_up",
        "1 while the publishing connection to Redis is up.",
        i64::from(c.outlink_up.load(Relaxed)),
    ));
    gauges.push((
        "cluster_inlink_up",
        "1 while the subscribing connection to Redis is up.",
        i64::from(c.inlink_up.load(Relaxed)),
    ));
    gauges.push((
        "cluster_queue_bytes",
        "Bytes of relayed batches waiting for Redis now.",
        gauge(cluster.outlink.queued() as u64),
    ));
    for (name, help, value) in [
        (
            "cluster_batches_out",
            "Batches published to the other nodes.",
            &c.batches_out,
        ),
        ("cluster_messages_out", "Messages in them.", &c.messages_out),
        (
            "cluster_batches_in",
            "Batches from other nodes relayed to local members.",
            &c.batches_in,
        ),
        ("cluster_messages_in", "Messages in them.", &c.messages_in),
        (
            "cluster_reconnects",
            "Connections to Redis made again after a loss.",
            &c.reconnects,
        ),
        (
            "cluster_gaps",
            "Gap notices sent to local members for messages missed from other nodes.",
            &c.gaps,
        ),
        (
            "cluster_gap_messages",
            "Messages those gap notices covered.",
            &c.gap_messages,
        ),
        (
            "cluster_nodes_gone",
            "Other nodes this node declared gone: their heartbeat expired.",
            &c.nodes_gone,
        ),
        (
            "cluster_departed_left",
            "userLeft events local members got for the members of nodes that went.",
            &c.departed_left,
        ),
        (
            "cluster_directs_out",
            "Direct messages queued for other nodes.",
            &c.directs_out,
        ),
        (
            "cluster_directs_dropped",
            "Direct messages for other nodes dropped: the queue to Redis was full or the link down.",
            &c.directs_dropped,
        ),
        (
            "cluster_directs_in",
            "Direct messages from other nodes delivered to local connections.",
            &c.directs_in,
        ),
        (
            "cluster_directs_undelivered",
            "Direct messages from other nodes whose recipient was no longer open here.",
            &c.directs_undelivered,
        ),
    ] {
        counters.push((name, help, value.load(Relaxed)));
    }
    families.push(Family {
        name: "cluster_dropped",
        help: "Relayed batches dropped, by reason (the other nodes' members get gap notices for them).",
        label: "reason",
        values: c.dropped_by().collect(),
    });
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for &(name, help, value) in &self.gauges {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        for &(name, help, value) in &self.counters {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        for family in &self.families {
            let mut metrics = encoder.encode_descriptor(
                family.name,
                family.help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for &(value_name, value) in &family.values {
                let labels = [(family.label, value_name)];
                ConstCounter::new(value).encode(metrics.encode_family(&labels)?)?;
            }
        }
        for family in &self.gauge_families {
            let mut metrics = encoder.encode_descriptor(
                family.name,
                family.help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for &(value_name, value) in &family.values {
                let labels = [(family.label, value_name)];
                ConstGauge::new(gauge(value)).encode(metrics.encode_family(&labels)?)?;
            }
        }
        for hist in &self.histograms {
            let mut metric = encoder.encode_descriptor(
                hist.name,
                hist.help,
                None,
                prometheus_client::metrics::MetricType::Histogram,
            )?;
            metric.encode_histogram::<NoLabelSet>(
                hist.summed.sum as f64 / hist.scale,
                hist.summed.count,
                &hist.summed.buckets,
                None,
            )?;
        }
        Ok(())
    }
}

/// Threads in this process, from `/proc/self/status`; `None` where there
/// is no procfs.
fn process_threads() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
}
