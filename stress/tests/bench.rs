//! bench in a quick form: small fan-outs, a short latency run, a few rooms,
//! a few hundred connections set up, idle, and leaving, on the in-process
//! server. The figures are not judged here (no timing thresholds), only
//! that every run completed correctly and reported its figures.

use std::time::Duration;

use serde_json::Value;
use stress::bench::{self, Which};

/// Options small enough for a loaded two-core machine.
fn quick() -> bench::Options {
    bench::Options {
        subscribers: vec![10, 3],
        messages: 5_000,
        rate: 500.0,
        latency_subscribers: 3,
        latency_duration: Duration::from_secs(1),
        rooms_clients: 40,
        rooms_duration: Duration::from_secs(1),
        setup_connections: 300,
        connections: 200,
        memory_connections: 60,
        memory_rooms: 20,
        in_process: true,
        quiet: true,
        ..bench::Options::default()
    }
}

fn first_run<'a>(json: &'a serde_json::Map<String, Value>, system: &str) -> &'a Value {
    &json["systems"][system]["runs"][0]
}

#[test]
fn quick_bench_completes_and_reports_every_figure() {
    let report = bench::run(&quick()).expect("scenario ran");
    assert!(report.passed, "{}", report.render());
    let run = first_run(&report.json, "relay");
    let fanout = run["fanout"].as_array().expect("fan-out runs");
    assert_eq!(fanout.len(), 2);
    for f in fanout {
        assert_eq!(f["all_delivered_in_order"], true, "{f}");
        assert!(f["deliveries_per_s"].as_f64() > Some(0.0));
    }
    assert_eq!(fanout[0]["deliveries"], 50_000);
    assert_eq!(run["latency"]["all_delivered_in_order"], true);
    assert_eq!(run["latency"]["deliveries"], 1_500);
    assert!(run["latency"]["p99_us"].is_number());
    // In-process: the server's CPU can't be told from the clients'.
    assert!(run["latency"]["server_cpu_pct"].is_null());
    assert!(run["latency"]["server_cpu_not_measured"].is_string());
    // Rooms of 10: every message reaches the 9 others.
    let rooms = &run["rooms"];
    assert_eq!(rooms["joined"], 40);
    assert_eq!(rooms["deliveries"], rooms["expected"]);
    assert_eq!(
        rooms["deliveries"].as_u64(),
        rooms["sent"].as_u64().map(|s| s * 9)
    );
    assert!(rooms["sent"].as_u64() > Some(0));
    assert!(rooms["p50_us"].is_number() && rooms["p99_us"].is_number());
    assert_eq!(run["setup"]["set_up"], 300);
    assert_eq!(run["setup"]["failed"], 0);
    assert!(run["setup"]["connections_per_s"].as_f64() > Some(0.0));
    assert_eq!(run["connections"]["joined"], 200);
    assert!(run["connections"]["kib_per_connection"].is_number());
    let memory = &run["memory"];
    assert_eq!(memory["joined"], 60);
    for key in ["rss_before_kib", "rss_peak_kib", "rss_after_kib"] {
        assert!(memory[key].as_u64() > Some(0), "{key}: {memory}");
    }
    assert!(memory["returned_pct"].is_number() || memory["returned_pct"].is_null());
    // Joining rooms of 10 tells the members already there.
    assert!(memory["member_events"].as_u64() > Some(0));
    // The table has a row per figure, and the bars say held or missed.
    let table = report.json["table"].as_array().expect("table");
    assert_eq!(table.len(), 9, "{table:?}");
    assert!(table[0]["relay"].as_f64() > Some(0.0));
    let text = report.render();
    assert!(text.contains("| workload | Relay |"), "{text}");
    assert!(
        text.contains("  bar fan-out 1→10 ≥ 4,000,000 deliveries/s"),
        "{text}"
    );
    assert!(
        text.contains("bench: runs complete and correct; ") && text.contains(" bars checked: "),
        "{text}"
    );
}

