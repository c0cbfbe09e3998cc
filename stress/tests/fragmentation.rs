//! fragmentation in its full form (it takes about a second): every case must
//! be answered byte-exact by the in-process server.

use std::process::Command;

use stress::{Target, fragmentation};

#[test]
fn every_fragmentation_case_passes() {
    let report = fragmentation::run(&fragmentation::Options::default()).expect("scenario ran");
    assert!(report.passed, "{}", report.render());
    assert_eq!(report.json["passed_cases"], report.json["total_cases"]);
}

/// The binary against a server given with --addr: exit code 0, a summary
/// line, and the JSON line last.
#[test]
fn the_binary_reports_on_a_server_given_by_address() {
    let target = Target::in_process(server::Config::default()).expect("server starts");
    let output = Command::new(env!("CARGO_BIN_EXE_relay-stress"))
        .args([
            "--addr",
            &target.addr().to_string(),
            "fragmentation",
            "--seed",
            "7",
        ])
        .output()
        .expect("stress runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("11/11 passed"), "{stdout}");
    let last = stdout.lines().last().expect("output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(json["passed"], true);
    assert_eq!(json["target"], "remote");
    assert_eq!(json["seed"], 7);
    target.stop();
}

/// A verdict that fails exits non-zero: a "server" that closes every
/// connection at once fails every case.
#[test]
fn a_failing_verdict_exits_non_zero() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let output = Command::new(env!("CARGO_BIN_EXE_relay-stress"))
        .args(["--addr", &addr.to_string(), "fragmentation"])
        .output()
        .expect("stress runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("0/11 passed"), "{stdout}");
}
