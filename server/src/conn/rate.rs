//! A connection's rate limits: token buckets for frames per second and
//! bytes per second, and the rule that turns a flood into a fatal error.
//!
//! Every complete frame a client sends costs one frame token and its size
//! on the wire in byte tokens (HELLO and HEARTBEAT included: a heartbeat
//! flood is still a flood). A frame that does not fit either bucket is
//! refused and takes nothing, so a client that slows down gets its full
//! rate back; the reader then stops reading for the time the refused frame
//! needed ([`Verdict::Refuse`]), which pushes back on the client through
//! TCP instead of answering each frame of a flood with an ERROR.
//!
//! **Sustained abuse** is a client that is refused again within
//! [`ABUSE_GAP`] of each pause ending, for [`ABUSE_AFTER`]: it keeps
//! sending past its limit whatever it is told. A client at ten times its
//! rate meets that at its first retry and every one after; a client that
//! waits `retryAfterMs` and then keeps to its rate never does.
//!
//! No clock is read here: the reader passes the time of its read, so the
//! hot path is a few float operations per frame, with no system call, lock
//! or allocation, and the tests below run on a fake clock.

use std::time::{Duration, Instant};

use crate::config::RateLimits;

/// How long a streak of refusals must last to be sustained abuse.
pub(crate) const ABUSE_AFTER: Duration = Duration::from_secs(5);
/// A refusal this soon after the previous pause ended continues the streak;
/// a client quiet for longer starts afresh.
pub(crate) const ABUSE_GAP: Duration = Duration::from_secs(1);

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limits: serve it.
    Pass,
    /// Over a limit: refuse it (RATE_LIMITED with this `retryAfterMs`),
    /// then read nothing for that long.
    Refuse(Duration),
    /// Over a limit, and has been at every retry for [`ABUSE_AFTER`]:
    /// fatal RATE_LIMITED.
    Abuse,
}

