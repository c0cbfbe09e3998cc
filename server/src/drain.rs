//! The lame-duck drain: when each connection gets SHUTTING_DOWN, and the
//! `retryAfterMs` hint it carries (SPEC.md 5.9).
//!
//! Closing every client at once makes them all reconnect at once, to the
//! next server or to this one restarted; NATS's lame-duck mode spreads the
//! closes over a grace period instead, and so does Relay: with `n`
//! connections and a window `w`, the `i`-th is closed at `w·i/n`, and each
//! hint is its own value in `[MIN_RETRY_MS, MIN_RETRY_MS + w)`, so even
//! clients closed together come back apart.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The least `retryAfterMs` a SHUTTING_DOWN carries: a moment for the
/// server (or its replacement) to be listening again.
pub(crate) const MIN_RETRY_MS: u64 = 1000;

/// The stop in progress, if any: whether one has begun and over how long
/// its closes are spread.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    state: Mutex<DrainState>,
    /// Rung when a forced stop cuts the spread short.
    hurried: Condvar,
}

#[derive(Debug, Default)]
struct DrainState {
    begun: bool,
    /// Zero for an immediate stop, or once a drain is hurried.
    window: Duration,
}

impl Drain {
    /// Begins a stop whose closes spread over `window`; true for the first
    /// call. A later call with a zero window hurries a drain under way:
    /// every close still due happens at once.
    pub(crate) fn begin(&self, window: Duration) -> bool {
        let mut state = self.state.lock();
        if state.begun {
            if window.is_zero() && !state.window.is_zero() {
                state.window = Duration::ZERO;
                self.hurried.notify_all();
            }
            return false;
        }
        state.begun = true;
        state.window = window;
        true
    }

    /// The spread in force now.
    pub(crate) fn window(&self) -> Duration {
        self.state.lock().window
    }

    /// Waits until `fraction` of the window has passed since `start`, or
    /// until the drain is hurried.
    fn wait_for(&self, start: Instant, fraction: f64) {
        let mut state = self.state.lock();
        loop {
            let due = start + state.window.mul_f64(fraction);
            if Instant::now() >= due {
                return;
            }
            // Woken early by `begin` when hurried; the loop re-reads it.
            let _ = self.hurried.wait_until(&mut state, due);
        }
    }
}

impl Drain {
    /// Tells each of `peers` (with `tell`, given its `retryAfterMs`),
    /// spread over the window; returns once the last has been told (not
    /// once it has closed).
    pub(crate) fn tell_spread<T>(&self, peers: &[T], mut tell: impl FnMut(&T, u64)) {
        let count = peers.len();
        log::info!(
            "shutting down: closing {count} connection(s) over {:.1} s",
            self.window().as_secs_f64()
        );
        let start = Instant::now();
        let mut seed = seed();
        for (i, peer) in peers.iter().enumerate() {
            self.wait_for(start, i as f64 / count as f64);
            let window_ms = u64::try_from(self.window().as_millis()).unwrap_or(u64::MAX);
            let jitter = if window_ms == 0 {
                0
            } else {
                splitmix64(&mut seed) % window_ms
            };
            tell(peer, MIN_RETRY_MS.saturating_add(jitter));
        }
    }
}

/// A seed that differs between runs and servers; the hints need spread,
/// not secrecy.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Sebastiano Vigna's SplitMix64: a small, well-spread sequence.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_begin_wins_and_a_forced_stop_hurries_a_drain() {
        let drain = Drain::default();
        assert!(drain.begin(Duration::from_secs(10)));
        assert!(!drain.begin(Duration::from_secs(5)));
        assert_eq!(drain.window(), Duration::from_secs(10));
        assert!(!drain.begin(Duration::ZERO));
        assert_eq!(drain.window(), Duration::ZERO);
        // Hurried: the last close is due now, not in 10 s.
        let start = Instant::now();
        drain.wait_for(start, 0.99);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn hints_spread_over_the_window() {
        let mut seed = 1;
        let values: Vec<u64> = (0..1000).map(|_| splitmix64(&mut seed) % 2000).collect();
        assert!(values.iter().any(|&v| v < 500));
        assert!(values.iter().any(|&v| v >= 1500));
    }
}
