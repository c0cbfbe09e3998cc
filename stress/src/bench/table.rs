//! The numbers a bench run ends with: medians over repeated runs, the
//! side-by-side table, and Relay's bars.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::subject::Launch;
use super::{Options, Which};
use crate::peer::System;
use crate::report::Report;

/// The performance bars of the server issues, checked on Relay's figures.
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

/// One number a workload reports, for the table and the bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Fan-out to S subscribers, deliveries/s.
    Fanout(usize),
    LatencyP50,
    LatencyP99,
    /// Server CPU during the latency run, % of one core.
    LatencyCpu,
    RoomsDeliveries,
    RoomsCpu,
    RoomsP50,
    RoomsP99,
    /// Connections set up per second.
    SetupRate,
    /// Server RSS per idle joined connection, KiB.
    IdleKib,
    /// Share of the crowd's memory growth given back, %.
    MemoryReturned,
    /// The same fan-out and latency over Relay's TLS port (`--tls`).
    TlsFanout(usize),
    TlsLatencyP50,
    TlsLatencyP99,
    TlsLatencyCpu,
    /// The same over Relay's WebSocket port (`--ws`).
    WsFanout(usize),
    WsLatencyP50,
    WsLatencyP99,
    WsLatencyCpu,
}

impl Metric {
    /// The key in the JSON medians.
    fn key(self) -> String {
        match self {
            Metric::Fanout(s) => format!("fanout_{s}_deliveries_per_s"),
            Metric::LatencyP50 => "latency_p50_us".into(),
            Metric::LatencyP99 => "latency_p99_us".into(),
            Metric::LatencyCpu => "latency_server_cpu_pct".into(),
            Metric::RoomsDeliveries => "rooms_deliveries_per_s".into(),
            Metric::RoomsCpu => "rooms_server_cpu_pct".into(),
            Metric::RoomsP50 => "rooms_p50_us".into(),
            Metric::RoomsP99 => "rooms_p99_us".into(),
            Metric::SetupRate => "setup_connections_per_s".into(),
            Metric::IdleKib => "idle_kib_per_connection".into(),
            Metric::MemoryReturned => "memory_returned_pct".into(),
            Metric::TlsFanout(s) => format!("tls_fanout_{s}_deliveries_per_s"),
            Metric::TlsLatencyP50 => "tls_latency_p50_us".into(),
            Metric::TlsLatencyP99 => "tls_latency_p99_us".into(),
            Metric::TlsLatencyCpu => "tls_latency_server_cpu_pct".into(),
            Metric::WsFanout(s) => format!("ws_fanout_{s}_deliveries_per_s"),
            Metric::WsLatencyP50 => "ws_latency_p50_us".into(),
            Metric::WsLatencyP99 => "ws_latency_p99_us".into(),
            Metric::WsLatencyCpu => "ws_latency_server_cpu_pct".into(),
        }
    }
}

/// Every number of every run, per system.
#[derive(Debug, Default)]
pub struct Results {
    values: HashMap<System, Vec<(Metric, f64)>>,
}

impl Results {
    pub fn add(&mut self, system: System, metrics: Vec<(Metric, f64)>) {
        self.values.entry(system).or_default().extend(metrics);
    }

    /// The median of a metric over the runs that measured it.
    pub fn median(&self, system: System, metric: Metric) -> Option<f64> {
        let mut values: Vec<f64> = self
            .values
            .get(&system)?
            .iter()
            .filter(|(m, _)| *m == metric)
            .map(|&(_, v)| v)
            .collect();
        median(&mut values)
    }

    pub fn medians_json(&self, system: System) -> Value {
        let mut out = Map::new();
        for &(metric, _) in self
            .values
            .get(&system)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if !out.contains_key(&metric.key()) {
                let value = self
                    .median(system, metric)
                    .map(|v| crate::report::round(v, 2));
                out.insert(metric.key(), json!(value));
            }
        }
        Value::Object(out)
    }
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// `12,345`
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A table row: its label, and how to show a system's value.
struct Row {
    label: String,
    metrics: Vec<Metric>,
    show: fn(&[f64]) -> String,
}