#[test]
fn a_server_in_its_own_process_has_its_cpu_measured() {
    // The in-process server, reached by address and measured by this
    // process's pid: what --addr with --server-pid does for a real one.
    let server = stress::Target::in_process(server::Config::default()).expect("server");
    let options = bench::Options {
        which: vec![Which::Rooms, Which::Latency],
        target: stress::TargetOptions {
            addr: Some(server.addr()),
            server_pid: Some(std::process::id()),
            config: None,
        },
        ..quick()
    };
    let report = bench::run(&options).expect("scenario ran");
    server.stop();
    assert!(report.passed, "{}", report.render());
    let run = first_run(&report.json, "relay");
    for workload in ["rooms", "latency"] {
        let cpu = run[workload]["server_cpu_pct"].as_f64();
        assert!(cpu.is_some_and(|c| c >= 0.0), "{workload}: {run}");
    }
    assert!(report.json["table"][0]["relay"].is_number());
}

#[test]
fn over_websocket_every_delivery_arrives_in_order_as_over_tcp() {
    // Messages big enough for 16-bit WebSocket lengths, and many per
    // publisher write: the swarm finds each payload in its reads, and the
    // server's reads of the publisher are topped up across headers.
    let options = bench::Options {
        which: vec![Which::Fanout, Which::Latency],
        ws: true,
        payload: 300,
        ..quick()
    };
    let report = bench::run(&options).expect("scenario ran");
    assert!(report.passed, "{}", report.render());
    let run = first_run(&report.json, "relay");
    let fanout = run["fanout"].as_array().expect("fan-out runs");
    let over_ws: Vec<_> = fanout.iter().filter(|f| f["websocket"] == true).collect();
    assert_eq!(over_ws.len(), 2, "{fanout:?}");
    for f in over_ws {
        assert_eq!(f["all_delivered_in_order"], true, "{f}");
        assert_eq!(f["deliveries"], f["expected"], "{f}");
        assert_eq!(f["out_of_order"], 0, "{f}");
    }
    let text = report.render();
    assert!(text.contains("over WebSocket"), "{text}");
}

#[test]
fn compare_says_which_peers_are_missing_and_runs_the_rest() {
    let options = bench::Options {
        which: vec![Which::Setup],
        compare: true,
        setup_connections: 50,
        redis_bin: Some("/nonexistent/redis-server".into()),
        nats_bin: Some("/nonexistent/nats-server".into()),
        ..quick()
    };
    let report = bench::run(&options).expect("scenario ran");
    assert!(report.passed, "{}", report.render());
    let text = report.render();
    assert!(
        text.contains("Redis: not run: /nonexistent/redis-server is not a file"),
        "{text}"
    );
    assert!(
        text.contains("| workload | Relay | Redis | NATS |"),
        "{text}"
    );
    assert!(text.contains("| not run | not run |"), "{text}");
    assert_eq!(
        report.json["systems"]["relay"]["runs"][0]["setup"]["set_up"],
        50
    );
}

#[test]
fn server_args_need_a_child_server_and_say_so() {
    let options = bench::Options {
        which: vec![Which::Setup],
        setup_connections: 20,
        server_args: vec!["--http-addr=127.0.0.1:0".into()],
        ..quick()
    };
    let report = bench::run(&options).expect("scenario ran");
    let text = report.render();
    assert!(
        text.contains("Relay: not run: --server-arg") && text.contains("--in-process"),
        "{text}"
    );
}

#[test]
fn server_args_reach_the_child_server() {
    let Some(binary) = stress::target::sibling_server_binary() else {
        eprintln!("skipped: relay-server is not built next to this test");
        return;
    };
    let options = |args: &[&str]| bench::Options {
        which: vec![Which::Setup],
        setup_connections: 20,
        in_process: false,
        server_bin: Some(binary.clone()),
        server_args: args.iter().map(|&arg| arg.to_owned()).collect(),
        ..quick()
    };
    let report = bench::run(&options(&["--http-addr=127.0.0.1:0"])).expect("scenario ran");
    assert!(report.passed, "{}", report.render());
    assert_eq!(first_run(&report.json, "relay")["setup"]["set_up"], 20);
    // A flag the server refuses is the server's error, in the report.
    let report = bench::run(&options(&["--no-such-flag"])).expect("scenario ran");
    let text = report.render();
    assert!(!report.passed, "{text}");
    assert!(text.contains("--no-such-flag"), "{text}");
}
