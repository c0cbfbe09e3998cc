//! One client's life: open a session, act at random until the deadline,
//! reconnect whenever a session ends, and leave cleanly at the end.

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

/// One client's life: sessions, one after another, until the deadline.
pub(super) fn actor(world: Arc<World>, client: usize, seed: u64) {
    let role = Role::of(client);
    let mut rng = Rng::new(seed ^ (client as u64).wrapping_mul(0x9E37_79B9));
    let mut beats = 0u64;
    let stuck_at = match role {
        Role::Stuck => {
            let d = world.deadline.saturating_duration_since(Instant::now());
            Some(Instant::now() + d / 4 + d.mul_f64(rng.below(1000) as f64 / 4000.0))
        }
        _ => None,
    };
    let mut live: Option<Live> = None;
    let mut stuck = false;
    let mut sent_bad = false;
    while Instant::now() < world.deadline {
        let mut l = match live.take() {
            Some(l) => l,
            None => match Live::open(&world, client, role) {
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
            bump(&world.counters.pauses);
            stuck = true;
            live = Some(l);
            continue;
        }
        let roll = rng.below(1000);
        let most_rooms = world.rooms.min(3);
        let result: std::result::Result<(), Broken> = if l.joined.is_empty()
            || (l.joined.len() < most_rooms && roll < 120)
        {
            let free: Vec<u16> = (0..world.rooms as u16)
                .filter(|r| !l.joined.contains(r))
                .collect();
            let room = free[rng.below(free.len() as u64) as usize];
            bump(&world.counters.joins);
            l.room_request(MessageType::JoinRoom, room)
        } else if roll < 200 {
            let room = l.joined[rng.below(l.joined.len() as u64) as usize];
            bump(&world.counters.leaves);
            l.room_request(MessageType::LeaveRoom, room)
        } else if roll < 800 {
            let room = l.joined[rng.below(l.joined.len() as u64) as usize];
            let count = if rng.chance(5) {
                rng.range(20, 60)
            } else {
                rng.range(1, 10)
            };
            l.burst(&world, room, count)
        } else if roll < 850 {
            beats += 1;
            bump(&world.counters.heartbeats);
            l.heartbeat(beats)
        } else if roll < 870 {
            // Disconnect, one way or another; the next turn reconnects.
            let how = rng.below(5);
            match how {
                0 => {
                    beats += 1;
                    if let Err((l, broken)) = l.graceful(beats) {
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
                    let cut = rng.range(1, frame.len() as u64 - 1) as usize;
                    let _ = l.stream.write_all(&frame[..cut]);
                    if how == 3 {
                        l.close(End::MidFrameFin, false);
                    } else {
                        l.close(End::MidFrameRst, true);
                    }
                }
            }
            continue;
        } else if roll < 900 && role == Role::Pauser {
            let pause = Duration::from_millis(rng.range(300, 2000));
            bump(&world.counters.pauses);
            l.session.paused.store(true, Ordering::Release);
            sleep(pause);
            l.session.paused.store(false, Ordering::Release);
            let mut state = l.session.lock();
            state.paused_for += pause;
            state.stopped_reading = true;
            Ok(())
        } else if (roll < 940 || !sent_bad) && role == Role::Malformed {
            sent_bad = true;
            if rng.chance(15) {
                if let Some(problem) = no_hello(&world) {
                    l.problem(format!("no HELLO: {problem}"));
                }
                Ok(())
            } else {
                let result = send_malformed(&mut l, &mut rng, &world);
                if let Err(Broken::Closed) = result
                    && l.session
                        .lock()
                        .bad
                        .last()
                        .is_some_and(|b| b.expected.is_fatal())
                {
                    l.closed_by_server(End::Fatal);
                    continue;
                }
                result
            }
        } else {
            Ok(())
        };
        match result {
            Ok(()) => {
                live = Some(l);
                sleep(Duration::from_millis(rng.range(2, 25)));
            }
            Err(broken) => finish_broken(l, broken),
        }
    }
    // The end: resume reading, leave every room, stay open for the audit.
    if let Some(mut l) = live {
        l.session.paused.store(false, Ordering::Release);
        let mut outcome = Ok(());
        for room in l.joined.clone() {
            outcome = l.room_request(MessageType::LeaveRoom, room);
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            beats += 1;
            outcome = l.heartbeat(beats);
        }
        match outcome {
            Ok(()) => {
                let mut state = l.session.lock();
                state.end = Some(End::Final);
                state.ended_at = Some(Instant::now());
                drop(state);
                // Kept open (the reader runs) until the audit is done.
                world
                    .finals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(l);
            }
            Err(broken) => finish_broken(l, broken),
        }
    }
}
