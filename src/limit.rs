//! Per-shard token buckets (pure; time is passed in).
//!
//! Kinesis accepts 1000 records/s and 1 MiB/s per shard. kpld holds Kinesis
//! records back before sending so one daemon alone rarely meets
//! ProvisionedThroughputExceeded: each shard gets a records bucket and a
//! bytes bucket refilled at `rate_limit` percent of those limits, holding
//! at most one second's worth (the KPL default is 150%: a bit over the
//! limit, since the service's own buckets allow bursts).
//!
//! `rate_limit` is a ceiling, not a fixed rate: when Kinesis throttles a
//! shard (ProvisionedThroughputExceeded), that shard's rate is cut to
//! [`CUT`] of itself (at most once per [`CUT_GAP`], never below [`FLOOR`] of
//! the limits) and its buckets are emptied, then it climbs back by
//! [`RECOVER_PER_SEC`] of the limits per second. Additive increase and
//! multiplicative decrease keep a shard that only this daemon writes to
//! near 100% of its limits with few throttled entries, where a fixed 150%
//! had a third of them throttled (and every throttled aggregate retried),
//! while a shard with headroom still gets the burst allowance.

use std::time::Duration;
use tokio::time::Instant;

pub const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
pub const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// A throttled shard's rate becomes this fraction of itself.
pub const CUT: f64 = 0.8;
/// Throttles within this time of a cut are the same event (one PutRecords
/// answer often reports several entries of a shard).
pub const CUT_GAP: Duration = Duration::from_millis(500);
/// Cuts stop at this fraction of the shard limits.
pub const FLOOR: f64 = 0.5;
/// After a cut, the rate climbs back by this fraction of the limits per second.
pub const RECOVER_PER_SEC: f64 = 0.02;

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    rate: f64,
    cap: f64,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Bucket {
            tokens: rate,
            rate,
            cap: rate,
        }
    }

    fn set_rate(&mut self, rate: f64) {
        self.rate = rate;
        self.cap = rate;
        self.tokens = self.tokens.min(rate);
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + self.rate * secs).min(self.cap);
    }

    /// Seconds until `n` tokens are there (0 if they are).
    fn wait(&self, n: f64) -> f64 {
        // A cost above the capacity is allowed once the bucket is full.
        let need = n.min(self.cap) - self.tokens;
        if need <= 0.0 {
            0.0
        } else {
            need / self.rate
        }
    }
}

/// The two buckets of one shard.
#[derive(Debug, Clone)]
pub struct ShardLimiter {
    records: Bucket,
    bytes: Bucket,
    last: Instant,
    /// `rate_limit` as a fraction of the shard limits.
    ceiling: f64,
    /// The current rate, as a fraction of the shard limits.
    factor: f64,
    last_cut: Option<Instant>,
}

impl ShardLimiter {
    /// `rate_limit` in percent of the shard limits (100 = exactly the limit).
    pub fn new(rate_limit: u64, now: Instant) -> Self {
        let f = rate_limit as f64 / 100.0;
        ShardLimiter {
            records: Bucket::new(SHARD_RECORDS_PER_SEC * f),
            bytes: Bucket::new(SHARD_BYTES_PER_SEC * f),
            last: now,
            ceiling: f,
            factor: f,
            last_cut: None,
        }
    }

    /// The current rate in percent of the shard limits.
    pub fn rate_percent(&self) -> f64 {
        self.factor * 100.0
    }

    /// A new `rate_limit` (SIGHUP): the new ceiling applies at once to a
    /// shard running at its old one; a shard slowed down by throttles keeps
    /// its rate (never above the new ceiling) and climbs to the new ceiling
    /// from there, so a reload does not send a throttled shard back to a
    /// full burst.
    pub fn set_ceiling(&mut self, rate_limit: u64, now: Instant) {
        self.refill(now);
        let throttled = self.factor < self.ceiling;
        self.ceiling = rate_limit as f64 / 100.0;
        let f = if throttled {
            self.factor.min(self.ceiling)
        } else {
            self.ceiling
        };
        self.set_factor(f);
    }

    fn set_factor(&mut self, f: f64) {
        self.factor = f;
        self.records.set_rate(SHARD_RECORDS_PER_SEC * f);
        self.bytes.set_rate(SHARD_BYTES_PER_SEC * f);
    }

    fn refill(&mut self, now: Instant) {
        // A throttle is reported with the end of its call, which can be
        // earlier than the last refill: time never runs backwards here.
        if now <= self.last {
            return;
        }
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if self.factor < self.ceiling {
            self.set_factor((self.factor + RECOVER_PER_SEC * secs).min(self.ceiling));
        }
        self.records.refill(secs);
        self.bytes.refill(secs);
    }