fn rows(options: &Options) -> Vec<Row> {
    let mut rows = Vec::new();
    let has = |w| options.which.contains(&w);
    let payload = options.payload.max(crate::swarm::content::MIN_LEN);
    if has(Which::Fanout) {
        for (k, &s) in options.subscribers.iter().enumerate() {
            rows.push(Row {
                label: if k == 0 {
                    format!("fan-out 1→{s}, {payload} B (deliveries/s)")
                } else {
                    format!("fan-out 1→{s}")
                },
                metrics: vec![Metric::Fanout(s)],
                show: |v| format!("{:.2} M", v[0] / 1e6),
            });
        }
    }
    if has(Which::Fanout) && options.tls {
        for &s in &options.subscribers {
            rows.push(Row {
                label: format!("fan-out 1→{s} over TLS"),
                metrics: vec![Metric::TlsFanout(s)],
                show: |v| format!("{:.2} M", v[0] / 1e6),
            });
            rows.push(Row {
                label: format!("fan-out 1→{s}: TLS as % of plain"),
                metrics: vec![Metric::TlsFanout(s), Metric::Fanout(s)],
                show: |v| format!("{:.0}%", 100.0 * v[0] / v[1]),
            });
        }
    }
    if has(Which::Fanout) && options.ws {
        for &s in &options.subscribers {
            rows.push(Row {
                label: format!("fan-out 1→{s} over WebSocket"),
                metrics: vec![Metric::WsFanout(s)],
                show: |v| format!("{:.2} M", v[0] / 1e6),
            });
            rows.push(Row {
                label: format!("fan-out 1→{s}: WebSocket as % of plain"),
                metrics: vec![Metric::WsFanout(s), Metric::Fanout(s)],
                show: |v| format!("{:.0}%", 100.0 * v[0] / v[1]),
            });
        }
    }
    if has(Which::Rooms) {
        let lead = format!(
            "rooms: {} clients in rooms of {}, {} msg/s each",
            thousands(options.rooms_clients as f64),
            options.room_size,
            options.rooms_rate
        );
        rows.push(Row {
            label: format!("{lead}: server CPU % of one core"),
            metrics: vec![Metric::RoomsCpu],
            show: |v| format!("{:.1}", v[0]),
        });
        rows.push(Row {
            label: "rooms: p50 / p99 latency (µs)".into(),
            metrics: vec![Metric::RoomsP50, Metric::RoomsP99],
            show: |v| format!("{:.0} / {:.0}", v[0], v[1]),
        });
    }
    if has(Which::Latency) {
        rows.push(Row {
            label: format!(
                "latency: {} msg/s to {} subscribers: p50 / p99 (µs)",
                thousands(options.rate),
                options.latency_subscribers
            ),
            metrics: vec![Metric::LatencyP50, Metric::LatencyP99],
            show: |v| format!("{:.0} / {:.0}", v[0], v[1]),
        });
        rows.push(Row {
            label: "latency: server CPU % of one core".into(),
            metrics: vec![Metric::LatencyCpu],
            show: |v| format!("{:.1}", v[0]),
        });
        if options.tls {
            rows.push(Row {
                label: "latency over TLS: p50 / p99 (µs)".into(),
                metrics: vec![Metric::TlsLatencyP50, Metric::TlsLatencyP99],
                show: |v| format!("{:.0} / {:.0}", v[0], v[1]),
            });
            rows.push(Row {
                label: "latency over TLS: server CPU % of one core".into(),
                metrics: vec![Metric::TlsLatencyCpu],
                show: |v| format!("{:.1}", v[0]),
            });
        }
        if options.ws {
            rows.push(Row {
                label: "latency over WebSocket: p50 / p99 (µs)".into(),
                metrics: vec![Metric::WsLatencyP50, Metric::WsLatencyP99],
                show: |v| format!("{:.0} / {:.0}", v[0], v[1]),
            });
            rows.push(Row {
                label: "latency over WebSocket: server CPU % of one core".into(),
                metrics: vec![Metric::WsLatencyCpu],
                show: |v| format!("{:.1}", v[0]),
            });
        }
    }
    if has(Which::Setup) {
        rows.push(Row {
            label: "connection setup (connections/s)".into(),
            metrics: vec![Metric::SetupRate],
            show: |v| thousands(v[0]),
        });
    }
    if has(Which::Connections) {
        rows.push(Row {
            label: format!(
                "RSS per idle joined connection, {} (KiB)",
                thousands(options.connections as f64)
            ),
            metrics: vec![Metric::IdleKib],
            show: |v| format!("{:.1}", v[0]),
        });
    }
    if has(Which::Memory) {
        rows.push(Row {
            label: format!(
                "memory given back after {} clients in {} rooms each leave (% of the growth)",
                thousands(options.memory_connections as f64),
                options.memory_rooms
            ),
            metrics: vec![Metric::MemoryReturned],
            show: |v| format!("{:.0} %", v[0]),
        });
    }
    rows
}

/// Prints the table (medians), adds it to the JSON, and checks Relay's bars.
pub(super) fn write(
    report: &mut Report,
    options: &Options,
    systems: &[(System, std::result::Result<Launch, String>)],
    results: &Results,
) {
    let columns: Vec<System> = systems.iter().map(|(s, _)| *s).collect();
    let ran = |s: System| systems.iter().any(|(x, l)| *x == s && l.is_ok());
    report.line("");
    report.line(if options.repeat > 1 {
        format!("medians of {} runs:", options.repeat)
    } else {
        "summary:".to_owned()
    });
    let header: Vec<&str> = columns.iter().map(|s| s.name()).collect();
    report.line(format!("| workload | {} |", header.join(" | ")));
    report.line(format!("|---|{}", "---|".repeat(columns.len())));
    let mut table = Vec::new();
    for row in rows(options) {
        let mut cells = Vec::new();
        let mut json_row = Map::new();
        json_row.insert("workload".into(), json!(row.label));
        for &system in &columns {
            let values: Option<Vec<f64>> = row
                .metrics
                .iter()
                .map(|&m| results.median(system, m))
                .collect();
            cells.push(match &values {
                _ if !ran(system) => "not run".to_owned(),
                Some(v) => (row.show)(v),
                None => "–".to_owned(),
            });
            let value = match values {
                Some(v) if v.len() == 1 => json!(crate::report::round(v[0], 2)),
                Some(v) => json!(
                    v.iter()
                        .map(|x| crate::report::round(*x, 2))
                        .collect::<Vec<_>>()
                ),
                None => Value::Null,
            };
            json_row.insert(system.key().into(), value);
        }
        report.line(format!("| {} | {} |", row.label, cells.join(" | ")));
        table.push(Value::Object(json_row));
    }
    report.set("table", Value::Array(table));
    if columns.contains(&System::Relay) {
        bars(report, options, results);
    }
}

