//! One client's life: open a session, act at random until the deadline,
//! reconnect whenever a session ends, and leave cleanly at the end.
//!
//! Each turn rolls one [`Action`] from a table of weights, so the mix of
//! actions can be read (and tested) in one place rather than in the order of
//! a chain of comparisons.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::sleep;
use std::time::{Duration, Instant};

use protocol::MessageType;
use serde_json::json;

use super::connection::{Broken, Live, finish_broken};
use super::model::{End, Role, World, bump, content, room_name};
use super::probes::{no_hello, send_malformed};
use crate::rng::Rng;
use crate::wire::json_frame;

/// A sequence number no real message has: marks the partial frame written
/// before a mid-frame disconnect, which must never be delivered.
const PARTIAL_SEQ: u64 = 999_999_999;

/// A turn's roll is drawn from `0..ROLL`, so weights are thousandths of the
/// turns.
const ROLL: u64 = 1000;

/// A session joins at most this many rooms at once, so that leaving and
/// publishing keep their share of the turns.
const MOST_ROOMS: usize = 3;

/// What an actor does with one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Join,
    Leave,
    /// A burst of messages to one joined room.
    Publish,
    Heartbeat,
    /// Gracefully, with FIN, with RST, or in the middle of a frame.
    Disconnect,
    /// Stop reading for a while (pausers only).
    Pause,
    /// A malformed frame, or a connection without HELLO (malformed only).
    Misbehave,
    Idle,
}

/// What the choice of an action depends on, besides the roll.
#[derive(Debug, Clone, Copy)]
struct Situation {
    role: Role,
    rooms_joined: usize,
    /// How many rooms this session may be in at once.
    most_rooms: usize,
    /// Whether this client has misbehaved yet.
    sent_bad: bool,
}

impl Action {
    /// Every action but [`Action::Idle`] with its weight this turn, in the
    /// order their bands are laid over the roll; idling takes the rest.
    fn weights(s: Situation) -> [(Action, u64); 7] {
        // At its room limit a session leaves instead of joining, so a full
        // session changes rooms as often as one with room to spare.
        let (join, leave) = if s.rooms_joined < s.most_rooms {
            (120, 80)
        } else {
            (0, 200)
        };
        let pause = if s.role == Role::Pauser { 30 } else { 0 };
        // A malformed client misbehaves in the share a pauser pauses in too;
        // until its first bad frame it also does instead of idling, so every
        // malformed client sends at least one.
        let misbehave = match s.role {
            Role::Malformed if !s.sent_bad => 130,
            Role::Malformed => 70,
            _ => 0,
        };
        [
            (Action::Join, join),
            (Action::Leave, leave),
            (Action::Publish, 600),
            (Action::Heartbeat, 50),
            (Action::Disconnect, 20),
            (Action::Pause, pause),
            (Action::Misbehave, misbehave),
        ]
    }

    /// The action that `roll` (in `0..ROLL`) lands on. A session in no room
    /// joins one whatever the roll: every other action needs a room or would
    /// waste the session.
    fn choose(roll: u64, s: Situation) -> Action {
        if s.rooms_joined == 0 {
            return Action::Join;
        }
        let mut band_end = 0;
        for (action, weight) in Action::weights(s) {
            band_end += weight;
            if roll < band_end {
                return action;
            }
        }
        Action::Idle
    }
}

/// A client's state across its sessions.
struct Actor {
    world: Arc<World>,
    rng: Rng,
    /// Heartbeats sent, numbering their payloads.
    beats: u64,
    sent_bad: bool,
}

