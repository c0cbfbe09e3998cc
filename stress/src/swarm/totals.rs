//! What a swarm counts: [`Live`] while it runs, shared with the main
//! thread, and [`Totals`] per thread, merged when it finishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use crate::histogram::Histogram;

// Phase 0: connecting and joining, nothing published yet.
pub(super) const RUNNING: u8 = 1;
pub(super) const DRAINING: u8 = 2;
pub(super) const EXIT: u8 = 3;

/// Counters the threads update as they go, read by the main thread.
#[derive(Debug, Default)]
pub struct Live {
    pub(super) phase: AtomicU8,
    /// When publishing started (ns on the shared clock).
    pub(super) run_start_ns: AtomicU64,
    pub joined: AtomicUsize,
    pub failed: AtomicUsize,
    pub closed: AtomicUsize,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    /// Clients that reached `expect_per_client`.
    pub done: AtomicUsize,
    /// Per room: messages sent, and members as the JOIN acks said (largest).
    pub(super) room_sent: Vec<AtomicU64>,
    pub(super) room_members: Vec<AtomicU64>,
}

impl Live {
    pub(super) fn new(rooms: usize) -> Live {
        Live {
            room_sent: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            room_members: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            ..Live::default()
        }
    }

    /// Deliveries the messages sent so far call for (no echo): each goes to
    /// every other member of its room.
    pub fn expected(&self) -> u64 {
        self.room_sent
            .iter()
            .zip(&self.room_members)
            .map(|(sent, members)| {
                sent.load(Ordering::Acquire) * members.load(Ordering::Acquire).saturating_sub(1)
            })
            .sum()
    }
}

/// The figures of a finished swarm.
#[derive(Debug, Default)]
pub struct Totals {
    pub joined: usize,
    pub failed_to_join: usize,
    /// Connections the server closed (or reset) after they joined.
    pub closed_early: usize,
    pub sent: u64,
    pub delivered: u64,
    pub member_events: u64,
    /// Deliveries out of sequence per publisher (reordered, duplicated or
    /// skipped).
    pub out_of_order: u64,
    /// Messages that aren't ours.
    pub foreign: u64,
    /// A client's own messages coming back to it (Redis has no way to
    /// turn that off); not counted as deliveries.
    pub echoes: u64,
    pub errors: HashMap<String, u64>,
    pub latency: Histogram,
    /// Latest delivery (ns on the shared clock).
    pub last_delivery_ns: u64,
    /// Latest time a client reached `expect_per_client`.
    pub last_done_ns: u64,
    pub clients_done: usize,
    /// Sent messages per room.
    pub sent_per_room: Vec<u64>,
    /// Members per room as the JOIN acks reported (the largest seen).
    pub members_per_room: Vec<u64>,
    /// Members per room confirmed joined (the peers' acks don't count
    /// members).
    pub joined_per_room: Vec<u64>,
    /// Publishing turns skipped because the client's socket was backed up.
    pub backlogged: u64,
    pub bytes_read: u64,
}

impl Totals {
    pub(super) fn merge(&mut self, other: Totals) {
        self.joined += other.joined;
        self.failed_to_join += other.failed_to_join;
        self.closed_early += other.closed_early;
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.member_events += other.member_events;
        self.out_of_order += other.out_of_order;
        self.foreign += other.foreign;
        self.echoes += other.echoes;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latency.merge(&other.latency);
        self.last_delivery_ns = self.last_delivery_ns.max(other.last_delivery_ns);
        self.last_done_ns = self.last_done_ns.max(other.last_done_ns);
        self.clients_done += other.clients_done;
        merge_vec(&mut self.sent_per_room, &other.sent_per_room, |a, b| a + b);
        merge_vec(
            &mut self.members_per_room,
            &other.members_per_room,
            u64::max,
        );
        merge_vec(&mut self.joined_per_room, &other.joined_per_room, |a, b| {
            a + b
        });
        self.backlogged += other.backlogged;
        self.bytes_read += other.bytes_read;
    }

    /// Deliveries the room sizes and messages sent call for (no echo).
    pub fn expected_deliveries(&self) -> u64 {
        self.sent_per_room
            .iter()
            .enumerate()
            .map(|(room, sent)| {
                let members = self.members_per_room.get(room).copied().unwrap_or(0);
                let joined = self.joined_per_room.get(room).copied().unwrap_or(0);
                sent * members.max(joined).saturating_sub(1)
            })
            .sum()
    }
}

fn merge_vec(into: &mut Vec<u64>, from: &[u64], f: impl Fn(u64, u64) -> u64) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, &b) in into.iter_mut().zip(from) {
        *a = f(*a, b);
    }
}
