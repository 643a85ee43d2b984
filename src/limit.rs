//! Per-shard token buckets (pure; time is passed in).
//!
//! Kinesis accepts 1000 records/s and 1 MiB/s per shard. kpld holds Kinesis
//! records back before sending so one daemon alone rarely meets
//! ProvisionedThroughputExceeded: each shard gets a records bucket and a
//! bytes bucket refilled at `rate_limit` percent of those limits, holding
//! at most one second's worth (the KPL default is 150%: a bit over the
//! limit, since the service's own buckets allow bursts).

use std::time::Duration;
use tokio::time::Instant;

pub const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
pub const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;

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
}

impl ShardLimiter {
    /// `rate_limit` in percent of the shard limits (100 = exactly the limit).
    pub fn new(rate_limit: u64, now: Instant) -> Self {
        let f = rate_limit as f64 / 100.0;
        ShardLimiter {
            records: Bucket::new(SHARD_RECORDS_PER_SEC * f),
            bytes: Bucket::new(SHARD_BYTES_PER_SEC * f),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.records.refill(secs);
        self.bytes.refill(secs);
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
}