fn bars(report: &mut Report, options: &Options, results: &Results) {
    let relay = |m| results.median(System::Relay, m);
    let enforce = options.check_targets;
    let mut check = |what: String, value: Option<f64>, held: fn(f64) -> bool| {
        let shown = match value {
            None => "not measured".to_owned(),
            Some(v) if v >= 10_000.0 => thousands(v),
            Some(v) => format!("{v:.1}"),
        };
        report.bar(format!("{what} (Relay: {shown})"), value.map(held), enforce);
    };
    if options.which.contains(&Which::Fanout) {
        for &s in &options.subscribers {
            let bar = match s {
                100 => targets::FANOUT_100,
                10 => targets::FANOUT_10,
                _ => continue,
            };
            let held: fn(f64) -> bool = if s == 100 {
                |v| v >= targets::FANOUT_100
            } else {
                |v| v >= targets::FANOUT_10
            };
            check(
                format!("fan-out 1→{s} ≥ {} deliveries/s", thousands(bar)),
                relay(Metric::Fanout(s)),
                held,
            );
        }
    }
    if options.which.contains(&Which::Latency) {
        check(
            format!("latency p50 ≤ {} µs", targets::LATENCY_P50_US),
            relay(Metric::LatencyP50),
            |v| v <= targets::LATENCY_P50_US,
        );
        check(
            format!("latency p99 ≤ {} µs", targets::LATENCY_P99_US),
            relay(Metric::LatencyP99),
            |v| v <= targets::LATENCY_P99_US,
        );
    }
    if options.which.contains(&Which::Connections) {
        check(
            format!(
                "RSS per idle joined connection ≤ {} KiB",
                targets::KIB_PER_CONNECTION
            ),
            relay(Metric::IdleKib),
            |v| v <= targets::KIB_PER_CONNECTION,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }

    fn measured() -> Results {
        let mut results = Results::default();
        results.add(
            System::Relay,
            vec![
                (Metric::Fanout(100), 6_000_000.0),
                (Metric::Fanout(10), 1_000_000.0),
                (Metric::LatencyP50, 90.0),
                (Metric::LatencyP99, 700.0),
            ],
        );
        results
    }

    #[test]
    fn each_bar_is_held_missed_or_not_measured() {
        let options = Options {
            which: vec![Which::Fanout, Which::Latency, Which::Connections],
            ..Options::default()
        };
        let mut report = Report::new("bench");
        bars(&mut report, &options, &measured());
        let verdicts: Vec<Option<bool>> = report.bars.iter().map(|(_, h)| *h).collect();
        assert_eq!(
            verdicts,
            [Some(true), Some(false), Some(true), Some(false), None]
        );
        assert!(
            report.bars[0].0.contains("(Relay: 6,000,000)"),
            "{:?}",
            report.bars
        );
        assert!(report.passed, "bars are not enforced by default");
        let enforced = Options {
            check_targets: true,
            ..options
        };
        let mut report = Report::new("bench");
        bars(&mut report, &enforced, &measured());
        assert!(!report.passed);
        assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
    }

    #[test]
    fn the_table_shows_medians_and_says_what_did_not_run() {
        let mut results = measured();
        results.add(System::Relay, vec![(Metric::Fanout(100), 2_000_000.0)]);
        results.add(System::Relay, vec![(Metric::Fanout(100), 3_000_000.0)]);
        let options = Options {
            which: vec![Which::Fanout],
            repeat: 3,
            ..Options::default()
        };
        let systems = vec![
            (System::Relay, Ok(Launch::RelayInProcess(Box::default()))),
            (System::Redis, Err("redis-server not found".to_owned())),
        ];
        let mut report = Report::new("bench");
        write(&mut report, &options, &systems, &results);
        assert!(
            report
                .lines
                .contains(&"| workload | Relay | Redis |".to_owned()),
            "{:?}",
            report.lines
        );
        assert!(
            report
                .lines
                .contains(&"| fan-out 1→100, 64 B (deliveries/s) | 3.00 M | not run |".to_owned()),
            "{:?}",
            report.lines
        );
        assert_eq!(report.json["table"][0]["relay"], 3_000_000.0);
        assert!(report.json["table"][0]["redis"].is_null());
    }
}
