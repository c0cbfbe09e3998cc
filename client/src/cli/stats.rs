//! `relay stats`: the server's counters (from a HELLO answer).

use client::Stats;

use super::args::{Args, Format};
use super::connect::Dial;
use super::exit::{Exit, Failure};
use super::format::{self, Style};
use super::out::Out;

pub fn run(args: &Args) -> Result<Exit, Failure> {
    let out = Out::streams(Style::detect(), args.global.quiet);
    let dial = Dial::from_args(args)?;
    let login = dial.login()?;
    // The login's own answer has the counters already.
    let Some(stats) = login.hello.stats.clone() else {
        return Err(Failure::new(
            Exit::Failed,
            format!(
                "{} sends no counters (the original Node.js server does not)",
                dial.endpoint
            ),
        ));
    };
    login.client.close();
    match args.format() {
        Format::Json => {
            out.message(&serde_json::to_string(&stats).map_err(|e| {
                Failure::new(Exit::Failed, format!("cannot write the counters: {e}"))
            })?)
        }
        Format::Human | Format::Raw => {
            for line in lines(&stats) {
                out.message(&line);
            }
        }
    }
    Ok(Exit::Ok)
}

/// `name: value` lines, one a counter, names as in the protocol.
fn lines(stats: &Stats) -> Vec<String> {
    let mut lines = vec![
        format!("connections: {}", stats.connections),
        format!("connectionsTotal: {}", stats.connections_total),
        format!("rooms: {}", stats.rooms),
        format!("memberships: {}", stats.memberships),
        format!("framesIn: {}", stats.frames_in),
        format!("framesOut: {}", stats.frames_out),
        format!("bytesIn: {}", stats.bytes_in),
        format!("bytesOut: {}", stats.bytes_out),
        format!("slowConsumers: {}", stats.slow_consumers),
        format!("memoryUsed: {}", stats.memory_used),
        format!("memoryBudget: {}", stats.memory_budget),
    ];
    for (code, count) in &stats.errors {
        lines.push(format!("errors.{}: {count}", format::clean(code)));
    }
    lines
}
