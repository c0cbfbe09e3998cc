//! Histograms that the hot path can afford: fixed buckets of relaxed
//! atomics, spread over shards so writer threads on different cores do
//! not fight over one cache line, summed only when `/metrics` is scraped.
//!
//! `prometheus-client`'s own `Histogram` takes a write lock for every
//! observation; a delivery must take no lock, so the counting is here and
//! `http::metrics` hands the sums to `prometheus-client` for encoding.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Shards per histogram: enough that the few threads writing at one moment
/// rarely share one; an observation picks its shard from a connection id.
const SHARDS: usize = 8;

/// Buckets per histogram at most (the `+Inf` bucket included).
const MAX_BUCKETS: usize = 24;

/// One shard's counts, on cache lines of its own.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    /// `buckets[i]` counts values `<= bounds[i]` and above the bound
    /// before it; the last counts what is above every bound.
    buckets: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

/// A histogram of `u64` values (bytes, members, nanoseconds).
#[derive(Debug)]
pub(crate) struct Histogram {
    /// Upper bounds, ascending; at most `MAX_BUCKETS - 1` of them.
    bounds: &'static [u64],
    shards: Box<[Shard; SHARDS]>,
}

/// A histogram read at one scrape: the sum, the count, and each bucket's
/// upper bound with the cumulative count up to it (the last `+Inf`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summed {
    pub(crate) sum: u64,
    pub(crate) count: u64,
    pub(crate) buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// A histogram with these bucket bounds.
    ///
    /// # Panics
    /// If `bounds` has more than `MAX_BUCKETS - 1` entries or is not
    /// ascending: the bounds are constants of this crate, so that is a bug
    /// caught by the first test that builds the counters.
    pub(crate) fn new(bounds: &'static [u64]) -> Histogram {
        assert!(bounds.len() < MAX_BUCKETS, "too many buckets");
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "bounds not ascending"
        );
        Histogram {
            bounds,
            shards: Box::default(),
        }
    }

    /// Counts `value` `times` times at once (a batch of frames that all
    /// went the same way), in the shard `key` picks (a connection id): two
    /// relaxed adds, no lock, no allocation.
    pub(crate) fn observe_times(&self, key: u64, value: u64, times: u64) {
        let shard = &self.shards[key as usize % SHARDS];
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        shard.buckets[bucket].fetch_add(times, Relaxed);
        shard.sum.fetch_add(value.saturating_mul(times), Relaxed);
    }

    /// Counts a duration `times` times, in nanoseconds (saturating at
    /// `u64::MAX`).
    pub(crate) fn observe_duration(&self, key: u64, duration: Duration, times: u64) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.observe_times(key, nanos, times);
    }

    /// The counts summed over shards, with bounds and sum divided by
    /// `scale` (1e9 turns nanoseconds into the seconds Prometheus expects).
    /// Each shard is read bucket by bucket while others may be counting, so
    /// a scrape can be a few observations out of step with itself; the
    /// count is taken from the buckets, so it always matches them.
    pub(crate) fn sum(&self, scale: f64) -> Summed {
        let mut counts = [0u64; MAX_BUCKETS];
        let mut sum = 0u64;
        for shard in self.shards.iter() {
            for (total, bucket) in counts.iter_mut().zip(&shard.buckets) {
                *total += bucket.load(Relaxed);
            }
            sum = sum.wrapping_add(shard.sum.load(Relaxed));
        }
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len() + 1);
        for (i, &count) in counts.iter().enumerate().take(self.bounds.len() + 1) {
            total += count;
            let bound = self
                .bounds
                .get(i)
                // `f64::MAX` is how prometheus-client spells `+Inf`.
                .map_or(f64::MAX, |&bound| bound as f64 / scale);
            buckets.push((bound, count));
        }
        Summed {
            sum,
            count: total,
            buckets,
        }
    }
}

/// Queue depth in bytes: 256 B to 64 MiB by fours (the queue bound is
/// 4 MiB by default, `--queue-bytes`).
const QUEUE_BYTES: &[u64] = &[
    256,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
];

/// Members a broadcast was queued for.
const FAN_OUT: &[u64] = &[
    0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000,
];

/// Delivery latency in nanoseconds: 10 µs to 10 s.
const LATENCY_NS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// Broadcasts 1 in this many are timed (their read stamped, the
/// delivery's completed write clocked) and their queue depth recorded;
/// every broadcast's fan-out is. See SPEC.md 12.1.
pub(crate) const SAMPLE_EVERY: u32 = 1;

/// The server's histograms (SPEC.md 12.1).
#[derive(Debug)]
pub(crate) struct Histograms {
    /// Bytes a member's queue holds once a sampled delivery is queued in
    /// it (the delivery included), once per MESSAGE delivered.
    pub(crate) queue_bytes: Histogram,
    /// Members a broadcast was queued for (the publisher not counted
    /// unless it echoes to itself), once per MESSAGE.
    pub(crate) fan_out: Histogram,
    /// From the read that brought a sampled MESSAGE in to the write that
    /// put its last byte in a member's socket, in nanoseconds, once per
    /// MESSAGE per member.
    pub(crate) latency: Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            queue_bytes: Histogram::new(QUEUE_BYTES),
            fan_out: Histogram::new(FAN_OUT),
            latency: Histogram::new(LATENCY_NS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let histogram = Histogram::new(&[10, 100]);
        for (key, value) in [(0, 0), (1, 10), (2, 11), (3, 100), (4, 101), (5, 5000)] {
            histogram.observe_times(key, value, 1);
        }
        let summed = histogram.sum(1.0);
        assert_eq!(summed.count, 6);
        assert_eq!(summed.sum, 5222);
        assert_eq!(summed.buckets, vec![(10.0, 2), (100.0, 2), (f64::MAX, 2)]);
    }

    #[test]
    fn durations_are_scaled_to_seconds() {
        let histograms = Histograms::default();
        histograms
            .latency
            .observe_duration(7, Duration::from_micros(30), 1);
        let summed = histograms.latency.sum(1e9);
        assert_eq!(summed.count, 1);
        assert_eq!(summed.buckets[0], (10e-6, 0));
        assert_eq!(summed.buckets[2], (50e-6, 1));
        assert_eq!(summed.buckets[3], (100e-6, 0));
        assert_eq!(summed.buckets.last(), Some(&(f64::MAX, 0)));
    }
}
