//! load in a quick form: 40 clients in rooms of 8 for two seconds.

use std::time::Duration;

use stress::load;

#[test]
fn quick_load_delivers_everything_expected() {
    let options = load::Options {
        clients: 40,
        room_size: 8,
        rate: 20.0,
        duration: Duration::from_secs(2),
        quiet: true,
        ..load::Options::default()
    };
    let report = load::run(&options).expect("scenario ran");
    assert!(report.passed, "{}", report.render());
    let json = &report.json;
    assert_eq!(json["connected"], 40);
    assert!(json["sent"].as_u64() > Some(0));
    assert_eq!(json["delivered"], json["expected"]);
    assert_eq!(
        json["delivered"].as_u64(),
        json["sent"].as_u64().map(|s| s * 7)
    );
    assert!(json["latency"]["p50_us"].is_number());
    assert!(json["server_memory"]["peak"]["rss_kib"].is_number());
}

/// The same across two nodes sharing rooms through a `redis-server` of
/// the run's own, each room's clients spread over both: every expected
/// delivery arrives, in order. Under CI a missing redis-server fails the
/// test (`.ci/run` installs it); elsewhere the test says so and skips.
#[test]
fn quick_load_across_two_nodes_delivers_everything_expected() {
    if stress::peer::servers::find_binary("redis-server").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed, and CI needs it"
        );
        eprintln!("redis-server is not installed; skipping the cluster load test");
        return;
    }
    let options = load::Options {
        clients: 40,
        room_size: 8,
        rate: 20.0,
        duration: Duration::from_secs(2),
        quiet: true,
        cluster_nodes: 2,
        ..load::Options::default()
    };
    let report = load::run(&options).expect("scenario ran");
    assert!(report.passed, "{}", report.render());
    let json = &report.json;
    assert_eq!(json["connected"], 40);
    assert_eq!(json["out_of_order"], 0);
    assert_eq!(
        json["delivered"].as_u64(),
        json["sent"].as_u64().map(|s| s * 7)
    );
}
