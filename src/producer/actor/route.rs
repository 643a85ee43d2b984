//! From user records to ready Kinesis records: routing to a shard,
//! aggregation in the shard's buffer, and the shard's rate limit.

use super::{KinesisRecord, MapState, StreamActor};
use crate::collect::RequestSize;
use crate::producer::{codes, UserRecord};
use crate::send::PutEntry;
use bytes::Bytes;
use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl StreamActor {
    /// Puts a record into the buffer of its shard (or the waiting list).
    pub(super) fn route(&mut self, u: UserRecord, now: Instant) {
        let MapState::Ready(map) = &self.map else {
            if let MapState::Failed { code, message, at } = &self.map {
                if !self.loading && at.elapsed() < Duration::from_secs(1) {
                    // Fail fast on a stream that was just found unusable.
                    let (code, message) = (code.clone(), message.clone());
                    return self.fail(u, None, &code, message);
                }
                self.start_load();
            }
            self.waiting.push(u);
            return;
        };
        let idx = map.index_of(u.hash);
        // Counted here, while the key is still in the cache from its
        // arrival: at its result it is cold memory (a cache miss per record
        // cost 12% of the daemon's CPU there).
        self.metrics.partition_key(
            &self.buffers[idx].shard_id,
            u.partition_key.as_bytes(),
            u.hash,
            u.data.len() + u.partition_key.len(),
        );
        if !self.settings.aggregation_enabled {
            let b = &self.buffers[idx];
            let k = single(b.shard_id.clone(), idx, self.map_gen, u);
            return self.admit(idx, k, now);
        }
        let max_count = self.settings.aggregation_max_count;
        // The PutRecords entry of an aggregate is its bytes plus the first
        // record's partition key, and must stay within max_record_size.
        let (agg_max, record_max) = (
            self.settings.aggregation_max_size as usize,
            self.settings.max_record_size as usize,
        );
        let limit = |outer_key_len: usize| agg_max.min(record_max.saturating_sub(outer_key_len));
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
        if !b.builder.try_add(pk, ehk, len, limit(outer_key_len)) {
            if !b.records.is_empty() {
                self.flush_buffer(idx, now);
            }
            let b = &mut self.buffers[idx];
            if !b.builder.try_add(pk, ehk, len, limit(pk.len())) {
                // Too big to aggregate with anything: sent on its own.
                let k = single(b.shard_id.clone(), idx, self.map_gen, u);
                return self.admit(idx, k, now);
            }
        }
        let b = &mut self.buffers[idx];
        let deadline = u.deadline;
        b.records.push(u);
        if b.deadline.is_none_or(|d| deadline < d) {
            b.deadline = Some(deadline);
            self.timers.push(Reverse((deadline, idx, b.generation)));
        }
        if b.records.len() as u64 >= max_count {
            self.flush_buffer(idx, now);
        }
    }

    pub(super) fn flush_buffer(&mut self, idx: usize, now: Instant) {
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
            single(b.shard_id.clone(), idx, self.map_gen, u)
        } else {
            let data = b.builder.encode(records.iter().map(|u| u.data.as_ref()));
            b.builder.clear();
            let first = &records[0];
            // The first record's key (not the KPL's fixed "a", which
            // defeats Lambda's per-key parallelism) and its hash as the
            // explicit hash key, so the aggregate lands on the predicted shard.
            let entry = PutEntry {
                data: Bytes::from(data),
                partition_key: first.partition_key.to_string_lossless(),
                explicit_hash_key: Some(first.hash.to_string()),
            };
            KinesisRecord::new(b.shard_id.clone(), idx, self.map_gen, true, entry, records)
        };
        self.admit(idx, k, now);
    }

    /// Passes a Kinesis record through its shard's rate limit: on to the
    /// ready queue, or held (in order) until the buckets refill.
    pub(super) fn admit(&mut self, idx: usize, k: KinesisRecord, now: Instant) {
        let b = &mut self.buffers[idx];
        if b.held.is_empty() {
            match b.limiter.try_take(k.request_bytes(), now) {
                Ok(()) => return self.push_ready(k),
                Err(wait) => {
                    let at = now + wait;
                    self.held_wake = Some(self.held_wake.map_or(at, |w| w.min(at)));
                }
            }
            self.held_shards.push(idx);
        }
        b.held.push_back(k);
    }

    /// Moves held records whose tokens are there to the ready queue; fails
    /// the expired ones (their TTL runs while they wait here too).
    pub(super) fn release_held(&mut self, now: Instant) {
        self.held_wake = None;
        let shards = std::mem::take(&mut self.held_shards);
        let mut reroute = Vec::new();
        for idx in shards {
            loop {
                let b = &mut self.buffers[idx];
                let Some(front) = b.held.front() else { break };
                if front.expiry <= now {
                    let k = b.held.pop_front().expect("front exists");
                    let shard = k.shard_id.clone();
                    for u in k.records {
                        if u.expiry <= now {
                            let msg = format!(
                                "record_ttl_ms ({} ms) ran out while the record waited for shard {}'s rate limit (rate_limit = {}%)",
                                self.settings.record_ttl_ms, k.shard_id, self.settings.rate_limit
                            );
                            self.fail(u, Some(&shard), codes::EXPIRED, msg);
                        } else {
                            reroute.push(u);
                        }
                    }
                    continue;
                }
                match b.limiter.try_take(front.request_bytes(), now) {
                    Ok(()) => {
                        let k = b.held.pop_front().expect("front exists");
                        self.push_ready(k);
                    }
                    Err(wait) => {
                        let at = now + wait;
                        self.held_wake = Some(self.held_wake.map_or(at, |w| w.min(at)));
                        self.held_shards.push(idx);
                        break;
                    }
                }
            }
        }
        for u in reroute {
            self.route(u, now);
        }
    }

    pub(super) fn flush_all(&mut self, now: Instant) {
        for idx in 0..self.buffers.len() {
            if !self.buffers[idx].records.is_empty() {
                self.flush_buffer(idx, now);
            }
        }
        if !self.ready.is_empty() {
            self.ready_due = Some(now);
        }
    }

    pub(super) fn push_ready(&mut self, k: KinesisRecord) {
        let due = k.deadline;
        self.ready_due = Some(self.ready_due.map_or(due, |d| d.min(due)));
        self.ready_bytes += k.request_bytes();
        self.ready.push_back(k);
    }
}

fn single(shard_id: Arc<str>, shard_idx: usize, map_gen: u64, u: UserRecord) -> KinesisRecord {
    let entry = PutEntry {
        data: u.data.clone(),
        partition_key: u.partition_key.to_string_lossless(),
        explicit_hash_key: u.explicit_hash_key.clone(),
    };
    KinesisRecord::new(shard_id, shard_idx, map_gen, false, entry, vec![u])
}
