//! Lines per second of one file over the last [`WINDOW`], from samples of its
//! `lines` counter taken at most once per [`SPACING`] (pure: the caller passes
//! the time). Nothing is kept per line: the reader and `kpld stats` call
//! [`LineRate::observe`] with the counter as they pass by, so the cost is one
//! comparison of instants per chunk read.
//!
//! The rate is the growth of the counter since the oldest sample still inside
//! the window, over the time since that sample. A file nobody looked at for
//! longer than the window falls back to its newest sample, i.e. the average
//! since then (the best there is), and a file that stopped growing shows 0 as
//! soon as every sample in the window has the current count.

use std::time::Duration;
use tokio::time::Instant;

/// How far back the rate looks.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The smallest gap between two samples.
pub const SPACING: Duration = Duration::from_secs(1);
/// Samples kept: enough to cover [`WINDOW`] at [`SPACING`], plus the one just before it.
const SLOTS: usize = (WINDOW.as_secs() / SPACING.as_secs()) as usize + 2;

/// Samples of a counter, oldest first, in a ring.
#[derive(Debug, Clone)]
pub struct LineRate {
    samples: [(Instant, u64); SLOTS],
    /// Samples held (at most [`SLOTS`]).
    len: usize,
    /// Where the oldest sample is.
    head: usize,
}

impl LineRate {
    /// Starts with the counter at `count` at `now`.
    pub fn new(now: Instant, count: u64) -> LineRate {
        LineRate {
            samples: [(now, count); SLOTS],
            len: 1,
            head: 0,
        }
    }

    fn at(&self, i: usize) -> (Instant, u64) {
        self.samples[(self.head + i) % SLOTS]
    }

    fn newest(&self) -> (Instant, u64) {
        self.at(self.len - 1)
    }

    /// Keeps `count` as a sample when the newest is [`SPACING`] old or more.
    pub fn observe(&mut self, now: Instant, count: u64) {
        if now.saturating_duration_since(self.newest().0) < SPACING {
            return;
        }
        if self.len == SLOTS {
            self.head = (self.head + 1) % SLOTS;
            self.len -= 1;
        }
        self.samples[(self.head + self.len) % SLOTS] = (now, count);
        self.len += 1;
    }

    /// Lines per second up to `now`, when the counter is `count`.
    pub fn per_second(&self, now: Instant, count: u64) -> f64 {
        let base = (0..self.len)
            .map(|i| self.at(i))
            .find(|(t, _)| now.saturating_duration_since(*t) <= WINDOW)
            .unwrap_or_else(|| self.newest());
        let secs = now.saturating_duration_since(base.0).as_secs_f64();
        if secs < 1e-3 {
            return 0.0;
        }
        count.saturating_sub(base.1) as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_steady_flow_reads_as_its_rate() {
        let t0 = Instant::now();
        let mut r = LineRate::new(t0, 0);
        // 500 lines/s, observed every 100 ms for 30 s.
        for i in 1..=300u64 {
            r.observe(t0 + secs(i as f64 * 0.1), i * 50);
        }
        let rate = r.per_second(t0 + secs(30.0), 15_000);
        assert!((rate - 500.0).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn the_rate_covers_the_last_window_only() {
        let t0 = Instant::now();
        let mut r = LineRate::new(t0, 0);
        // 1000 lines/s for 20 s, then 10 lines/s.
        let mut count = 0;
        for s in 1..=40u64 {
            count += if s <= 20 { 1000 } else { 10 };
            r.observe(t0 + secs(s as f64), count);
        }
        let rate = r.per_second(t0 + secs(40.0), count);
        assert!(
            (rate - 10.0).abs() < 1e-6,
            "only the slow part is in the window: {rate}"
        );
    }

    #[test]
    fn a_file_that_stopped_growing_drops_to_zero() {
        let t0 = Instant::now();
        let mut r = LineRate::new(t0, 0);
        for s in 1..=5u64 {
            r.observe(t0 + secs(s as f64), s * 100);
        }
        assert!(r.per_second(t0 + secs(5.0), 500) > 0.0);
        for s in 6..=20u64 {
            r.observe(t0 + secs(s as f64), 500);
        }
        assert_eq!(r.per_second(t0 + secs(20.0), 500), 0.0);
    }

    #[test]
    fn samples_closer_than_the_spacing_are_not_kept() {
        let t0 = Instant::now();
        let mut r = LineRate::new(t0, 0);
        for i in 1..=1000u64 {
            r.observe(t0 + Duration::from_millis(i), i);
        }
        assert_eq!(r.len, 2, "one at the start and one a second later");
        assert_eq!(r.newest(), (t0 + Duration::from_millis(1000), 1000));
    }

    #[test]
    fn with_no_sample_in_the_window_the_average_since_the_newest_is_given() {
        let t0 = Instant::now();
        let r = LineRate::new(t0, 0);
        let rate = r.per_second(t0 + secs(60.0), 600);
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        assert_eq!(r.per_second(t0, 600), 0.0, "no time has passed: no rate");
    }

    #[test]
    fn the_ring_wraps_and_keeps_the_newest_samples_in_order() {
        let t0 = Instant::now();
        let mut r = LineRate::new(t0, 0);
        for s in 1..=100u64 {
            r.observe(t0 + secs(s as f64), s * s);
        }
        assert_eq!(r.len, SLOTS);
        let times: Vec<Instant> = (0..r.len).map(|i| r.at(i).0).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r.newest(), (t0 + secs(100.0), 10_000));
        // From the sample at 90 s (8100) to 100 s (10000): 190 lines/s.
        let rate = r.per_second(t0 + secs(100.0), 10_000);
        assert!((rate - 190.0).abs() < 1e-6, "{rate}");
    }
}
