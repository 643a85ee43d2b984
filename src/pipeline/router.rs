//! Routing: user records into the buffer of their shard, aggregated there,
//! and out as Kinesis records when a buffer is full (count or size) or its
//! oldest record reaches its deadline (pure; time is passed in).
//!
//! Invariant: a buffer only holds records that hash into its shard of the
//! map it was built for, so no aggregate mixes shards. A new map resets
//! every buffer ([`Router::reset`]) and its records are routed again.

use super::record::{KinesisRecord, UserRecord};
use crate::aggregate::AggregateBuilder;
use crate::config::StreamSettings;
use crate::shard_map::Shard;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use tokio::time::Instant;

/// The stream settings routing depends on, read once per settings change.
#[derive(Debug, Clone, Copy)]
pub struct RouteLimits {
    pub aggregation_enabled: bool,
    pub max_count: u64,
    /// `aggregation_max_size`.
    pub aggregate_max: usize,
    /// `max_record_size`: an aggregate's entry (its bytes plus the first
    /// record's partition key) must stay within it.
    pub record_max: usize,
}

impl RouteLimits {
    pub fn new(s: &StreamSettings) -> RouteLimits {
        RouteLimits {
            aggregation_enabled: s.aggregation_enabled,
            max_count: s.aggregation_max_count,
            aggregate_max: s.aggregation_max_size as usize,
            record_max: s.max_record_size as usize,
        }
    }

    fn aggregate_limit(&self, outer_key_len: usize) -> usize {
        self.aggregate_max
            .min(self.record_max.saturating_sub(outer_key_len))
    }
}

/// Records waiting for one shard, being aggregated.
struct ShardBuffer {
    shard_id: Arc<str>,
    records: Vec<UserRecord>,
    builder: AggregateBuilder,
    deadline: Option<Instant>,
    /// Bumped on every flush, to recognise stale timer entries.
    generation: u64,
}

/// The shard buffers of one map.
#[derive(Default)]
pub struct Router {
    buffers: Vec<ShardBuffer>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    map_gen: u64,
}

impl Router {
    /// Buffers for a new map (generation `map_gen`); returns every record
    /// the old buffers held, to be routed again.
    pub fn reset(&mut self, shards: &[Shard], map_gen: u64) -> Vec<UserRecord> {
        let old = self.drain();
        self.timers.clear();
        self.map_gen = map_gen;
        self.buffers = shards
            .iter()
            .map(|s| ShardBuffer {
                shard_id: s.id.clone(),
                records: Vec::new(),
                builder: AggregateBuilder::new(),
                deadline: None,
                generation: 0,
            })
            .collect();
        old
    }

    pub fn shard_id(&self, idx: usize) -> &Arc<str> {
        &self.buffers[idx].shard_id
    }

    /// Records buffered now, in all shards.
    pub fn buffered(&self) -> usize {
        self.buffers.iter().map(|b| b.records.len()).sum()
    }

    /// Puts `u` into the buffer of shard `idx`. Kinesis records that this
    /// completes (the buffer it no longer fits in, itself when it is too big
    /// to aggregate or aggregation is off, a buffer that reached
    /// `max_count`) are appended to `out`, in order.
    pub fn route(
        &mut self,
        idx: usize,
        u: UserRecord,
        limits: &RouteLimits,
        out: &mut Vec<KinesisRecord>,
    ) {
        let map_gen = self.map_gen;
        if !limits.aggregation_enabled {
            let id = self.buffers[idx].shard_id.clone();
            out.push(KinesisRecord::single(id, idx, map_gen, u));
            return;
        }
        let (pk, ehk, len) = (
            u.partition_key.as_bytes(),
            u.explicit_hash_key.as_deref(),
            u.data.len(),
        );
        let b = &mut self.buffers[idx];
        let outer_key_len = b
            .records
            .first()
            .map_or(pk.len(), |f| f.partition_key.len());
        if !b
            .builder
            .try_add(pk, ehk, len, limits.aggregate_limit(outer_key_len))
        {
            if !b.records.is_empty() {
                self.flush(idx, out);
            }
            let b = &mut self.buffers[idx];
            if !b
                .builder
                .try_add(pk, ehk, len, limits.aggregate_limit(pk.len()))
            {
                // Too big to aggregate with anything: sent on its own.
                out.push(KinesisRecord::single(b.shard_id.clone(), idx, map_gen, u));
                return;
            }
        }
        let b = &mut self.buffers[idx];
        let deadline = u.deadline;
        b.records.push(u);
        if b.deadline.is_none_or(|d| deadline < d) {
            b.deadline = Some(deadline);
            self.timers.push(Reverse((deadline, idx, b.generation)));
        }
        if b.records.len() as u64 >= limits.max_count {
            self.flush(idx, out);
        }
    }

    /// Turns shard `idx`'s buffer into one Kinesis record (if it holds any).
    pub fn flush(&mut self, idx: usize, out: &mut Vec<KinesisRecord>) {
        let map_gen = self.map_gen;
        let b = &mut self.buffers[idx];
        b.generation += 1;
        b.deadline = None;
        if b.records.is_empty() {
            return;
        }
        let cap = b.records.len();
        let records = std::mem::replace(&mut b.records, Vec::with_capacity(cap));
        let k = if records.len() == 1 {
            b.builder.clear();
            let u = records.into_iter().next().expect("one record");
            KinesisRecord::single(b.shard_id.clone(), idx, map_gen, u)
        } else {
            let sealed = b.builder.seal();
            KinesisRecord::aggregate(b.shard_id.clone(), idx, map_gen, sealed, records)
        };
        out.push(k);
    }

    pub fn flush_all(&mut self, out: &mut Vec<KinesisRecord>) {
        for idx in 0..self.buffers.len() {
            if !self.buffers[idx].records.is_empty() {
                self.flush(idx, out);
            }
        }
    }

    /// Flushes the buffers whose oldest record's deadline is `now` or earlier.
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<KinesisRecord>) {
        while let Some(Reverse((d, idx, gen))) = self.timers.peek().copied() {
            if d > now {
                break;
            }
            self.timers.pop();
            if self.buffers.get(idx).is_some_and(|b| b.generation == gen) {
                self.flush(idx, out);
            }
        }
    }

    /// The earliest deadline of a buffered record.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Drop stale timer entries so the heap top is a live deadline.
        while let Some(Reverse((d, idx, gen))) = self.timers.peek().copied() {
            match self.buffers.get(idx) {
                Some(b) if b.generation == gen && b.deadline.is_some() => return Some(d),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Takes every buffered record out (the buffers stay, empty).
    pub fn drain(&mut self) -> Vec<UserRecord> {
        let mut all = Vec::new();
        for b in &mut self.buffers {
            all.append(&mut b.records);
            b.builder.clear();
            b.deadline = None;
            b.generation += 1;
        }
        all
    }
}
