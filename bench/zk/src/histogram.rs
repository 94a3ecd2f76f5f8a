//! A fixed-size latency histogram: log-linear buckets over nanoseconds, 64 per power of two, so any
//! recorded value is known within 1/64 (1.6 %) and the memory is the same 30 KiB for ten ops or a billion.
//! Each session records into its own; a phase merges them.

/// Sub-buckets per power of two (2^6 = 64): the relative precision of a percentile.
const SUB_BITS: u32 = 6;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// Buckets needed to cover every `u64`: the linear first 128 values, then 64 per further power of two.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB_BUCKETS;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index_of(v: u64) -> usize {
    let exp = 63 - v.max(1).leading_zeros();
    if exp <= SUB_BITS {
        return v as usize;
    }
    let shift = exp - SUB_BITS;
    // The value's top SUB_BITS + 1 bits, 64..=127, placed after the buckets of the smaller powers.
    (shift as usize) * SUB_BUCKETS + (v >> shift) as usize
}

/// The largest value that falls into bucket `i` (so a percentile is never understated).
fn upper_bound_of(i: usize) -> u64 {
    if i < 2 * SUB_BUCKETS {
        return i as u64;
    }
    let shift = (i / SUB_BUCKETS - 1) as u32;
    let top = (i % SUB_BUCKETS + SUB_BUCKETS) as u64;
    (top << shift) + ((1 << shift) - 1)
}

impl Histogram {
    pub fn record(&mut self, value: u64) {
        self.counts[index_of(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `q` (0..=1) of the recorded values fall; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_bound_of(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_within_precision() {
        // Every value lands in a bucket whose upper bound is at or above it and within 1/64 of it.
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 40, u64::MAX / 3, u64::MAX]) {
            let i = index_of(v);
            assert!(i < BUCKETS, "{v} -> {i}");
            assert!(i >= last || v > 100_000);
            last = i;
            let ub = upper_bound_of(i);
            assert!(ub >= v, "{v}: ub {ub}");
            assert!(
                (ub - v) as f64 <= v as f64 / SUB_BUCKETS as f64 + 1.0,
                "{v}: ub {ub}"
            );
        }
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_uniform_sample() {
        // 1..=10000 µs: p50 ≈ 5000 µs, p99 ≈ 9900 µs, within the histogram's precision.
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 / 60.0;
        assert!(near(h.quantile(0.5), 5_000_000), "{}", h.quantile(0.5));
        assert!(near(h.quantile(0.99), 9_900_000), "{}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), 10_000_000);
        let mut twice = h.clone();
        twice.merge(&h);
        assert_eq!(twice.count(), 20_000);
        assert_eq!(twice.quantile(0.5), h.quantile(0.5));
        assert_eq!(Histogram::default().quantile(0.99), 0);
    }
}
