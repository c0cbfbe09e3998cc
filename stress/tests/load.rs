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
