//! The slow-consumer rule: a member that stops reading costs a publisher one
//! stall at most, receives everything queued for it then SLOW_CONSUMER, and
//! never makes anyone else lose a message or the server grow without bound.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use protocol::MessageType;
use serde_json::json;
use testkit::{Raw, json_frame, raw_frame, start_server_with};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_stalled_member_is_cut_off_after_its_queue_and_the_rest_get_everything() {
    const FRAMES: u64 = 200_000;
    let server = start_server_with(server::Config {
        stall_timeout: Duration::from_millis(500),
        ..Default::default()
    });
    let addr = server.local_addr();
    let (mut stalled, stalled_hello) = Raw::hello(addr, json!({}));
    let stalled_id = stalled_hello.connection_id;
    stalled.join("firehose");
    let (mut healthy, _) = Raw::hello(addr, json!({}));
    healthy.join("firehose");
    let (mut publisher, _) = Raw::hello(addr, json!({}));
    publisher.join("firehose");
    let rss_before = rss_kib();

    let reader = std::thread::spawn(move || {
        let mut next = 0u64;
        let mut cut_announced = false;
        // The cut member leaves the room as soon as it is cut, without
        // waiting for it to send or read anything.
        while next < FRAMES || !cut_announced {
            let value = healthy.expect(MessageType::Message).json();
            if value.get("type").is_some() {
                cut_announced |=
                    value["type"] == "userLeft" && value["connectionId"] == stalled_id.as_str();
                continue;
            }
            assert_eq!(value["content"]["seq"], next, "healthy member out of order");
            next += 1;
        }
        next
    });

    let pad = "p".repeat(1000);
    let mut batch = Vec::new();
    for seq in 0..FRAMES {
        batch.extend(json_frame(
            MessageType::Message,
            &json!({"room": "firehose", "content": {"seq": seq, "pad": pad}}),
        ));
        if batch.len() >= 64 * 1024 {
            publisher.send_raw(&batch);
            batch.clear();
        }
    }
    publisher.send_raw(&batch);
    assert_eq!(reader.join().unwrap(), FRAMES);
    let growth_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 64,
        "server memory grew by {growth_mib} MiB for 200 MB relayed"
    );

    let counters = server.counters();
    assert_eq!(
        counters.slow_consumers(),
        1,
        "exactly one member is cut, once"
    );

    // The stalled member wakes up, sends something (which must not make the
    // server reset the connection and destroy what is in flight), and reads:
    // a gap-free prefix, then the verdict, then the close.
    stalled.send_raw(&raw_frame(
        MessageType::Heartbeat,
        protocol::Flags::NONE,
        b"",
    ));
    let mut next = 0u64;
    loop {
        if next.is_multiple_of(256) {
            // Read slowly, so much is still in flight when the server is done.
            std::thread::sleep(Duration::from_millis(5));
        }
        let frame = stalled.recv();
        if frame.kind == MessageType::Error {
            let error = frame.expect_error();
            assert_eq!(error.code.as_str(), "SLOW_CONSUMER");
            assert!(error.fatal);
            break;
        }
        let value = frame.json();
        if value.get("type").is_some() {
            continue;
        }
        assert_eq!(value["content"]["seq"], next, "stalled member saw a gap");
        next += 1;
    }
    stalled.expect_close();
    assert!(
        next > 0 && next < FRAMES,
        "got {next} of {FRAMES} before the cut"
    );
    assert_eq!(counters.errors_sent(protocol::ErrorCode::SlowConsumer), 1);
}
