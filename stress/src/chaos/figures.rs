//! What a chaos run reports: the per-session outcomes (how sessions ended,
//! how stopped readers and malformed frames fared), and the one table of
//! figures that both the human lines and the JSON line are written from.
//! Other tools parse the JSON keys, so they stay as they are.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use protocol::Stats;
use serde_json::json;

use super::audit::Audit;
use super::model::{Counters, End, Session};
use crate::report::{Figure, Figures};

/// How the sessions ended and what they saw, beyond the delivery audit.
#[derive(Debug, Default)]
pub(super) struct Outcomes {
    roles: HashMap<&'static str, u64>,
    ends: HashMap<&'static str, u64>,
    published: u64,
    member_events: u64,
    pub(super) malformed_sent: u64,
    malformed_answered: u64,
    malformed_by_code: HashMap<String, u64>,
    stopped_caught_up: u64,
    stopped_cut_off: u64,
    stopped_neither: u64,
    /// Every check on a session that failed, in session order.
    pub(super) failures: Vec<String>,
}

impl Outcomes {
    pub(super) fn of(sessions: &[Arc<Session>]) -> Outcomes {
        let mut o = Outcomes::default();
        for session in sessions {
            let state = session.lock();
            *o.roles.entry(session.role.name()).or_default() += 1;
            let end = state.end.unwrap_or(End::Unexpected);
            *o.ends.entry(end.name()).or_default() += 1;
            o.member_events += state.member_events;
            o.published += state.published.len() as u64;
            o.failures.extend(
                state
                    .problems
                    .iter()
                    .chain(&state.corrupt)
                    .chain(&state.unexpected_errors)
                    .cloned(),
            );
            if state.end.is_none() {
                o.failures.push(format!(
                    "client {} ({}) never finished its session",
                    session.client, session.id
                ));
            }
            for bad in &state.bad {
                o.malformed_sent += 1;
                *o.malformed_by_code
                    .entry(bad.expected.to_string())
                    .or_default() += 1;
                match &bad.problem {
                    None => o.malformed_answered += 1,
                    Some(problem) => o.failures.push(format!(
                        "malformed frame ({}) from client {}: {problem}",
                        bad.kind, session.client
                    )),
                }
            }
            if state.stopped_reading {
                if state.slow_consumer {
                    o.stopped_cut_off += 1;
                } else if end.complete() {
                    o.stopped_caught_up += 1;
                } else if !matches!(
                    end,
                    End::Fin | End::Rst | End::MidFrameFin | End::MidFrameRst
                ) {
                    o.stopped_neither += 1;
                    o.failures.push(format!(
                        "{} client {} ({}) stopped reading and neither caught up nor got SLOW_CONSUMER (ended {})",
                        session.role.name(),
                        session.client,
                        session.id,
                        end.name()
                    ));
                }
            }
        }
        o
    }
}

/// Everything a chaos report shows, gathered once the run is over.
pub(super) struct Summary<'a> {
    /// The target as a person reads it, and as `target` in the JSON.
    pub(super) target: String,
    pub(super) mode: &'static str,
    pub(super) clients: usize,
    pub(super) rooms: usize,
    pub(super) duration_s: f64,
    pub(super) seed: u64,
    pub(super) counters: &'a Counters,
    pub(super) outcomes: &'a Outcomes,
    pub(super) audit: &'a Audit,
    pub(super) still_serves: bool,
    /// The server's counters after everyone left.
    pub(super) after: &'a Stats,
    /// SLOW_CONSUMER cut-offs the server counted during the run.
    pub(super) slow_consumers: u64,
    /// The whole run, audit and checks included.
    pub(super) seconds: f64,
}

