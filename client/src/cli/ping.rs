//! `relay ping [-c N]`: round-trip times to the server, like `nats rtt`: a
//! HEARTBEAT and its echo, N times in a row.

use std::time::Duration;

use client::ClientError;

use super::args::{Args, Format};
use super::connect::Dial;
use super::exit::{Exit, Failure};
use super::format::{self, Style};
use super::out::Out;

pub fn run(args: &Args, count: u32) -> Result<Exit, Failure> {
    let out = Out::streams(Style::detect(), args.global.quiet);
    let dial = Dial::from_args(args)?;
    let login = dial.login()?;
    let client = login.client;
    let mut rtts: Vec<Duration> = Vec::new();
    for seq in 1..=count {
        let rtt = match client.heartbeat_and_wait(dial.timeout) {
            Ok(rtt) => rtt,
            Err(ClientError::Disconnected(reason)) => {
                return Err(Failure::new(
                    Exit::Lost,
                    format!("connection lost: {reason}"),
                ));
            }
            Err(ClientError::Timeout { after, .. }) => {
                return Err(Failure::new(
                    Exit::Failed,
                    format!(
                        "{}: server not answering: no answer to HEARTBEAT {seq} within {}",
                        dial.endpoint,
                        format::rtt(after)
                    ),
                ));
            }
            // The original Node.js server (SPEC.md 8): found out at once
            // from its HELLO answers, not by waiting for the timeout.
            Err(ClientError::NotAvailable { .. }) => {
                return Err(Failure::new(
                    Exit::Failed,
                    format!(
                        "{} does not answer HEARTBEAT, so there is no round-trip time to measure; it answers like the original Node.js Relay server (SPEC.md 8)",
                        dial.endpoint
                    ),
                ));
            }
            Err(error) => {
                return Err(Failure::new(
                    Exit::Failed,
                    format!("{}: {error}", dial.endpoint),
                ));
            }
        };
        // Microseconds are as fine as a round trip can be read.
        let ms = (rtt.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        match args.format() {
            Format::Json => out.message(&serde_json::json!({"seq": seq, "rttMs": ms}).to_string()),
            Format::Raw => out.message(&format!("{ms:.3}")),
            Format::Human => out.message(&format!(
                "{}: round trip {seq}: {}",
                dial.endpoint,
                format::rtt(rtt)
            )),
        }
        rtts.push(rtt);
    }
    client.close();
    if let (Some(min), Some(max)) = (rtts.iter().min(), rtts.iter().max()) {
        let total: Duration = rtts.iter().sum();
        let average = total / rtts.len().max(1) as u32;
        out.status(&format!(
            "{} round trip{}: min {}, average {}, max {}",
            rtts.len(),
            if rtts.len() == 1 { "" } else { "s" },
            format::rtt(*min),
            format::rtt(average),
            format::rtt(*max)
        ));
    }
    Ok(Exit::Ok)
}
