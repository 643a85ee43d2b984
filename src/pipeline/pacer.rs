//! Pacing: each shard's rate limit (token buckets of [`ShardLimiter`])
//! between aggregation and collection. A Kinesis record whose shard has no
//! tokens is held, in order, until the buckets refill (pure; time is
//! passed in).

use super::record::KinesisRecord;
use crate::collect::RequestSize;
use crate::limit::ShardLimiter;
use std::collections::VecDeque;
use tokio::time::Instant;

struct PacedShard {
    /// Kinesis records held back by the limit, in order.
    held: VecDeque<KinesisRecord>,
    limiter: ShardLimiter,
}

#[derive(Default)]
pub struct Pacer {
    shards: Vec<PacedShard>,
    /// Shards with held records, and when to look at them again.
    held_shards: Vec<usize>,
    wake: Option<Instant>,
}

impl Pacer {
    /// Limiters for `n` shards of a new map at `rate_limit` percent; returns
    /// the records held for the old map.
    pub fn reset(&mut self, n: usize, rate_limit: u64, now: Instant) -> Vec<KinesisRecord> {
        let old = self.drain();
        self.shards = (0..n)
            .map(|_| PacedShard {
                held: VecDeque::new(),
                limiter: ShardLimiter::new(rate_limit, now),
            })
            .collect();
        old
    }

    /// A new `rate_limit` setting: every shard starts again from it.
    pub fn set_rate(&mut self, rate_limit: u64, now: Instant) {
        for s in &mut self.shards {
            s.limiter = ShardLimiter::new(rate_limit, now);
        }
    }

    /// Kinesis throttled shard `idx` at `at`: slow its limiter down.
    pub fn throttled(&mut self, idx: usize, at: Instant) {
        if let Some(s) = self.shards.get_mut(idx) {
            s.limiter.throttled(at);
        }
    }

    /// `k` back if it may be sent now; else it is held behind the records
    /// its shard already holds.
    pub fn admit(&mut self, k: KinesisRecord, now: Instant) -> Option<KinesisRecord> {
        let idx = k.shard_idx;
        let s = &mut self.shards[idx];
        if s.held.is_empty() {
            match s.limiter.try_take(k.request_bytes(), now) {
                Ok(()) => return Some(k),
                Err(wait) => {
                    let at = now + wait;
                    self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
                }
            }
            self.held_shards.push(idx);
        }
        s.held.push_back(k);
        None
    }

    /// When held records should be looked at again.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.held_shards.is_empty() {
            None
        } else {
            self.wake
        }
    }

    /// Moves held records whose tokens are there to `ready`, in order, and
    /// those whose first TTL ran out while held to `expired` (their TTL
    /// runs while they wait here too).
    pub fn release(
        &mut self,
        now: Instant,
        ready: &mut Vec<KinesisRecord>,
        expired: &mut Vec<KinesisRecord>,
    ) {
        if self.held_shards.is_empty() || self.wake.is_some_and(|w| w > now) {
            return;
        }
        self.wake = None;
        for idx in std::mem::take(&mut self.held_shards) {
            let s = &mut self.shards[idx];
            while let Some(front) = s.held.front() {
                if front.expiry <= now {
                    expired.push(s.held.pop_front().expect("front exists"));
                    continue;
                }
                match s.limiter.try_take(front.request_bytes(), now) {
                    Ok(()) => ready.push(s.held.pop_front().expect("front exists")),
                    Err(wait) => {
                        let at = now + wait;
                        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
                        self.held_shards.push(idx);
                        break;
                    }
                }
            }
        }
    }

    /// Takes every held record out.
    pub fn drain(&mut self) -> Vec<KinesisRecord> {
        self.held_shards.clear();
        self.wake = None;
        self.shards
            .iter_mut()
            .flat_map(|s| s.held.drain(..))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testkit::{kinesis_record, records};
    use std::time::Duration;

    #[test]
    fn records_past_the_shard_limit_are_held_in_order_then_released() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        p.reset(1, 100, t0);
        // 100% of 1 MiB/s: a bucket of about 1 MiB; 3 x 400 KiB do not fit.
        let big = |id| kinesis_record(0, records(&[id], 400 * 1024, t0, Duration::from_secs(30)));
        assert!(p.admit(big(1), t0).is_some());
        assert!(p.admit(big(2), t0).is_some());
        assert!(p.admit(big(3), t0).is_none());
        assert!(p.admit(big(4), t0).is_none());
        let wake = p.next_wake().expect("held records set a wake-up");
        assert!(wake > t0);
        let (mut ready, mut expired) = (Vec::new(), Vec::new());
        p.release(wake + Duration::from_secs(1), &mut ready, &mut expired);
        let ids: Vec<u64> = ready.iter().map(|k| k.records[0].id).collect();
        assert_eq!(ids, vec![3, 4]);
        assert!(expired.is_empty());
        assert_eq!(p.next_wake(), None);
    }

    #[test]
    fn a_held_record_whose_ttl_runs_out_comes_back_as_expired() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        p.reset(1, 1, t0);
        // 1% of 1000 records/s: about 10 records a second.
        let short = |id| kinesis_record(0, records(&[id], 10, t0, Duration::from_millis(50)));
        let mut sent = 0;
        for id in 0..40 {
            sent += usize::from(p.admit(short(id), t0).is_some());
        }
        assert!(sent < 40, "the limit holds some back");
        let (mut ready, mut expired) = (Vec::new(), Vec::new());
        p.release(t0 + Duration::from_secs(5), &mut ready, &mut expired);
        assert!(ready.is_empty());
        assert_eq!(expired.len(), 40 - sent);
    }
}