    /// Kinesis throttled a record sent to this shard: the shard is full
    /// now, so send nothing until the buckets refill, at a lower rate.
    pub fn throttled(&mut self, now: Instant) {
        self.refill(now);
        if self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < CUT_GAP)
        {
            return;
        }
        self.last_cut = Some(now);
        self.set_factor((self.factor * CUT).max(FLOOR.min(self.ceiling)));
        self.records.tokens = 0.0;
        self.bytes.tokens = 0.0;
    }

    /// Takes one Kinesis record of `bytes` if the buckets allow it now;
    /// otherwise says how long to wait.
    pub fn try_take(&mut self, bytes: usize, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let wait = self.records.wait(1.0).max(self.bytes.wait(bytes as f64));
        if wait > 0.0 {
            // Round up so the caller does not wake a hair too early.
            return Err(Duration::from_secs_f64(wait) + Duration::from_micros(100));
        }
        self.records.tokens -= 1.0;
        self.bytes.tokens -= (bytes as f64).min(self.bytes.cap);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_one_seconds_worth_then_waits() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(100, t0);
        for _ in 0..1000 {
            assert!(l.try_take(10, t0).is_ok());
        }
        let wait = l.try_take(10, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(2), "{wait:?}");
        assert!(l.try_take(10, t0 + Duration::from_millis(2)).is_ok());
    }

    #[test]
    fn bytes_limit_applies() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(150, t0);
        let big = 512 * 1024;
        assert!(l.try_take(big, t0).is_ok());
        assert!(l.try_take(big, t0).is_ok());
        assert!(l.try_take(big, t0).is_ok());
        let w = l.try_take(big, t0).unwrap_err();
        // 1.5 MiB/s: half a MiB needs about a third of a second.
        assert!(
            w > Duration::from_millis(300) && w < Duration::from_millis(400),
            "{w:?}"
        );
    }

    #[test]
    fn a_throttle_cuts_the_rate_once_per_event_and_it_climbs_back() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(150, t0);
        l.throttled(t0);
        assert!((l.rate_percent() - 120.0).abs() < 1e-9);
        // The same event reported by several entries: one cut (and 100 ms
        // of recovery, 0.2 points).
        l.throttled(t0 + Duration::from_millis(100));
        assert!((l.rate_percent() - 120.2).abs() < 1e-9);
        // Nothing goes out until the (emptied) buckets refill.
        assert!(l.try_take(100, t0 + Duration::from_millis(100)).is_ok());
        let mut m = ShardLimiter::new(150, t0);
        m.throttled(t0);
        assert!(m.try_take(100, t0).is_err());
        // A later throttle cuts again, down to the floor at most.
        for i in 1..20 {
            m.throttled(t0 + CUT_GAP * i);
        }
        assert!(m.rate_percent() >= FLOOR * 100.0 - 1e-9);
        assert!(m.rate_percent() < 52.0, "{}", m.rate_percent());
        // Then 2 points per second back up to the ceiling, no further:
        // 10.5 s after the last cut, 50 + 21.
        let later = t0 + CUT_GAP * 20 + Duration::from_secs(10);
        let _ = m.try_take(1, later);
        assert!(
            (m.rate_percent() - 71.0).abs() < 0.1,
            "{}",
            m.rate_percent()
        );
        let _ = m.try_take(1, later + Duration::from_secs(3600));
        assert!((m.rate_percent() - 150.0).abs() < 1e-9);
    }

    #[test]
    fn a_throttle_reported_late_does_not_give_time_back() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(100, t0);
        while l.try_take(10, t0).is_ok() {}
        let t100 = t0 + Duration::from_millis(100);
        assert!(l.try_take(10, t100).is_ok());
        // The call that was throttled ended before the last refill.
        l.throttled(t0 + Duration::from_millis(50));
        assert!(l.try_take(10, t100).is_err());
    }

    #[test]
    fn sustained_rate_matches_the_limit() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(100, t0);
        let mut now = t0;
        let mut sent = 0u64;
        let end = t0 + Duration::from_secs(10);
        while now < end {
            match l.try_take(100, now) {
                Ok(()) => sent += 1,
                Err(w) => now += w,
            }
        }
        // One second of burst plus ten seconds at 1000/s.
        assert!((10_900..=11_000).contains(&sent), "{sent}");
    }

    #[test]
    fn a_new_ceiling_keeps_a_throttled_rate_and_moves_an_unthrottled_one() {
        let t0 = Instant::now();
        let mut cut = ShardLimiter::new(150, t0);
        cut.throttled(t0);
        let mut free = ShardLimiter::new(150, t0);
        cut.set_ceiling(200, t0);
        free.set_ceiling(200, t0);
        assert!((cut.rate_percent() - 120.0).abs() < 1e-9);
        assert!((free.rate_percent() - 200.0).abs() < 1e-9);
        // A lower ceiling than the throttled rate: the ceiling.
        cut.set_ceiling(100, t0);
        assert!((cut.rate_percent() - 100.0).abs() < 1e-9);
    }
}
