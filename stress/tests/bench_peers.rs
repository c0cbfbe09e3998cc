//! The bench against real Redis and NATS servers
//! (`apt-get install redis-server nats-server`). `.ci/run` installs both, and
//! under CI (`CI` set) a missing server fails the test; on a developer's
//! machine without them, each test says so and skips.

use std::time::Duration;

use stress::bench::{self, Which};
use stress::peer::System;
use stress::peer::servers::{PeerServer, binary_name, find_binary};

fn quick(system: System, server: &PeerServer) -> bench::Options {
    bench::Options {
        system,
        target: stress::TargetOptions {
            addr: Some(server.addr),
            server_pid: Some(server.pid()),
            config: None,
        },
        which: vec![
            Which::Fanout,
            Which::Latency,
            Which::Rooms,
            Which::Setup,
            Which::Connections,
        ],
        subscribers: vec![5],
        messages: 2_000,
        rate: 500.0,
        latency_subscribers: 3,
        latency_duration: Duration::from_millis(500),
        rooms_clients: 30,
        rooms_duration: Duration::from_secs(1),
        setup_connections: 100,
        connections: 100,
        quiet: true,
        ..bench::Options::default()
    }
}

fn run_against(system: System) {
    let name = binary_name(system);
    let Some(binary) = find_binary(name) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed; .ci/run installs it (apt-get install redis-server nats-server)"
        );
        eprintln!(
            "{name} is not installed; skipping the {} bench test",
            system.name()
        );
        return;
    };
    let server = PeerServer::start(system, &binary, 1000).expect("peer server starts");
    let report = bench::run(&quick(system, &server)).expect("scenario ran");
    server.stop();
    assert!(report.passed, "{}", report.render());
    let run = &report.json["systems"][system.key()]["runs"][0];
    assert_eq!(run["fanout"][0]["deliveries"], 10_000, "{run}");
    assert_eq!(run["latency"]["deliveries"], 750);
    assert!(run["latency"]["server_cpu_pct"].is_number());
    let rooms = &run["rooms"];
    assert_eq!(rooms["deliveries"], rooms["expected"]);
    assert_eq!(
        rooms["deliveries"].as_u64(),
        rooms["sent"].as_u64().map(|s| s * 9)
    );
    assert!(rooms["server_cpu_pct"].is_number());
    if system == System::Redis {
        // Redis sends a client's own messages back; they are not counted.
        assert_eq!(rooms["own_messages_back"], rooms["sent"]);
    }
    assert_eq!(run["setup"]["set_up"], 100);
    assert_eq!(run["connections"]["joined"], 100);
    assert!(run["connections"]["kib_per_connection"].is_number());
}

#[test]
fn redis_runs_every_workload() {
    run_against(System::Redis);
}

#[test]
fn nats_runs_every_workload() {
    run_against(System::Nats);
}
