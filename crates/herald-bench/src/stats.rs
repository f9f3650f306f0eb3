//! Latency histograms: HDR histograms in microseconds, sharded so that thousands of receiving
//! connections record without contending on one lock.

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Largest latency recorded, in microseconds (two minutes); larger values are clamped to it.
const MAX_MICROS: u64 = 120_000_000;

/// A new histogram of 1 µs to two minutes at three significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that `new_with_bounds` accepts.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Latency histograms in shards; a recorder picks its shard once (by connection index).
#[derive(Debug)]
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    /// `shards` empty histograms.
    pub fn new(shards: usize) -> Self {
        Latencies {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(histogram()))
                .collect(),
        }
    }

    /// Records microsecond values into shard `key % shards`, under one lock.
    pub fn record_all(&self, key: usize, micros: &[u64]) {
        let mut h = self.shards[key % self.shards.len()].lock();
        for &v in micros {
            h.saturating_record(v.max(1));
        }
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for s in &self.shards {
            // Same bounds everywhere, so adding cannot fail.
            let _ = all.add(&*s.lock());
        }
        all
    }

    /// Empties every shard.
    pub fn reset(&self) {
        for s in &self.shards {
            s.lock().reset();
        }
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

impl Percentiles {
    /// Summarises `h` (microseconds).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_into_percentiles() {
        let l = Latencies::new(4);
        let values: Vec<u64> = (1..=1000).collect();
        for (i, chunk) in values.chunks(100).enumerate() {
            l.record_all(i, chunk);
        }
        let p = Percentiles::of(&l.merged());
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 0.5).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 0.99).abs() < 0.01, "{p:?}");
        assert_eq!(p.max_ms, 1.0);
        l.reset();
        assert_eq!(Percentiles::of(&l.merged()).count, 0);
        l.record_all(0, &[0, u64::MAX]);
        assert_eq!(Percentiles::of(&l.merged()).count, 2);
    }
}