/// The figures of a chaos run.
pub(super) fn figures(s: &Summary<'_>) -> Figures {
    let c = s.counters;
    let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let (o, a) = (s.outcomes, s.audit);
    let mut f = Figures::new();
    f.line(
        format!("chaos against {}: ", s.target),
        [
            Figure::new("clients", "clients", s.clients),
            Figure::new("rooms", "rooms", s.rooms),
            Figure::new("duration_s", "seconds of chaos", s.duration_s),
            Figure::new("seconds", "in all", crate::report::round(s.seconds, 3)),
            Figure::new("seed", "seed", s.seed),
        ],
    );
    f.line(
        "  ",
        [
            Figure::new("sessions", "sessions", count(&c.sessions)),
            Figure::new("session_ends", "by end", json!(o.ends)),
            Figure::new("roles", "by role", json!(o.roles)),
            Figure::new("complete_sessions", "complete", a.complete_sessions),
            Figure::new("cut_sessions", "cut short", a.cut_sessions),
        ],
    );
    f.line(
        "  ",
        [
            Figure::new("joins", "joins", count(&c.joins)),
            Figure::new("leaves", "leaves", count(&c.leaves)),
            Figure::new("heartbeats", "heartbeats", count(&c.heartbeats)),
            Figure::new("published", "published", o.published),
            Figure::new("deliveries", "deliveries", a.deliveries),
            Figure::new("membership_events", "membership events", o.member_events),
        ],
    );
    f.line(
        "  ",
        [
            Figure::new("guaranteed", "guaranteed deliveries", a.guaranteed),
            Figure::new("guaranteed_received", "received", a.guaranteed_received),
            Figure::new("lost", "lost", a.lost),
            Figure::new("gaps_before_cut", "gaps before a cut", a.gaps),
            Figure::new("lost_reported", "lost but told by a gap notice", a.reported),
            Figure::new("out_of_order", "out of order", a.out_of_order),
            Figure::new("duplicates", "duplicated", a.duplicates),
            Figure::new("leaked", "leaked outside membership", a.leaked),
            Figure::new("never_sent", "never sent", a.phantom),
            Figure::new("timing_ambiguous", "timing-ambiguous", a.in_between),
        ],
    );
    f.line(
        "  readers that stopped: ",
        [
            Figure::new(
                "stopped_readers_caught_up",
                "caught up",
                o.stopped_caught_up,
            ),
            Figure::new(
                "stopped_readers_cut_off",
                "cut off with SLOW_CONSUMER",
                o.stopped_cut_off,
            ),
            Figure::new("stopped_readers_neither", "neither", o.stopped_neither),
            Figure::new("pauses", "pauses", count(&c.pauses)),
        ],
    );
    f.line(
        "  ",
        [
            Figure::new("malformed_sent", "malformed frames", o.malformed_sent),
            Figure::new("malformed_answered", "answered right", o.malformed_answered),
            Figure::new("malformed_by_code", "by code", json!(o.malformed_by_code)),
            Figure::new("hello_skipped", "HELLO skipped", count(&c.no_hello)),
        ],
    );
    f.line(
        "  ",
        [Figure::new(
            "still_serves",
            "server still serves a new client",
            s.still_serves,
        )],
    );
    f.line(
        "  after everyone left: ",
        [
            Figure::new("final_rooms", "rooms", s.after.rooms),
            Figure::new(
                "final_connections",
                "connections (the asking one included)",
                s.after.connections,
            ),
            Figure::new(
                "server_slow_consumers",
                "server counted slow consumers",
                s.slow_consumers,
            ),
            Figure::new("server_errors", "server errors", json!(s.after.errors)),
        ],
    );
    f.json_only("target", s.mode);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;

    /// The keys of the JSON line before figures had one source; tools parse
    /// them.
    const KEYS: [&str; 41] = [
        "target",
        "clients",
        "rooms",
        "duration_s",
        "seed",
        "sessions",
        "roles",
        "session_ends",
        "joins",
        "leaves",
        "heartbeats",
        "published",
        "deliveries",
        "membership_events",
        "guaranteed",
        "guaranteed_received",
        "lost",
        "gaps_before_cut",
        "lost_reported",
        "out_of_order",
        "duplicates",
        "leaked",
        "never_sent",
        "timing_ambiguous",
        "complete_sessions",
        "cut_sessions",
        "pauses",
        "stopped_readers_caught_up",
        "stopped_readers_cut_off",
        "stopped_readers_neither",
        "malformed_sent",
        "malformed_answered",
        "malformed_by_code",
        "hello_skipped",
        "still_serves",
        "final_rooms",
        "final_connections",
        "server_slow_consumers",
        "server_errors",
        "seconds",
        "scenario",
    ];

    #[test]
    fn json_keys_are_the_ones_tools_parse() {
        let counters = Counters::default();
        counters.joins.fetch_add(4, Ordering::Relaxed);
        let mut outcomes = Outcomes::default();
        outcomes.ends.insert("graceful", 2);
        let audit = Audit {
            lost: 3,
            ..Audit::default()
        };
        let after = Stats::default();
        let summary = Summary {
            target: "somewhere".into(),
            mode: "in_process",
            clients: 12,
            rooms: 3,
            duration_s: 1.5,
            seed: 9,
            counters: &counters,
            outcomes: &outcomes,
            audit: &audit,
            still_serves: true,
            after: &after,
            slow_consumers: 0,
            seconds: 2.0,
        };
        let mut report = Report::new("chaos");
        figures(&summary).write_to(&mut report);
        let mut keys: Vec<&str> = report.json.keys().map(String::as_str).collect();
        let mut want = KEYS.to_vec();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(report.json["joins"], 4);
        assert_eq!(report.json["lost"], 3);
        assert_eq!(report.json["session_ends"], json!({"graceful": 2}));
        assert!(report.lines.iter().any(|l| l.contains("joins 4,")));
        assert!(report.lines.iter().any(|l| l.contains(", lost 3,")));
        assert!(report.lines[0].starts_with("chaos against somewhere: clients 12,"));
    }
}
