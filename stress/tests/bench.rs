//! bench in a quick form: small fan-outs, a short latency run and a few
//! hundred idle connections on the in-process server. The figures are not
//! judged here (no timing thresholds), only that every run completed
//! correctly and reported its figures.

use std::time::Duration;

use stress::bench::{self, Which};

#[test]
fn quick_bench_completes_and_reports_every_figure() {
    let options = bench::Options {
        which: vec![Which::Fanout, Which::Latency, Which::Connections],
        subscribers: vec![10, 3],
        messages: 5_000,
        rate: 500.0,
        latency_subscribers: 3,
        latency_duration: Duration::from_secs(1),
        connections: 200,
        in_process_connections: true,
        quiet: true,
        ..bench::Options::default()
    };
    let report = bench::run(&options).expect("scenario ran");
    assert!(report.passed, "{}", report.render());
    let json = &report.json;
    let fanout = json["fanout"].as_array().expect("fan-out runs");
    assert_eq!(fanout.len(), 2);
    for run in fanout {
        assert_eq!(run["all_delivered_in_order"], true, "{run}");
        assert!(run["deliveries_per_s"].as_f64() > Some(0.0));
    }
    assert_eq!(fanout[0]["deliveries"], 50_000);
    assert_eq!(json["latency"]["all_delivered_in_order"], true);
    assert_eq!(json["latency"]["deliveries"], 1_500);
    assert!(json["latency"]["p99_us"].is_number());
    assert_eq!(json["connections"]["joined"], 200);
    assert!(json["connections"]["kib_per_connection"].is_number());
}