/// One token bucket: `rate` tokens a second, holding at most `capacity`.
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Bucket {
    /// A full bucket, or none for a limit of 0 (off).
    fn new(rate: u64, capacity: u64, now: Instant) -> Option<Bucket> {
        (rate > 0).then(|| Bucket {
            rate: rate as f64,
            capacity: capacity.max(1) as f64,
            tokens: capacity.max(1) as f64,
            at: now,
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        if elapsed > 0.0 {
            self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
            self.at = now;
        }
    }

    /// How long until `cost` fits; zero when it fits now.
    fn wait_for(&self, cost: f64) -> Duration {
        if self.tokens >= cost {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(((cost - self.tokens) / self.rate).min(1e9))
        }
    }
}

/// A connection's two buckets and its refusal streak.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    frames: Option<Bucket>,
    bytes: Option<Bucket>,
    /// When the current streak of refusals began.
    streak_since: Option<Instant>,
    /// When the reader last resumed after a refusal's pause.
    resumed_at: Option<Instant>,
}

impl Limiter {
    /// Full buckets for `limits` (validated: the byte bucket holds a
    /// largest frame).
    pub(crate) fn new(limits: &RateLimits, now: Instant) -> Limiter {
        Limiter {
            frames: Bucket::new(limits.frames_per_sec, limits.frame_capacity(), now),
            bytes: Bucket::new(limits.bytes_per_sec, limits.byte_capacity(), now),
            streak_since: None,
            resumed_at: None,
        }
    }

    /// Judges one frame of `wire_len` bytes (length prefix included),
    /// received at `now`; a passed frame is paid for.
    pub(crate) fn check(&mut self, wire_len: usize, now: Instant) -> Verdict {
        let cost = wire_len as f64;
        let mut wait = Duration::ZERO;
        if let Some(frames) = self.frames.as_mut() {
            frames.refill(now);
            wait = wait.max(frames.wait_for(1.0));
        }
        if let Some(bytes) = self.bytes.as_mut() {
            bytes.refill(now);
            wait = wait.max(bytes.wait_for(cost));
        }
        if wait.is_zero() {
            if let Some(frames) = self.frames.as_mut() {
                frames.tokens -= 1.0;
            }
            if let Some(bytes) = self.bytes.as_mut() {
                bytes.tokens -= cost;
            }
            return Verdict::Pass;
        }
        let continues = self
            .resumed_at
            .is_some_and(|resumed| now.saturating_duration_since(resumed) <= ABUSE_GAP);
        let since = match self.streak_since {
            Some(since) if continues => since,
            _ => {
                self.streak_since = Some(now);
                now
            }
        };
        if now.saturating_duration_since(since) >= ABUSE_AFTER {
            return Verdict::Abuse;
        }
        // Whole milliseconds, rounded up, so the client that waits exactly
        // `retryAfterMs` finds its frame fits.
        let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
        Verdict::Refuse(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
    }

    /// The reader resumed reading at `now` after a refusal's pause.
    pub(crate) fn resumed(&mut self, now: Instant) {
        self.resumed_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(frames: u64, bytes: u64, burst_ms: u64) -> RateLimits {
        RateLimits::new(frames, bytes, Duration::from_millis(burst_ms))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_client_within_its_rate_is_never_refused() {
        let t0 = Instant::now();
        // 100 frames/s, a burst of 1 s: 100 frames at once, then one every
        // 10 ms forever.
        let mut limiter = Limiter::new(&limits(100, 0, 1000), t0);
        for _ in 0..100 {
            assert_eq!(limiter.check(10, t0), Verdict::Pass);
        }
        for i in 1..=10_000 {
            assert_eq!(limiter.check(10, t0 + ms(10 * i)), Verdict::Pass, "{i}");
        }
    }

    #[test]
    fn the_frame_over_the_rate_is_refused_with_the_time_it_needs_and_takes_nothing() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(&limits(10, 0, 1000), t0);
        for _ in 0..10 {
            assert_eq!(limiter.check(7, t0), Verdict::Pass);
        }
        // Empty: one frame needs 100 ms at 10 a second.
        assert_eq!(limiter.check(7, t0), Verdict::Refuse(ms(100)));
        assert_eq!(limiter.check(7, t0 + ms(40)), Verdict::Refuse(ms(60)));
        // The refusals took nothing: after the wait it fits.
        limiter.resumed(t0 + ms(100));
        assert_eq!(limiter.check(7, t0 + ms(100)), Verdict::Pass);
    }

    #[test]
    fn bytes_are_counted_on_the_wire_and_the_larger_wait_wins() {
        let t0 = Instant::now();
        // 1000 bytes/s, burst 1 s; frames are unlimited.
        let mut limiter = Limiter::new(&limits(0, 1000, 1000), t0);
        assert_eq!(limiter.check(600, t0), Verdict::Pass);
        // 400 left; 600 more need 200 ms.
        assert_eq!(limiter.check(600, t0), Verdict::Refuse(ms(200)));
        assert_eq!(limiter.check(400, t0), Verdict::Pass);
        let mut both = Limiter::new(&limits(1, 1000, 1000), t0);
        assert_eq!(both.check(100, t0), Verdict::Pass);
        // The frame bucket is empty (1 s), the byte bucket is not.
        assert_eq!(both.check(100, t0), Verdict::Refuse(ms(1000)));
    }

    #[test]
    fn the_bucket_never_holds_more_than_its_burst() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(&limits(10, 0, 500), t0);
        // Idle for an hour: still only 5 frames at once.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(limiter.check(1, later), Verdict::Pass);
        }
        assert!(matches!(limiter.check(1, later), Verdict::Refuse(_)));
    }

    #[test]
    fn refused_at_every_retry_for_five_seconds_is_abuse() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(&limits(10, 0, 100), t0);
        assert_eq!(limiter.check(1, t0), Verdict::Pass);
        let mut now = t0;
        let mut refusals = 0;
        loop {
            // A flood: the frame right after each pause fits, the next not.
            match limiter.check(1, now) {
                Verdict::Pass => continue,
                Verdict::Refuse(wait) => {
                    refusals += 1;
                    now += wait;
                    limiter.resumed(now);
                }
                Verdict::Abuse => break,
            }
        }
        let streak = now - t0;
        assert!(
            streak >= ABUSE_AFTER && streak < ABUSE_AFTER + ms(200),
            "abuse after {streak:?}"
        );
        assert!(refusals >= 45, "{refusals} refusals");
    }

    #[test]
    fn a_client_that_pauses_between_refusals_starts_a_new_streak() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(&limits(1, 0, 1000), t0);
        let mut now = t0;
        for _ in 0..20 {
            // Spends its burst, is refused, waits, then is quiet for longer
            // than the gap before its next burst: over and over, never abuse.
            assert_eq!(limiter.check(1, now), Verdict::Pass);
            let Verdict::Refuse(wait) = limiter.check(1, now) else {
                panic!("expected a refusal");
            };
            now += wait;
            limiter.resumed(now);
            now += ABUSE_GAP + ms(1);
        }
    }

    #[test]
    fn limits_of_zero_are_off() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(&limits(0, 0, 1000), t0);
        assert!(limiter.frames.is_none() && limiter.bytes.is_none());
        for _ in 0..100_000 {
            assert_eq!(limiter.check(1 << 20, t0), Verdict::Pass);
        }
    }

    #[test]
    fn retry_after_is_whole_milliseconds_rounded_up() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(&limits(3, 0, 1000), t0);
        for _ in 0..3 {
            limiter.check(1, t0);
        }
        // 1/3 s is 333.3 ms: 334.
        assert_eq!(limiter.check(1, t0), Verdict::Refuse(ms(334)));
        let mut fast = Limiter::new(&limits(1_000_000, 0, 1), t0);
        for _ in 0..1000 {
            fast.check(1, t0);
        }
        assert_eq!(fast.check(1, t0), Verdict::Refuse(ms(1)), "at least 1 ms");
    }
}
