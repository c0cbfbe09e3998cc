//! How many connections each IP address holds, for
//! `--max-connections-per-ip`.
//!
//! The counts sit in one map under one lock, taken only when a connection
//! is admitted and when it ends, never per frame. The map holds only
//! addresses with live connections, so it is bounded by the connection
//! limit, and it gives its memory back once a crowd has left.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// The per-address counts; with a limit of 0 nothing is counted at all.
#[derive(Debug, Default)]
pub(crate) struct PerAddress {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection counted against its address; the count drops when this is
/// released or dropped, whichever comes first, so it drops however the
/// connection ends.
#[derive(Debug)]
pub(crate) struct Slot {
    owner: Option<(Arc<PerAddress>, IpAddr)>,
}

/// The address already holds the most connections allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooMany {
    pub(crate) limit: usize,
}

impl PerAddress {
    pub(crate) fn new(limit: usize) -> PerAddress {
        PerAddress {
            limit,
            counts: Mutex::default(),
        }
    }

    /// Counts one more connection from `ip`, unless it already holds the
    /// limit.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, TooMany> {
        if self.limit == 0 {
            return Ok(Slot { owner: None });
        }
        let mut counts = self.counts.lock();
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limit {
            return Err(TooMany { limit: self.limit });
        }
        *count += 1;
        Ok(Slot {
            owner: Some((Arc::clone(self), ip)),
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
                if counts.capacity() > 64 && counts.len() < counts.capacity() / 4 {
                    counts.shrink_to_fit();
                }
            }
        }
    }

    /// Live connections from `ip`.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.counts.lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Slot {
    /// Stops counting this connection (once).
    pub(crate) fn release(&mut self) {
        if let Some((counts, ip)) = self.owner.take() {
            counts.release(ip);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_per_address_and_a_release_makes_room() {
        let counts = Arc::new(PerAddress::new(2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let mut first = counts.admit(a).unwrap();
        let _second = counts.admit(a).unwrap();
        assert_eq!(counts.admit(a).unwrap_err(), TooMany { limit: 2 });
        let _other = counts.admit(b).unwrap();
        first.release();
        first.release();
        assert_eq!(counts.count(a), 1, "released once only");
        let _third = counts.admit(a).unwrap();
    }

    #[test]
    fn a_dropped_slot_is_released_and_empty_addresses_leave_the_map() {
        let counts = Arc::new(PerAddress::new(1));
        let a: IpAddr = [10, 0, 0, 1].into();
        drop(counts.admit(a).unwrap());
        assert_eq!(counts.count(a), 0);
        assert!(counts.counts.lock().is_empty());
    }

    #[test]
    fn no_limit_counts_nothing() {
        let counts = Arc::new(PerAddress::new(0));
        let a: IpAddr = [10, 0, 0, 1].into();
        let slots: Vec<_> = (0..100).map(|_| counts.admit(a).unwrap()).collect();
        assert!(counts.counts.lock().is_empty());
        drop(slots);
    }
}
