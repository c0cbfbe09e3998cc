//! A log-linear latency histogram: constant memory, under 1% error, cheap to
//! record into from a hot loop and to merge across threads.

/// Sub-buckets per power of two: 2^7 = 128, so a bucket is at most 1/128 wide.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Counts of values (nanoseconds here) in buckets of bounded relative width.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("max", &self.max)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

fn index(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    let group = (shift + 1) as usize;
    group * SUB as usize + ((value >> shift) - SUB) as usize
}

/// The middle of bucket `i`.
fn value_at(i: usize) -> u64 {
    let sub = SUB as usize;
    if i < sub {
        return i as u64;
    }
    let group = i / sub;
    let shift = (group - 1) as u32;
    let low = (SUB + (i % sub) as u64) << shift;
    low + ((1u64 << shift) >> 1)
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            max: 0,
            sum: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, value: u64) {
        self.counts[index(value)] += 1;
        self.count += 1;
        self.sum += value as u128;
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> Option<u64> {
        (self.count > 0).then(|| (self.sum / self.count as u128) as u64)
    }

    /// The value below which a fraction `q` (0..=1) of the samples fall, or
    /// `None` with no samples.
    /// The `q` quantile in microseconds, to 0.1 µs, for reports (samples
    /// are nanoseconds).
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        self.quantile(q)
            .map(|ns| crate::report::round(ns as f64 / 1000.0, 1))
    }

    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(value_at(i).min(self.max));
            }
        }
        Some(self.max)
    }

    /// p50, p99, p99.9 and max in microseconds (from nanosecond samples), as JSON.
    pub fn summary_us(&self) -> serde_json::Value {
        let us = |v: Option<u64>| v.map(|ns| (ns as f64 / 1000.0 * 10.0).round() / 10.0);
        serde_json::json!({
            "samples": self.count,
            "p50_us": us(self.quantile(0.50)),
            "p99_us": us(self.quantile(0.99)),
            "p999_us": us(self.quantile(0.999)),
            "max_us": us((self.count > 0).then_some(self.max)),
            "mean_us": us(self.mean()),
        })
    }

    /// `p50 12.3 µs, p99 ...` for the human report.
    pub fn describe_us(&self) -> String {
        let f = |v: Option<u64>| match v {
            Some(ns) => format!("{:.1} µs", ns as f64 / 1000.0),
            None => "-".to_owned(),
        };
        format!(
            "p50 {}, p99 {}, p99.9 {}, max {} ({} samples)",
            f(self.quantile(0.5)),
            f(self.quantile(0.99)),
            f(self.quantile(0.999)),
            f((self.count > 0).then_some(self.max)),
            self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7) {
            let i = index(v);
            assert!(i >= last);
            last = i;
            let mid = value_at(i);
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 1.0 / 128.0 + 1e-9, "value {v} bucket mid {mid}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        assert!((p50 - 5_000_000.0).abs() / 5_000_000.0 < 0.01);
        assert_eq!(h.max(), 10_000_000);
        let mut other = Histogram::new();
        other.merge(&h);
        assert_eq!(other.count(), 10_000);
    }
}