/// One client's life: sessions, one after another, until the deadline.
pub(super) fn actor(world: Arc<World>, client: usize, seed: u64) {
    let role = Role::of(client);
    let mut rng = Rng::new(seed ^ (client as u64).wrapping_mul(0x9E37_79B9));
    let stuck_at = match role {
        Role::Stuck => {
            let d = world.deadline.saturating_duration_since(Instant::now());
            Some(Instant::now() + d / 4 + d.mul_f64(rng.below(1000) as f64 / 4000.0))
        }
        _ => None,
    };
    let mut me = Actor {
        world,
        rng,
        beats: 0,
        sent_bad: false,
    };
    let mut live: Option<Live> = None;
    let mut stuck = false;
    while Instant::now() < me.world.deadline {
        let l = match live.take() {
            Some(l) => l,
            None => match Live::open(&me.world, client, role) {
                Ok(l) => l,
                Err(_) => {
                    sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        if stuck {
            sleep(Duration::from_millis(20));
            live = Some(l);
            continue;
        }
        if let Some(at) = stuck_at
            && Instant::now() >= at
        {
            l.session.paused.store(true, Ordering::Release);
            l.session.lock().stopped_reading = true;
            bump(&me.world.counters.pauses);
            stuck = true;
            live = Some(l);
            continue;
        }
        let roll = me.rng.below(ROLL);
        let action = Action::choose(
            roll,
            Situation {
                role,
                rooms_joined: l.joined.len(),
                most_rooms: me.world.rooms.min(MOST_ROOMS),
                sent_bad: me.sent_bad,
            },
        );
        live = me.act(action, l);
        if live.is_some() {
            sleep(Duration::from_millis(me.rng.range(2, 25)));
        }
    }
    if let Some(l) = live {
        me.last_session(l);
    }
}

impl Actor {
    /// Does `action` on session `l`; returns the session if it is still
    /// open. A session that broke is finished here.
    fn act(&mut self, action: Action, mut l: Live) -> Option<Live> {
        let result = match action {
            Action::Join => self.join(&mut l),
            Action::Leave => {
                let room = l.joined[self.rng.below(l.joined.len() as u64) as usize];
                bump(&self.world.counters.leaves);
                l.room_request(MessageType::LeaveRoom, room)
            }
            Action::Publish => {
                let room = l.joined[self.rng.below(l.joined.len() as u64) as usize];
                let count = if self.rng.chance(5) {
                    self.rng.range(20, 60)
                } else {
                    self.rng.range(1, 10)
                };
                l.burst(&self.world, room, count)
            }
            Action::Heartbeat => {
                self.beats += 1;
                bump(&self.world.counters.heartbeats);
                l.heartbeat(self.beats)
            }
            Action::Disconnect => {
                self.disconnect(l);
                return None;
            }
            Action::Pause => {
                self.pause(&l);
                Ok(())
            }
            Action::Misbehave => return self.misbehave(l),
            Action::Idle => Ok(()),
        };
        still_open(l, result)
    }

    fn join(&mut self, l: &mut Live) -> Result<(), Broken> {
        let free: Vec<u16> = (0..self.world.rooms as u16)
            .filter(|r| !l.joined.contains(r))
            .collect();
        let room = free[self.rng.below(free.len() as u64) as usize];
        bump(&self.world.counters.joins);
        l.room_request(MessageType::JoinRoom, room)
    }

    /// Ends the session one way or another; the next turn reconnects.
    fn disconnect(&mut self, mut l: Live) {
        let how = self.rng.below(5);
        match how {
            0 => {
                self.beats += 1;
                if let Err((l, broken)) = l.graceful(self.beats) {
                    finish_broken(l, broken);
                }
            }
            1 => l.close(End::Fin, false),
            2 => l.close(End::Rst, true),
            _ => {
                let frame = json_frame(
                    MessageType::Message,
                    &json!({"room": room_name(0), "content": serde_json::from_str::<serde_json::Value>(&content(&l.session.id, PARTIAL_SEQ)).unwrap_or_default()}),
                );
                let cut = self.rng.range(1, frame.len() as u64 - 1) as usize;
                let _ = l.stream.write_all(&frame[..cut]);
                if how == 3 {
                    l.close(End::MidFrameFin, false);
                } else {
                    l.close(End::MidFrameRst, true);
                }
            }
        }
    }

    /// Stops reading for a while, so the server's queue for this session
    /// fills: it must either catch up or cut the session off.
    fn pause(&mut self, l: &Live) {
        let pause = Duration::from_millis(self.rng.range(300, 2000));
        bump(&self.world.counters.pauses);
        l.session.paused.store(true, Ordering::Release);
        sleep(pause);
        l.session.paused.store(false, Ordering::Release);
        let mut state = l.session.lock();
        state.paused_for += pause;
        state.stopped_reading = true;
    }

    fn misbehave(&mut self, mut l: Live) -> Option<Live> {
        self.sent_bad = true;
        let result = if self.rng.chance(15) {
            if let Some(problem) = no_hello(&self.world) {
                l.problem(format!("no HELLO: {problem}"));
            }
            Ok(())
        } else {
            let result = send_malformed(&mut l, &mut self.rng, &self.world);
            if let Err(Broken::Closed) = result
                && l.session
                    .lock()
                    .bad
                    .last()
                    .is_some_and(|b| b.expected.is_fatal())
            {
                l.closed_by_server(End::Fatal);
                return None;
            }
            result
        };
        still_open(l, result)
    }

    /// The end of the run: resume reading, leave every room, and stay open
    /// for the audit, which needs the reader to keep recording.
    fn last_session(mut self, mut l: Live) {
        l.session.paused.store(false, Ordering::Release);
        let mut outcome = Ok(());
        for room in l.joined.clone() {
            outcome = l.room_request(MessageType::LeaveRoom, room);
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            self.beats += 1;
            outcome = l.heartbeat(self.beats);
        }
        match outcome {
            Ok(()) => {
                let mut state = l.session.lock();
                state.end = Some(End::Final);
                state.ended_at = Some(Instant::now());
                drop(state);
                self.world
                    .finals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(l);
            }
            Err(broken) => finish_broken(l, broken),
        }
    }
}

/// The session if `result` left it open; one that broke is finished here.
fn still_open(l: Live, result: Result<(), Broken>) -> Option<Live> {
    match result {
        Ok(()) => Some(l),
        Err(broken) => {
            finish_broken(l, broken);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `if roll < ...` chain the weights replaced, kept to prove they
    /// pick the same action for every roll.
    fn ladder(roll: u64, s: Situation) -> Action {
        if s.rooms_joined == 0 || (s.rooms_joined < s.most_rooms && roll < 120) {
            Action::Join
        } else if roll < 200 {
            Action::Leave
        } else if roll < 800 {
            Action::Publish
        } else if roll < 850 {
            Action::Heartbeat
        } else if roll < 870 {
            Action::Disconnect
        } else if roll < 900 && s.role == Role::Pauser {
            Action::Pause
        } else if (roll < 940 || !s.sent_bad) && s.role == Role::Malformed {
            Action::Misbehave
        } else {
            Action::Idle
        }
    }

    #[test]
    fn weights_pick_what_the_old_ladder_picked() {
        for role in [Role::Healthy, Role::Pauser, Role::Stuck, Role::Malformed] {
            for most_rooms in 1..=MOST_ROOMS {
                for rooms_joined in 0..=most_rooms {
                    for sent_bad in [false, true] {
                        let s = Situation {
                            role,
                            rooms_joined,
                            most_rooms,
                            sent_bad,
                        };
                        for roll in 0..ROLL {
                            assert_eq!(Action::choose(roll, s), ladder(roll, s), "{roll} {s:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn weights_fit_in_a_roll() {
        for role in [Role::Healthy, Role::Pauser, Role::Stuck, Role::Malformed] {
            for sent_bad in [false, true] {
                let s = Situation {
                    role,
                    rooms_joined: 1,
                    most_rooms: 3,
                    sent_bad,
                };
                let total: u64 = Action::weights(s).iter().map(|(_, w)| w).sum();
                assert!(total <= ROLL, "{role:?}: {total}");
            }
        }
    }
}
