//! Pacing: each shard's rate limit (token buckets of [`ShardLimiter`])
//! between aggregation and collection. A Kinesis record whose shard has no
//! tokens is held, in order, until the buckets refill (pure; time is
//! passed in).
//!
//! A shard's adaptive rate (what throttles taught its limiter) outlives a
//! new map and a new `rate_limit`: a shard that is still open keeps its
//! limiter, and a new shard starts from the limiter of the old shard(s)
//! whose hash key range it overlaps, that is its parent(s). Kinesis makes
//! a split's children from their parent's range and a merge's child from
//! its two parents' ranges, so the overlap finds the same parents as
//! `ParentShardId` / `AdjacentParentShardId` would, needs no closed shard
//! listed, and still finds an ancestor when several reshards happened
//! between two loads. A split's children each start from their parent's
//! rate; a merge's child starts from the lower of its parents' rates:
//! it has one shard's limits and now takes both parents' traffic (and the
//! other writers of both), so a sum would burst into a shard that was
//! already throttling, while the lower rate is safe and the additive
//! recovery raises it within seconds if there is room.

use super::record::KinesisRecord;
use crate::collect::RequestSize;
use crate::limit::ShardLimiter;
use crate::shard_map::Shard;
use std::collections::{HashMap, VecDeque};
use tokio::time::Instant;

struct PacedShard {
    /// The shard (id and hash key range), to find it or its children in
    /// the next map.
    shard: Shard,
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
    /// Limiters for the shards of a new map (in its order), at `rate_limit`
    /// percent: a shard of the old map keeps its limiter, a new one starts
    /// from its parents' (see the module header); returns the records held
    /// for the old map.
    pub fn reset(&mut self, shards: &[Shard], rate_limit: u64, now: Instant) -> Vec<KinesisRecord> {
        let held = self.drain();
        let old = std::mem::take(&mut self.shards);
        let by_id: HashMap<&str, usize> = old
            .iter()
            .enumerate()
            .map(|(i, s)| (&*s.shard.id, i))
            .collect();
        self.shards = shards
            .iter()
            .map(|s| {
                let kept = by_id.get(&*s.id).map(|&i| &old[i].limiter);
                let limiter = match kept.or_else(|| Self::parent(&old, s)) {
                    Some(l) => {
                        let mut l = l.clone();
                        l.set_ceiling(rate_limit, now);
                        l
                    }
                    None => ShardLimiter::new(rate_limit, now),
                };
                PacedShard {
                    shard: s.clone(),
                    held: VecDeque::new(),
                    limiter,
                }
            })
            .collect();
        held
    }

    /// The limiter a new shard starts from: the slowest of the old shards
    /// whose range overlaps its own.
    fn parent<'a>(old: &'a [PacedShard], s: &Shard) -> Option<&'a ShardLimiter> {
        old.iter()
            .filter(|o| o.shard.start <= s.end && s.start <= o.shard.end)
            .map(|o| &o.limiter)
            .min_by(|a, b| a.rate_percent().total_cmp(&b.rate_percent()))
    }

    /// A new `rate_limit` setting: the new ceiling, each shard keeping what
    /// throttles taught it ([`ShardLimiter::set_ceiling`]).
    pub fn set_rate(&mut self, rate_limit: u64, now: Instant) {
        for s in &mut self.shards {
            s.limiter.set_ceiling(rate_limit, now);
        }
    }

    /// Shard `id`'s current rate, in percent of the shard limits.
    pub fn rate_percent(&self, id: &str) -> Option<f64> {
        self.shards
            .iter()
            .find(|s| *s.shard.id == *id)
            .map(|s| s.limiter.rate_percent())
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
    use crate::pipeline::testkit::{even_shards, kinesis_record, records};
    use std::time::Duration;

    #[test]
    fn records_past_the_shard_limit_are_held_in_order_then_released() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        p.reset(&even_shards(1), 100, t0);
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
        p.reset(&even_shards(1), 1, t0);
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
