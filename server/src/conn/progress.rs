//! Whether a client is still taking what it is sent: the rule that reaps a
//! client that stopped reading within the write timeout.
//!
//! A write into the server's own send buffer is not progress: the buffer
//! takes megabytes before a client that reads nothing is noticed, and a
//! write that waited the whole timeout and then got a few bytes in started
//! the clock again (a client reading nothing was dropped after 2–3 times the
//! timeout). Progress is what the client's side has acknowledged: the bytes
//! written to the socket less those the kernel still holds unacknowledged
//! (`SIOCOUTQ`). While bytes are owed (queued, or in the socket) and that
//! figure stands still for the write timeout, the client is stuck.
//!
//! Whoever writes (the writer thread, blocked or idle) looks at it every
//! [`check_interval`], so a stuck client is reaped between 1 and 1.1 times
//! the write timeout after it stopped. The clock is passed in, so the tests
//! below run on a fake one.

use std::time::{Duration, Instant};

/// How often a connection that owes bytes is looked at: a tenth of the
/// write timeout, between 10 ms and 1 s.
pub(crate) fn check_interval(write_timeout: Duration) -> Duration {
    (write_timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// What a look found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nothing is owed: nothing queued, nothing unacknowledged.
    Idle,
    /// Bytes are owed, and the client took some within the write timeout.
    Owed,
    /// Bytes are owed, and the client took none for the write timeout.
    Stuck,
}

/// One connection's delivery progress.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    timeout: Duration,
    /// Bytes the client had acknowledged at the last sign of progress.
    delivered: u64,
    /// When progress was last seen while bytes were owed; `None` while
    /// nothing is owed.
    since: Option<Instant>,
}

impl Delivery {
    pub(crate) fn new(timeout: Duration) -> Delivery {
        Delivery {
            timeout,
            delivered: 0,
            since: None,
        }
    }

    /// The write timeout this judges by.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bytes are about to be written at `now`: the clock starts now if it
    /// was not running, without waiting for the first look.
    pub(crate) fn owing(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// Looks at the connection at `now`: `written` bytes handed to the
    /// socket in all, `unsent` of them not yet acknowledged (`None`: the
    /// transport cannot say, so only the queue counts), and whether
    /// anything waits to be written.
    pub(crate) fn look(
        &mut self,
        written: u64,
        unsent: Option<usize>,
        queued: bool,
        now: Instant,
    ) -> Seen {
        let unsent = unsent.unwrap_or(0) as u64;
        let delivered = written.saturating_sub(unsent);
        if !queued && unsent == 0 {
            self.delivered = delivered;
            self.since = None;
            return Seen::Idle;
        }
        match self.since {
            Some(since) if delivered <= self.delivered => {
                if now.saturating_duration_since(since) >= self.timeout {
                    Seen::Stuck
                } else {
                    Seen::Owed
                }
            }
            _ => {
                self.delivered = delivered;
                self.since = Some(now);
                Seen::Owed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_client_that_stops_acknowledging_is_stuck_one_timeout_later() {
        let t0 = Instant::now();
        let mut delivery = Delivery::new(TIMEOUT);
        delivery.owing(t0);
        // 1 MB written, 200 KB acknowledged, then nothing more.
        assert_eq!(
            delivery.look(1_000_000, Some(800_000), true, t0 + secs(0.5)),
            Seen::Owed
        );
        // Writing more into the socket's buffer is not progress.
        assert_eq!(
            delivery.look(3_000_000, Some(2_800_000), true, t0 + secs(5.0)),
            Seen::Owed
        );
        assert_eq!(
            delivery.look(3_000_000, Some(2_800_000), false, t0 + secs(5.5)),
            Seen::Stuck
        );
    }

    #[test]
    fn a_slow_but_steady_reader_is_never_stuck() {
        let t0 = Instant::now();
        let mut delivery = Delivery::new(TIMEOUT);
        delivery.owing(t0);
        let mut unsent = 4_000_000usize;
        for step in 1..1000 {
            // Takes 1 KB every 4 s: slower than anyone would like, but
            // moving.
            unsent -= 1000;
            let now = t0 + secs(4.0 * f64::from(step));
            assert_eq!(
                delivery.look(4_000_000, Some(unsent), true, now),
                Seen::Owed,
                "step {step}"
            );
        }
    }

    #[test]
    fn nothing_owed_stops_the_clock() {
        let t0 = Instant::now();
        let mut delivery = Delivery::new(TIMEOUT);
        assert_eq!(delivery.look(100, Some(0), false, t0), Seen::Idle);
        // Much later, new bytes: the clock starts from when they were owed.
        let later = t0 + secs(60.0);
        delivery.owing(later);
        assert_eq!(delivery.look(200, Some(100), false, later), Seen::Owed);
        assert_eq!(
            delivery.look(200, Some(100), false, later + secs(4.9)),
            Seen::Owed
        );
        assert_eq!(
            delivery.look(200, Some(100), false, later + secs(5.0)),
            Seen::Stuck
        );
    }

    #[test]
    fn without_the_kernels_count_only_the_queue_counts() {
        let t0 = Instant::now();
        let mut delivery = Delivery::new(TIMEOUT);
        assert_eq!(delivery.look(100, None, false, t0), Seen::Idle);
        delivery.owing(t0);
        assert_eq!(delivery.look(100, None, true, t0 + secs(6.0)), Seen::Stuck);
    }

    #[test]
    fn the_interval_is_a_tenth_of_the_timeout_within_bounds() {
        assert_eq!(check_interval(secs(30.0)), secs(1.0));
        assert_eq!(check_interval(secs(2.0)), secs(0.2));
        assert_eq!(check_interval(secs(0.01)), secs(0.01));
    }
}
