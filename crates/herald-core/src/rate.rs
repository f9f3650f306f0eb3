//! The per-app call limit: at most `limit` calls in any window of one second.
//!
//! A sliding log (a ring of the last `limit` accepted call times) is exact — no burst at window
//! edges, unlike a fixed window or a token bucket with a full bucket — and costs O(1) per call and
//! `8 × limit` bytes per app (4 KiB at the default 500).

use crate::time::Timestamp;

const WINDOW_US: u64 = 1_000_000;

/// The largest per-app limit a configuration may set (bounds the ring's memory to 800 KiB).
pub const MAX_LIMIT: u32 = 100_000;

/// An exact sliding-window limiter.
#[derive(Debug)]
pub struct SlidingWindow {
    ring: Box<[u64]>,
    next: usize,
    filled: usize,
}

/// Refused: try again after this many microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl RetryAfter {
    /// Whole seconds to wait, rounded up, at least 1 (for the `Retry-After` header).
    pub fn secs_ceil(self) -> u64 {
        self.0.div_ceil(1_000_000).max(1)
    }
}

impl SlidingWindow {
    /// A limiter admitting `limit` calls per second (`1..=MAX_LIMIT`; clamped into that range).
    pub fn new(limit: u32) -> Self {
        let limit = limit.clamp(1, MAX_LIMIT) as usize;
        SlidingWindow {
            ring: vec![0; limit].into_boxed_slice(),
            next: 0,
            filled: 0,
        }
    }

    /// Admits one call at `now`, or says how long until one would be admitted.
    pub fn check(&mut self, now: Timestamp) -> Result<(), RetryAfter> {
        let now = now.micros();
        if self.filled == self.ring.len() {
            // `next` holds the oldest of the last `limit` admitted calls.
            let oldest = self.ring[self.next];
            let opens_at = oldest.saturating_add(WINDOW_US);
            if now < opens_at {
                return Err(RetryAfter(opens_at - now));
            }
        } else {
            self.filled += 1;
        }
        self.ring[self.next] = now;
        self.next = (self.next + 1) % self.ring.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_exactly_the_limit_in_any_second() {
        let mut w = SlidingWindow::new(500);
        let t0 = Timestamp::from_secs(1_700_000_000);
        for _ in 0..500 {
            assert!(w.check(t0).is_ok());
        }
        assert_eq!(w.check(t0), Err(RetryAfter(1_000_000)));
        assert_eq!(w.check(t0.add_micros(999_999)), Err(RetryAfter(1)));
        // Refused calls are not counted: a second later the whole window is free again.
        let t1 = t0.add_micros(1_000_000);
        for _ in 0..500 {
            assert!(w.check(t1).is_ok());
        }
        assert!(w.check(t1).is_err());
    }

    #[test]
    fn spread_calls_never_exceed_the_window() {
        let mut w = SlidingWindow::new(10);
        let t0 = Timestamp::from_secs(100);
        let mut admitted = Vec::new();
        for i in 0..1000u64 {
            let t = t0.add_micros(i * 20_000); // 50 attempts per second
            if w.check(t).is_ok() {
                admitted.push(t.micros());
            }
        }
        for (i, &t) in admitted.iter().enumerate() {
            let in_window = admitted[i..]
                .iter()
                .take_while(|&&u| u < t + WINDOW_US)
                .count();
            assert!(in_window <= 10);
        }
        assert!(admitted.len() >= 190, "admitted {}", admitted.len());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(1).secs_ceil(), 1);
        assert_eq!(RetryAfter(1_000_001).secs_ceil(), 2);
    }
}

/// A small per-connection limiter: the generic cell rate algorithm, one `u64` of state. Admits
/// `rate` events per second with a burst of `rate` (a full second's worth).
///
/// Cheaper in memory than [`SlidingWindow`] (8 bytes instead of `8 × rate`), which matters for a
/// limiter that every connection carries; slightly more permissive at the edge of a burst.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gcra {
    /// Theoretical arrival time of the next event, in microseconds.
    tat: u64,
}

impl Gcra {
    /// Admits one event at `now` under `rate` per second (0 admits nothing).
    pub fn check(&mut self, rate: u32, now: Timestamp) -> Result<(), RetryAfter> {
        if rate == 0 {
            return Err(RetryAfter(WINDOW_US));
        }
        let now = now.micros();
        let interval = WINDOW_US / u64::from(rate);
        let tolerance = WINDOW_US.saturating_sub(interval);
        let tat = self.tat.max(now);
        if tat > now + tolerance {
            return Err(RetryAfter(tat - now - tolerance));
        }
        self.tat = tat + interval;
        Ok(())
    }
}

#[cfg(test)]
mod gcra_tests {
    use super::*;

    #[test]
    fn a_burst_of_rate_then_one_per_interval() {
        let mut g = Gcra::default();
        let t0 = Timestamp::from_secs(1_000);
        for _ in 0..10 {
            assert!(g.check(10, t0).is_ok());
        }
        assert!(g.check(10, t0).is_err());
        assert!(g.check(10, t0.add_micros(99_999)).is_err());
        assert!(g.check(10, t0.add_micros(100_000)).is_ok());
        assert!(g.check(10, t0.add_micros(100_000)).is_err());
        assert!(g.check(0, t0).is_err());
    }
}
