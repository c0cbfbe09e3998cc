//! The audit of every delivery, on recorded data only: which messages each
//! session was guaranteed, which it must never have had, and whether what it
//! got is in order, unduplicated and really sent. The rules are in the
//! module comment of [`super`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::model::{End, Period, Session, SessionState, room_name};

/// How long a message may take from one node of a cluster to another
/// (through Redis) in the audit's rules: a message echoed to its
/// publisher this long before a member on another node left is
/// guaranteed to it, and one echoed this long before a member's JOIN was
/// sent must never reach it. Anything closer may go either way. On one
/// node the echo itself says the server handled the message, so there
/// the margin is 0.
const CROSS_NODE_TRANSIT: Duration = Duration::from_secs(2);

/// The margin for a message from `publisher`'s node to `member`'s.
fn transit(sessions: &[Arc<Session>], publisher: u32, member_node: usize) -> Duration {
    match sessions.get(publisher as usize) {
        Some(p) if p.node != member_node => CROSS_NODE_TRANSIT,
        _ => Duration::ZERO,
    }
}

/// Figures of the audit.
#[derive(Debug, Default)]
pub(super) struct Audit {
    pub(super) deliveries: u64,
    pub(super) guaranteed: u64,
    pub(super) guaranteed_received: u64,
    pub(super) lost: u64,
    pub(super) gaps: u64,
    /// Guaranteed messages missing, but covered by the gap notices the
    /// member got in that room (a cluster's loss between nodes, reported).
    pub(super) reported: u64,
    pub(super) out_of_order: u64,
    pub(super) duplicates: u64,
    pub(super) leaked: u64,
    pub(super) phantom: u64,
    pub(super) in_between: u64,
    pub(super) complete_sessions: u64,
    pub(super) cut_sessions: u64,
    pub(super) failures: Vec<String>,
}

impl Audit {
    pub(super) fn fail(&mut self, what: String) {
        if self.failures.len() < 200 {
            self.failures.push(what);
        }
    }
}

/// Every message sent: when, and when its publisher got its echo.
struct SentIndex {
    /// (publisher, room, seq) -> (sent_at, echo_at).
    by_key: HashMap<(u32, u16, u64), (Instant, Option<Instant>)>,
    /// Per room: (publisher, seq, sent_at, echo_at) of echoed messages.
    by_room: HashMap<u16, Vec<(u32, u64, Instant, Instant)>>,
}

impl SentIndex {
    fn build(sessions: &[Arc<Session>]) -> SentIndex {
        let mut by_key = HashMap::new();
        for s in sessions {
            let state = s.lock();
            for p in &state.published {
                by_key.insert((s.index, p.room, p.seq), (p.sent_at, None));
            }
            for r in state.received.iter().filter(|r| r.from == s.index) {
                if let Some(entry) = by_key.get_mut(&(s.index, r.room, r.seq)) {
                    entry.1.get_or_insert(r.at);
                }
            }
        }
        let mut by_room: HashMap<u16, Vec<(u32, u64, Instant, Instant)>> = HashMap::new();
        for (&(publisher, room, seq), &(sent_at, echo_at)) in &by_key {
            if let Some(echo_at) = echo_at {
                by_room
                    .entry(room)
                    .or_default()
                    .push((publisher, seq, sent_at, echo_at));
            }
        }
        SentIndex { by_key, by_room }
    }

    /// What `member` (on node `node`) must have, per (room, publisher),
    /// ascending.
    fn guaranteed_for(
        &self,
        member: &SessionState,
        node: usize,
        sessions: &[Arc<Session>],
    ) -> HashMap<(u16, u32), Vec<u64>> {
        let mut out: HashMap<(u16, u32), Vec<u64>> = HashMap::new();
        let rooms: HashSet<u16> = member.periods.iter().map(|p| p.room).collect();
        for room in rooms {
            let periods: Vec<(Instant, Option<Instant>)> = member
                .periods
                .iter()
                .filter(|p| p.room == room)
                .filter_map(|p| Some((p.join_ack?, p.leave_sent.or(member.ended_at))))
                .collect();
            if periods.is_empty() {
                continue;
            }
            for &(publisher, seq, sent_at, echo_at) in self.by_room.get(&room).into_iter().flatten()
            {
                let arrived = echo_at + transit(sessions, publisher, node);
                let inside = periods
                    .iter()
                    .any(|&(ack, left)| ack < sent_at && left.is_none_or(|left| arrived < left));
                if inside {
                    out.entry((room, publisher)).or_default().push(seq);
                }
            }
        }
        for seqs in out.values_mut() {
            seqs.sort_unstable();
        }
        out
    }
}

