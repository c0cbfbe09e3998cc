//! The server-wide memory budget: one count of the bytes that clients make
//! the server hold, whatever the connection.
//!
//! Three things are counted, each where it changes, as deltas into one
//! atomic (no lock on the hot path):
//!
//! - bytes queued for a client and not yet written (`conn::outbound`
//!   charges a push and credits each write, and what is left when the
//!   queue goes);
//! - partially received frames: a reader's buffer while it grows toward a
//!   declared frame length (`conn::reader`);
//! - room state, at a fixed estimate per room and per membership (`rooms`,
//!   [`ROOM_BYTES`] and [`MEMBERSHIP_BYTES`]);
//! - a queued batch's WebSocket framing, made once and shared by the
//!   WebSocket members it goes to (`conn::ws::framed`), charged once while
//!   the batch lives.
//!
//! Crossing the budget sets the server shedding: new connections are
//! refused, a queue that already holds bytes takes no more, and the
//! housekeeping thread, woken at the moment of crossing, cuts the heaviest
//! connections with OVERLOADED (see `shed`). Shedding ends once the count
//! falls to the low-water mark, [`LOW_WATER`] of the budget, so the server
//! does not flap at the line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// What one room costs beyond its name, as counted against the budget: the
/// map entry, the room's record and its member list's first allocation.
pub(crate) const ROOM_BYTES: usize = 192;
/// What one membership costs, as counted: the member list's slot, the
/// member's own list of rooms (a hash set entry and its name), spread over
/// the allocator's rounding. Measured at 321–489 bytes per membership for
/// 4,000 connections in 1,000 rooms each, all costs included; the upper
/// end, rounded up.
pub(crate) const MEMBERSHIP_BYTES: usize = 512;
/// Shedding ends once usage is at most this share of the budget (in
/// eighths: 7/8).
pub(crate) const LOW_WATER: (u64, u64) = (7, 8);

/// The count, on cache lines of its own: every push and write of every
/// connection touches it, and sharing a line would slow what sits beside it.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Used(AtomicU64);

/// The budget and what is charged against it now.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    /// Bytes charged now.
    used: Used,
    /// The budget, in bytes.
    limit: u64,
    /// Where shedding stops.
    low_water: u64,
    /// Set when usage crosses the budget, cleared when it falls to the
    /// low-water mark; new connections are refused while it is set.
    shedding: AtomicBool,
    /// Rung at the moment of crossing, so shedding starts at once rather
    /// than at the next housekeeping tick.
    alarm: Mutex<bool>,
    alarm_rung: Condvar,
}

impl MemoryBudget {
    pub(crate) fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            used: Used::default(),
            limit,
            low_water: limit / LOW_WATER.1 * LOW_WATER.0,
            shedding: AtomicBool::new(false),
            alarm: Mutex::new(false),
            alarm_rung: Condvar::new(),
        }
    }

    /// A budget nothing can exceed, for queues made outside a server.
    pub(crate) fn unlimited() -> MemoryBudget {
        MemoryBudget::new(u64::MAX)
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn low_water(&self) -> u64 {
        self.low_water
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> u64 {
        self.used.0.load(Relaxed)
    }

    /// Counts `bytes` more; crossing the budget starts shedding.
    pub(crate) fn charge(&self, bytes: usize) {
        let bytes = bytes as u64;
        let before = self.used.0.fetch_add(bytes, Relaxed);
        if before <= self.limit && before.saturating_add(bytes) > self.limit {
            self.start_shedding();
        }
    }

    /// Counts `bytes` fewer; falling to the low-water mark ends shedding.
    pub(crate) fn credit(&self, bytes: usize) {
        let bytes = bytes as u64;
        let before = self.used.0.fetch_sub(bytes, Relaxed);
        debug_assert!(before >= bytes, "credited {bytes} with {before} charged");
        if before.wrapping_sub(bytes) <= self.low_water && self.shedding.load(Relaxed) {
            self.shedding.store(false, Relaxed);
        }
    }

    /// Whether more is charged than the budget allows.
    pub(crate) fn is_over(&self) -> bool {
        self.used() > self.limit
    }

    /// Whether charging `bytes` more would go over the budget: what room
    /// state checks before it grows, since it is never shed.
    pub(crate) fn would_exceed(&self, bytes: usize) -> bool {
        self.used().saturating_add(bytes as u64) > self.limit
    }

    /// Whether the server is shedding: over the budget, and not yet back
    /// to the low-water mark.
    pub(crate) fn is_shedding(&self) -> bool {
        self.shedding.load(Relaxed)
    }

    /// Brings the shedding flag in line with usage: for the housekeeping
    /// tick, in case a charge and a credit crossed in a race.
    pub(crate) fn recheck(&self) -> bool {
        let used = self.used();
        if used > self.limit {
            self.shedding.store(true, Relaxed);
        } else if used <= self.low_water {
            self.shedding.store(false, Relaxed);
        }
        self.is_shedding()
    }

    fn start_shedding(&self) {
        self.shedding.store(true, Relaxed);
        *self.alarm.lock() = true;
        self.alarm_rung.notify_one();
    }

    /// Waits until usage crosses the budget or `timeout` passes; true if
    /// it crossed.
    pub(crate) fn wait_for_alarm(&self, timeout: Duration) -> bool {
        let mut rung = self.alarm.lock();
        if !*rung {
            let _ = self.alarm_rung.wait_for(&mut rung, timeout);
        }
        std::mem::take(&mut *rung)
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::unlimited()
    }
}

/// Bytes with an optional binary suffix: `512M`, `2G`, `64K`, `1T` or plain
/// bytes; for `--memory-budget`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((at, 'k' | 'K')) => (&text[..at], 10),
        Some((at, 'm' | 'M')) => (&text[..at], 20),
        Some((at, 'g' | 'G')) => (&text[..at], 30),
        Some((at, 't' | 'T')) => (&text[..at], 40),
        _ => (text, 0),
    };
    let number: u64 = digits.trim().parse().map_err(|_| {
        format!("{text:?} is not a size; write bytes, or a number with K, M, G or T (512M, 2G)")
    })?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_the_budget_sheds_until_the_low_water_mark() {
        let budget = MemoryBudget::new(800);
        budget.charge(800);
        assert!(!budget.is_shedding(), "at the budget is not over it");
        budget.charge(1);
        assert!(budget.is_shedding());
        assert!(budget.wait_for_alarm(Duration::ZERO), "crossing rings");
        assert!(!budget.wait_for_alarm(Duration::ZERO), "once");
        budget.credit(100);
        assert_eq!(budget.used(), 701);
        assert!(budget.is_shedding(), "701 is above the low-water mark");
        budget.credit(1);
        assert!(!budget.is_shedding(), "700 is not");
        budget.credit(700);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_housekeeping_recheck_follows_usage() {
        let budget = MemoryBudget::new(80);
        budget.charge(100);
        budget.shedding.store(false, Relaxed);
        assert!(budget.recheck());
        budget.credit(29);
        assert!(budget.recheck(), "71 is between the marks");
        budget.credit(1);
        assert!(!budget.recheck());
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").unwrap_err().contains("512M"));
        assert!(parse_bytes("99999999999T").is_err());
    }
}