/// Whether member state `member` may not receive (room, seq) sent at
/// `sent_at` and echoed at `echo_at` (`arrived` on the member's node, at
/// the latest): the server handled it while the member was certainly
/// outside the room.
fn forbidden(
    member: &SessionState,
    room: u16,
    sent_at: Instant,
    echo_at: Instant,
    transit: Duration,
) -> bool {
    let echo_at = echo_at + transit;
    let periods: Vec<&Period> = member.periods.iter().filter(|p| p.room == room).collect();
    // Before the first JOIN was sent.
    if periods.first().is_none_or(|p| echo_at < p.join_sent) {
        return true;
    }
    periods.iter().enumerate().any(|(i, period)| {
        let Some(left) = period.leave_ack else {
            return false;
        };
        sent_at > left
            && periods
                .get(i + 1)
                .is_none_or(|next| echo_at < next.join_sent)
    })
}

pub(super) fn audit(sessions: &[Arc<Session>]) -> Audit {
    let sent = SentIndex::build(sessions);
    let mut audit = Audit::default();
    for member in sessions {
        let state = member.lock();
        let Some(end) = state.end else { continue };
        let complete = end.complete();
        if complete {
            audit.complete_sessions += 1;
        } else {
            audit.cut_sessions += 1;
        }
        let who = format!(
            "{} client {} ({}, ended {})",
            member.role.name(),
            member.client,
            member.id,
            end.name()
        );
        // Received, per (room, publisher), in arrival order.
        let mut got: HashMap<(u16, u32), Vec<u64>> = HashMap::new();
        for r in &state.received {
            audit.deliveries += 1;
            got.entry((r.room, r.from)).or_default().push(r.seq);
            match sent.by_key.get(&(r.from, r.room, r.seq)) {
                None => {
                    audit.phantom += 1;
                    audit.fail(format!(
                        "{who} got {} #{} in {} that was never completely sent",
                        sessions[r.from as usize].id,
                        r.seq,
                        room_name(r.room)
                    ));
                }
                Some(&(sent_at, Some(echo_at)))
                    if forbidden(
                        &state,
                        r.room,
                        sent_at,
                        echo_at,
                        transit(sessions, r.from, member.node),
                    ) =>
                {
                    audit.leaked += 1;
                    audit.fail(format!(
                        "{who} got {} #{} in {} while not a member",
                        sessions[r.from as usize].id,
                        r.seq,
                        room_name(r.room)
                    ));
                }
                _ => {}
            }
        }
        for (&(room, from), seqs) in &got {
            for pair in seqs.windows(2) {
                if pair[1] == pair[0] {
                    audit.duplicates += 1;
                    audit.fail(format!(
                        "{who} got {} #{} in {} twice",
                        sessions[from as usize].id,
                        pair[0],
                        room_name(room)
                    ));
                } else if pair[1] < pair[0] {
                    audit.out_of_order += 1;
                    audit.fail(format!(
                        "{who} got {} #{} after #{} in {}",
                        sessions[from as usize].id,
                        pair[1],
                        pair[0],
                        room_name(room)
                    ));
                }
            }
        }
        let must = sent.guaranteed_for(&state, member.node, sessions);
        let mut in_window = 0;
        // What the member's gap notices said is gone, per room.
        let mut told = state.gap_notices.clone();
        for (key, seqs) in &must {
            let received = got.get(key);
            let have: HashSet<u64> = received
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default();
            let last = received.and_then(|v| v.iter().max().copied());
            audit.guaranteed += seqs.len() as u64;
            let mut missing = 0;
            let mut first_missing = None;
            for &seq in seqs {
                if have.contains(&seq) {
                    audit.guaranteed_received += 1;
                    in_window += 1;
                    continue;
                }
                if complete || last.is_some_and(|last| seq <= last) {
                    missing += 1;
                    first_missing.get_or_insert(seq);
                }
            }
            let excused = told.get_mut(&key.0).map_or(0, |left| {
                let excused = missing.min(*left);
                *left -= excused;
                excused
            });
            audit.reported += excused;
            missing -= excused;
            if missing > 0 {
                if complete {
                    audit.lost += missing;
                } else {
                    audit.gaps += missing;
                }
                audit.fail(format!(
                    "{who} is missing {missing} of {} guaranteed messages from {} in {} (first #{})",
                    seqs.len(),
                    sessions[key.1 as usize].id,
                    room_name(key.0),
                    first_missing.unwrap_or(0)
                ));
            }
        }
        audit.in_between += (state.received.len() as u64).saturating_sub(in_window);
    }
    audit
}

/// How many guaranteed messages complete sessions still lack.
pub(super) fn outstanding(sessions: &[Arc<Session>]) -> u64 {
    let sent = SentIndex::build(sessions);
    let mut missing = 0;
    for member in sessions {
        let state = member.lock();
        if !state.end.is_some_and(End::complete) {
            continue;
        }
        let have: HashSet<(u16, u32, u64)> = state
            .received
            .iter()
            .map(|r| (r.room, r.from, r.seq))
            .collect();
        let mut told = state.gap_notices.clone();
        for ((room, from), seqs) in sent.guaranteed_for(&state, member.node, sessions) {
            let m = seqs
                .iter()
                .filter(|&&seq| !have.contains(&(room, from, seq)))
                .count() as u64;
            let excused = told.get_mut(&room).map_or(0, |left| {
                let excused = m.min(*left);
                *left -= excused;
                excused
            });
            missing += m - excused;
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::model::{Published, Received, Role};
    use super::*;

    /// A run recorded by hand, on a clock of milliseconds after `t0`.
    struct Recording {
        t0: Instant,
        sessions: Vec<Arc<Session>>,
    }

    impl Recording {
        fn new() -> Recording {
            Recording {
                t0: Instant::now(),
                sessions: Vec::new(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// A session that ended `end` at `ended_ms`; returns its index.
        fn session(&mut self, end: End, ended_ms: u64) -> u32 {
            let index = self.sessions.len() as u32;
            let session =
                Session::new(index, index as usize, 0, Role::Healthy, format!("c{index}"));
            {
                let mut state = session.lock();
                state.end = Some(end);
                state.ended_at = Some(self.at(ended_ms));
            }
            self.sessions.push(Arc::new(session));
            index
        }

        /// A membership: JOIN sent and acked, and LEAVE sent and acked when
        /// given (a close leaves without an ack).
        fn member(&self, s: u32, room: u16, join: (u64, u64), leave: (Option<u64>, Option<u64>)) {
            let period = Period {
                room,
                join_sent: self.at(join.0),
                join_ack: Some(self.at(join.1)),
                leave_sent: leave.0.map(|ms| self.at(ms)),
                leave_ack: leave.1.map(|ms| self.at(ms)),
            };
            self.sessions[s as usize].lock().periods.push(period);
        }

        fn publish(&self, s: u32, room: u16, seqs: &[u64], sent_ms: u64) {
            let sent_at = self.at(sent_ms);
            let mut state = self.sessions[s as usize].lock();
            for &seq in seqs {
                state.published.push(Published { room, seq, sent_at });
            }
        }

        fn receive(&self, s: u32, room: u16, from: u32, seqs: &[u64], at_ms: u64) {
            let at = self.at(at_ms);
            let mut state = self.sessions[s as usize].lock();
            for &seq in seqs {
                state.received.push(Received {
                    room,
                    from,
                    seq,
                    at,
                });
            }
        }

        fn audit(&self) -> Audit {
            audit(&self.sessions)
        }
    }

    /// A publisher and a member in room 0 from 1 ms to 100 ms; the
    /// publisher sends #0..#2 at 10 ms and gets its echo at 11 ms, and the
    /// member gets `got` at 12 ms. The member ended `end` at 102 ms.
    fn run(got: &[u64], end: End) -> Recording {
        let mut r = Recording::new();
        let publisher = r.session(End::Graceful, 102);
        let member = r.session(end, 102);
        r.member(publisher, 0, (0, 1), (Some(100), Some(101)));
        let leave_ack = (end == End::Graceful).then_some(101);
        r.member(member, 0, (0, 1), (Some(100), leave_ack));
        r.publish(publisher, 0, &[0, 1, 2], 10);
        r.receive(publisher, 0, publisher, &[0, 1, 2], 11);
        r.receive(member, 0, publisher, got, 12);
        r
    }

    #[test]
    fn clean_data_passes() {
        let r = run(&[0, 1, 2], End::Graceful);
        let a = r.audit();
        assert!(a.failures.is_empty(), "{:?}", a.failures);
        assert_eq!(a.deliveries, 6);
        // Both are guaranteed all three: the publisher its echoes too.
        assert_eq!((a.guaranteed, a.guaranteed_received), (6, 6));
        assert_eq!((a.complete_sessions, a.cut_sessions), (2, 0));
        assert_eq!(
            (
                a.lost,
                a.gaps,
                a.duplicates,
                a.out_of_order,
                a.leaked,
                a.phantom
            ),
            (0, 0, 0, 0, 0, 0)
        );
        assert_eq!(outstanding(&r.sessions), 0);
    }

    #[test]
    fn a_lost_message_fails_a_complete_session() {
        let r = run(&[0, 2], End::Graceful);
        let a = r.audit();
        assert_eq!(a.lost, 1);
        assert_eq!(a.gaps, 0);
        assert_eq!(a.failures.len(), 1, "{:?}", a.failures);
        assert!(
            a.failures[0]
                .contains("missing 1 of 3 guaranteed messages from c0 in chaos-0 (first #1)"),
            "{}",
            a.failures[0]
        );
        assert_eq!(outstanding(&r.sessions), 1);

        // After its last delivery too: it read everything to the end.
        let a = run(&[0, 1], End::Graceful).audit();
        assert_eq!(a.lost, 1);
        assert_eq!(a.failures.len(), 1, "{:?}", a.failures);
    }

    #[test]
    fn a_cut_session_owes_only_what_precedes_its_last_delivery() {
        let a = run(&[0, 2], End::Rst).audit();
        assert_eq!((a.lost, a.gaps, a.cut_sessions), (0, 1, 1));
        assert_eq!(a.failures.len(), 1, "{:?}", a.failures);

        let a = run(&[0], End::Rst).audit();
        assert!(a.failures.is_empty(), "{:?}", a.failures);
        assert_eq!((a.guaranteed, a.guaranteed_received), (6, 4));
    }

    #[test]
    fn a_duplicate_fails() {
        let a = run(&[0, 1, 1, 2], End::Graceful).audit();
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.failures.len(), 1, "{:?}", a.failures);
        assert!(a.failures[0].contains("got c0 #1 in chaos-0 twice"));
    }

    #[test]
    fn an_out_of_order_delivery_fails() {
        let a = run(&[0, 2, 1], End::Graceful).audit();
        assert_eq!(a.out_of_order, 1);
        assert_eq!(a.lost, 0);
        assert_eq!(a.failures.len(), 1, "{:?}", a.failures);
        assert!(a.failures[0].contains("got c0 #1 after #2 in chaos-0"));
    }

    #[test]
    fn a_delivery_after_leaving_is_forbidden() {
        let mut r = Recording::new();
        let publisher = r.session(End::Graceful, 102);
        let member = r.session(End::Graceful, 102);
        r.member(publisher, 0, (0, 1), (Some(100), Some(101)));
        // The member's LEAVE was acked at 6 ms, before #0 was even sent.
        r.member(member, 0, (0, 1), (Some(5), Some(6)));
        r.publish(publisher, 0, &[0], 10);
        r.receive(publisher, 0, publisher, &[0], 11);
        r.receive(member, 0, publisher, &[0], 12);
        let a = r.audit();
        assert_eq!(a.leaked, 1);
        assert_eq!(a.failures.len(), 1, "{:?}", a.failures);
        assert!(a.failures[0].contains("got c0 #0 in chaos-0 while not a member"));
    }

    #[test]
    fn a_delivery_while_rejoining_may_go_either_way() {
        let mut r = Recording::new();
        let publisher = r.session(End::Graceful, 102);
        let member = r.session(End::Graceful, 102);
        r.member(publisher, 0, (0, 1), (Some(100), Some(101)));
        r.member(member, 0, (0, 1), (Some(5), Some(6)));
        // JOIN sent again before #0's echo: the server may have handled it
        // first, so #0 is neither forbidden nor guaranteed.
        r.member(member, 0, (10, 13), (Some(100), Some(101)));
        r.publish(publisher, 0, &[0], 10);
        r.receive(publisher, 0, publisher, &[0], 11);
        r.receive(member, 0, publisher, &[0], 12);
        let a = r.audit();
        assert!(a.failures.is_empty(), "{:?}", a.failures);
        assert_eq!(a.in_between, 1);
    }

    #[test]
    fn a_message_never_sent_fails() {
        let a = run(&[0, 1, 2, 7], End::Graceful).audit();
        assert_eq!(a.phantom, 1);
        assert_eq!(a.failures.len(), 1, "{:?}", a.failures);
        assert!(a.failures[0].contains("got c0 #7 in chaos-0 that was never completely sent"));
    }
}
